"""Every derived number of the report's tables against a direct computation on a hand-made results set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report.fake_results import CLASSES, DATASET, METHODS, MODALITIES, SUBSETS, direct_miou, write_results

from benchmark.report import leaderboard
from benchmark.report.build import overview_table
from benchmark.report.results import load_confusion, load_metrics


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    truth = write_results(root)
    return root, truth, load_metrics(root, DATASET, list(METHODS))


def _seed_values(truth, method, value):
    return [value(truth[method][seed]["record"]) for seed in sorted(truth[method])]


def _mean_std(values):
    return float(np.mean(values)), float(np.std(values, ddof=1))


def _row(table, method, **where):
    rows = [r for r in table.rows if r["run"] == method and all(r[k] == v for k, v in where.items())]
    assert len(rows) == 1
    return rows[0]


def test_leaderboard_means_stds_and_summary(fake):
    root, truth, records = fake
    table = leaderboard.leaderboard_table(records, [0.1])
    assert [r["run"] for r in table.rows] == list(METHODS)
    for method in METHODS:
        row = _row(table, method)
        assert row["seeds"] == 2 and row["family"] == METHODS[method][0]
        per_seed = [
            [direct_miou(t["confusion"][i].sum(0)) for i in range(len(SUBSETS))] for t in truth[method].values()
        ]
        per_seed = np.array(per_seed)  # [seeds, subsets], from the counts, not from metrics.json
        for i, subset in enumerate(SUBSETS):
            mean, std = _mean_std(per_seed[:, i])
            assert row[subset] == pytest.approx(mean, abs=1e-9) and row[f"{subset}_std"] == pytest.approx(std)
        mean, std = _mean_std(per_seed.mean(1))
        assert row["avg"] == pytest.approx(mean) and row["avg_std"] == pytest.approx(std)
        means = per_seed.mean(0)
        for key, index in (("top1", int(np.argmax(means))), ("last1", int(np.argmin(means)))):
            assert row[f"{key}_subset"] == SUBSETS[index]  # the best / worst subset of the means
            assert row[key] == pytest.approx(means[index])
            assert row[f"{key}_std"] == pytest.approx(np.std(per_seed[:, index], ddof=1))


def test_top1_is_the_best_mean_not_the_mean_of_per_seed_bests():
    """Seeds that disagree on their best subset: Top-1 is a subset's mean, never above every column."""
    base = {
        "dataset": DATASET,
        "run": "m-complete",
        "method": "m",
        "protocol": {"name": "complete", "kind": "complete"},
        "convention": "mask",
        "family": "x",
        "modalities": MODALITIES,
        "classes": CLASSES,
    }
    records = [
        base | {"seed": 0, "subsets": {"rgb": {"miou": 60.0}, "dsm": {"miou": 40.0}, "rgb+dsm": {"miou": 50.0}}},
        base | {"seed": 1, "subsets": {"rgb": {"miou": 40.0}, "dsm": {"miou": 44.0}, "rgb+dsm": {"miou": 58.0}}},
    ]
    row = leaderboard.leaderboard_table(records, []).rows[0]
    assert (row["top1_subset"], row["top1"]) == ("rgb+dsm", 54.0)  # the mean of per-seed bests would be 59
    assert (row["last1_subset"], row["last1"]) == ("dsm", 42.0)  # the mean of per-seed worsts would be 40
    assert row["avg"] == pytest.approx((50.0 + 142 / 3) / 2)


def _floor_records() -> list[dict]:
    """A deep run and two floors, one of which cannot use dsm (hand-made subset mIoUs, one seed)."""
    base = {"dataset": DATASET, "protocol": {"name": "complete", "kind": "complete"}, "convention": "mask",
            "modalities": MODALITIES, "classes": CLASSES, "seed": 0}  # fmt: skip
    nan = {"miou": None, "iou": dict.fromkeys(CLASSES)}
    return [
        base | {"run": "deep-complete", "method": "deep", "family": "joint",
                "subsets": {"rgb": {"miou": 50.0}, "dsm": {"miou": 30.0}, "rgb+dsm": {"miou": 70.0}}},
        base | {"run": "forest-complete", "method": "forest", "family": "floor",
                "subsets": {"rgb": {"miou": 40.0}, "dsm": {"miou": 35.0}, "rgb+dsm": {"miou": 80.0}}},
        base | {"run": "rule-complete", "method": "rule", "family": "floor", "not_applicable": ["dsm"],
                "subsets": {"rgb": {"miou": 60.0}, "dsm": nan, "rgb+dsm": {"miou": 60.0}}},
    ]  # fmt: skip


def test_a_floors_subset_not_applicable_leaves_avg_last1_and_expectation_undefined():
    board = leaderboard.leaderboard_table(_floor_records(), [0.1])
    rule = _row(board, "rule-complete")
    assert math.isnan(rule["dsm"]) and math.isnan(rule["avg"]) and math.isnan(rule["expected_p0_1"])
    assert math.isnan(rule["last1"]) and rule["last1_subset"] == ""
    assert (rule["top1"], rule["top1_subset"]) == (60.0, "rgb")
    per_class = leaderboard.per_class_table(_floor_records())
    assert _row(per_class, "rule-complete", set="worst scored")["subset"] == "rgb"  # the first of equals
    assert _row(per_class, "deep-complete", set="worst")["subset"] == "dsm"


def test_floor_gap_names_the_best_deep_run_and_the_best_floor():
    board = leaderboard.leaderboard_table(_floor_records(), [])
    text = leaderboard.floor_gap(board, "rgb+dsm")
    # full set: deep 70 vs forest 80; Avg: deep 50 vs forest 51.67 (the rule has no Avg)
    assert (
        "10.00 points below the best floor on the full set rgb+dsm (deep-complete 70.00 vs forest-complete 80.00"
        in text
    )
    assert "1.67 points below the best floor on Avg (deep-complete 50.00 vs forest-complete 51.67" in text
    no_floor = leaderboard.leaderboard_table(_floor_records()[:1], [])
    assert leaderboard.floor_gap(no_floor, "rgb+dsm") is None


@pytest.mark.parametrize("p", [0.0, 0.05, 0.1, 0.2, 0.5])
def test_expected_miou_by_enumerating_failure_states(fake, p):
    _, truth, records = fake
    table = leaderboard.leaderboard_table(records, [p])
    key = leaderboard.expected_key(p)
    for method in METHODS:
        values = []
        for t in truth[method].values():
            miou = {s: t["record"]["subsets"][s]["miou"] for s in SUBSETS}
            # rgb alone: rgb works, dsm fails; dsm alone; both work. Renormalised by 1 - p^2.
            weights = {"rgb": (1 - p) * p, "dsm": p * (1 - p), "rgb+dsm": (1 - p) ** 2}
            values.append(sum(weights[s] * miou[s] for s in SUBSETS) / (1 - p**2))
        mean, std = _mean_std(values)
        assert _row(table, method)[key] == pytest.approx(mean) and _row(table, method)[f"{key}_std"] == pytest.approx(
            std
        )
    if p == 0.0:  # nothing fails: the full set
        for method in METHODS:
            assert _row(table, method)[key] == pytest.approx(_row(table, method)["rgb+dsm"])


def test_fragility_drops_and_alone(fake):
    _, truth, records = fake
    table = leaderboard.fragility_table(records)
    for method in METHODS:
        miou = [t["record"]["subsets"] for t in truth[method].values()]
        drops = {
            "rgb": [m["rgb+dsm"]["miou"] - m["dsm"]["miou"] for m in miou],
            "dsm": [m["rgb+dsm"]["miou"] - m["rgb"]["miou"] for m in miou],
        }
        row = _row(table, method)
        for modality in MODALITIES:
            mean, std = _mean_std(drops[modality])
            assert row[f"{modality}_drop"] == pytest.approx(mean) and row[f"{modality}_drop_std"] == pytest.approx(std)
            mean, std = _mean_std([m[modality]["miou"] for m in miou])
            assert row[f"{modality}_alone"] == pytest.approx(mean)
            assert row[f"{modality}_alone_std"] == pytest.approx(std)


def test_size_curves(fake):
    _, truth, records = fake
    curves = leaderboard.size_curves(records)
    for method in METHODS:
        miou = [t["record"]["subsets"] for t in truth[method].values()]
        one = [(m["rgb"]["miou"] + m["dsm"]["miou"]) / 2 for m in miou]
        two = [m["rgb+dsm"]["miou"] for m in miou]
        assert curves[method][1] == pytest.approx(_mean_std(one))
        assert curves[method][2] == pytest.approx(_mean_std(two))


def test_per_class_full_and_worst_subset(fake):
    _, truth, records = fake
    table = leaderboard.per_class_table(records)
    for method in METHODS:
        subsets = [t["record"]["subsets"] for t in truth[method].values()]
        means = {s: np.mean([m[s]["miou"] for m in subsets]) for s in SUBSETS}
        worst = min(SUBSETS, key=means.get)
        for label, subset in (("full", "rgb+dsm"), ("worst", worst)):
            row = _row(table, method, set=label)
            assert row["subset"] == subset
            for c in CLASSES:
                mean, std = _mean_std([m[subset]["iou"][c] for m in subsets])
                assert row[c] == pytest.approx(mean) and row[f"{c}_std"] == pytest.approx(std)
            assert row["miou"] == pytest.approx(means[subset])
    assert _row(table, "alpha-complete", set="worst")["subset"] == "dsm"  # the fake's weakest subset by construction


def test_efficiency_columns(fake):
    _, truth, records = fake
    table = leaderboard.efficiency_table(records)
    for method in METHODS:
        eff = [t["record"]["efficiency"] for t in truth[method].values()]
        row = _row(table, method)
        assert row["params"] == pytest.approx(eff[0]["params"] / 1e6)
        for key in ("gflops", "train_seconds_per_step", "train_images_per_s", "inference_ms_per_image"):
            mean, std = _mean_std([e[key] for e in eff])
            assert row[key] == pytest.approx(mean) and row[f"{key}_std"] == pytest.approx(std)
    assert "8x8" in table.note and "cpu (test)" in table.note


def test_cpu_timings_carry_a_load_note_and_are_never_bolded(fake):
    _, _, records = fake
    best = {c.key: c.best for c in leaderboard.efficiency_table(records).columns}
    assert best["gflops"] == "min" and all(best[k] is None for k in leaderboard.LOAD_DEPENDENT)
    assert "depend on the machine's load" in leaderboard.efficiency_table(records).note
    gpu = [
        {**r, "efficiency": {**r["efficiency"], "train_device": "cuda (H100)", "eval_device": "cuda (H100)"}}
        for r in records
    ]
    table = leaderboard.efficiency_table(gpu)
    assert {c.key: c.best for c in table.columns}["inference_ms_per_image"] == "min"
    assert "machine's load" not in table.note


def test_the_leaderboard_names_the_top1_and_last1_subsets_beside_them(fake):
    _, _, records = fake
    table = leaderboard.leaderboard_table(records, [0.1])
    keys = [c.key for c in table.columns]
    assert keys[keys.index("top1") + 1] == "top1_subset" and keys[keys.index("last1") + 1] == "last1_subset"
    titles = {c.key: c.title for c in table.columns}
    assert (titles["top1_subset"], titles["last1_subset"]) == ("Top-1 subset", "Last-1 subset")
    for row in table.rows:
        assert row["top1"] == row[row["top1_subset"]] and row["last1"] == row[row["last1_subset"]]


def test_comparison_differences_and_intervals(fake):
    root, truth, records = fake
    confusions = {m: np.stack([load_confusion(root, r) for r in records if r["run"] == m]) for m in METHODS}
    table = leaderboard.comparison_table(records, confusions, "sgma-complete", samples=300, confidence=0.9, seed=3)
    assert [r["run"] for r in table.rows] == ["alpha-complete", "beta-complete"]
    long = table.machine.rows
    assert len(long) == 2 * (len(SUBSETS) + 1)
    for method in ("alpha-complete", "beta-complete"):
        diffs = []
        for i, subset in enumerate(SUBSETS):
            diff = np.mean(
                [
                    direct_miou(truth[method][s]["confusion"][i].sum(0))
                    - direct_miou(truth["sgma-complete"][s]["confusion"][i].sum(0))
                    for s in (0, 1)
                ]
            )
            diffs.append(diff)
            entry = next(e for e in long if e["run"] == method and e["subset"] == subset)
            assert entry["diff"] == pytest.approx(diff)
            assert entry["low"] <= entry["diff"] <= entry["high"]
            assert entry["significant"] == int(entry["low"] > 0 or entry["high"] < 0)
            shown = _row(table, method)[subset]
            assert shown.startswith(f"{diff:+.2f} [") and shown.endswith(" †") == bool(entry["significant"])
            assert (subset in _row(table, method)["_bold"]) == bool(entry["significant"])
        avg = next(e for e in long if e["run"] == method and e["subset"] == "avg")
        assert avg["diff"] == pytest.approx(np.mean(diffs))  # Avg is linear in the subset mIoUs
    # beta is much worse than sgma on the rgb subset (0.60 vs 0.72 pixel accuracy): the interval shows it
    beta_rgb = next(e for e in long if e["run"] == "beta-complete" and e["subset"] == "rgb")
    assert beta_rgb["high"] < 0 and beta_rgb["significant"] == 1


def test_comparison_needs_the_reference_and_paired_seeds(fake):
    root, _, records = fake
    confusions = {m: np.zeros((2, 3, 1, 3, 3), dtype=np.int64) for m in METHODS}
    with pytest.raises(ValueError, match="'nobody'"):
        leaderboard.comparison_table(records, confusions, "nobody", samples=10, confidence=0.9, seed=0)
    one_seed = [r for r in records if not (r["run"] == "beta-complete" and r["seed"] == 1)]
    with pytest.raises(ValueError, match=r"'beta-complete' has seeds \[0\].*cannot pair"):
        leaderboard.comparison_table(one_seed, confusions, "sgma-complete", samples=10, confidence=0.9, seed=0)


def test_overview_ranks_across_data_sets():
    from benchmark.report.build import DatasetReport

    reports = [
        DatasetReport(
            "a", [], [], {"x-complete": {"avg": 50.0, "last1": 40.0}, "y-uniform": {"avg": 60.0, "last1": 30.0}}
        ),
        DatasetReport(
            "b", [], [], {"x-complete": {"avg": 70.0, "last1": 65.0}, "y-uniform": {"avg": 55.0, "last1": 50.0}}
        ),
        DatasetReport("c", [], [], {"x-complete": {"avg": 10.0, "last1": 5.0}}),
    ]
    table = overview_table(reports, ["x-complete", "y-uniform"])
    x, y = table.rows
    assert (x["protocol"], y["protocol"]) == ("complete", "uniform")
    assert (x["a_avg"], x["b_last1"], y["a_last1"]) == (50.0, 65.0, 30.0)
    assert math.isnan(y["c_avg"])
    assert math.isnan(y["mean_rank"])  # missing on c
    assert x["mean_rank"] == pytest.approx((2 + 1 + 1) / 3)


# --- protocols and the ablation ------------------------------------------------------------------

TWO_PROTOCOLS = {
    "alpha-complete": METHODS["alpha-complete"],
    "sgma-complete": METHODS["sgma-complete"],
    "alpha-uniform": ("reference", [0, 1], [0.68, 0.6, 0.79]),
    "beta-uniform": METHODS["beta-complete"],
}


@pytest.fixture(scope="module")
def two_protocols(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    truth = write_results(root, methods=TWO_PROTOCOLS, with_logs=False)
    records = load_metrics(root, DATASET, list(TWO_PROTOCOLS))
    confusions = {m: np.stack([load_confusion(root, r) for r in records if r["run"] == m]) for m in TWO_PROTOCOLS}
    return truth, records, confusions


def _per_seed_subset_miou(truth, run):
    """float[seeds, subsets]: each seed's mIoU per subset, counted from the written confusions."""
    return np.array(
        [[direct_miou(t["confusion"][i].sum(0)) for i in range(len(SUBSETS))] for _, t in sorted(truth[run].items())]
    )


def test_protocol_table_puts_each_methods_runs_side_by_side(two_protocols):
    truth, records, _ = two_protocols
    board = leaderboard.leaderboard_table(records, [])
    assert [(r["run"], r["protocol"]) for r in board.rows] == [
        ("alpha-complete", "complete"),
        ("sgma-complete", "complete"),
        ("alpha-uniform", "uniform"),
        ("beta-uniform", "uniform"),
    ]
    table = leaderboard.protocol_table(board)
    assert [r["method"] for r in table.rows] == ["alpha", "sgma", "beta"]
    assert [c.title for c in table.columns] == [
        "Method",
        "Family",
        "complete Avg",
        "complete Last-1",
        "uniform Avg",
        "uniform Last-1",
    ]
    for row in table.rows:
        for protocol in ("complete", "uniform"):
            run = f"{row['method']}-{protocol}"
            if run not in truth:
                assert math.isnan(row[f"{protocol}_avg"]) and math.isnan(row[f"{protocol}_last1"])
                continue
            per_seed = _per_seed_subset_miou(truth, run)
            assert (row[f"{protocol}_avg"], row[f"{protocol}_avg_std"]) == pytest.approx(
                _mean_std(per_seed.mean(axis=1))
            )
            worst = int(np.argmin(per_seed.mean(axis=0)))
            assert row[f"{protocol}_last1"] == pytest.approx(per_seed.mean(axis=0)[worst])
            assert row[f"{protocol}_last1_subset"] == SUBSETS[worst]
    one = leaderboard.leaderboard_table([r for r in records if r["protocol"]["name"] == "complete"], [])
    assert leaderboard.protocol_table(one) is None  # one protocol: nothing to put side by side


def test_ablation_rows_and_intervals_per_protocol(two_protocols):
    truth, records, confusions = two_protocols
    board = leaderboard.leaderboard_table(records, [])
    ablation = {"none": "alpha", "both": "sgma", "other": "beta"}
    table = leaderboard.ablation_table(records, board, confusions, ablation, samples=200, confidence=0.9, seed=1)
    # complete: alpha (base) and sgma; uniform: alpha (base) and beta
    assert [(r["protocol"], r["row"], r["run"]) for r in table.rows] == [
        ("complete", "none", "alpha-complete"),
        ("complete", "both", "sgma-complete"),
        ("uniform", "none", "alpha-uniform"),
        ("uniform", "other", "beta-uniform"),
    ]
    assert table.rows[0]["d_avg"] == "(base)" and table.rows[2]["d_last1"] == "(base)"
    for entry in table.machine.rows:
        run, base = _per_seed_subset_miou(truth, entry["run"]), _per_seed_subset_miou(truth, entry["base"])
        if entry["statistic"] == "avg":
            expected = run.mean() - base.mean()
        else:
            expected = run.mean(axis=0).min() - base.mean(axis=0).min()
        assert entry["diff"] == pytest.approx(expected, abs=1e-9), entry
        assert entry["low"] <= entry["diff"] <= entry["high"]
        assert entry["value"] == pytest.approx(run.mean() if entry["statistic"] == "avg" else run.mean(axis=0).min())
        shown = next(r for r in table.rows if r["run"] == entry["run"])[f"d_{entry['statistic']}"]
        assert shown.startswith(f"{entry['diff']:+.2f} [") and shown.endswith(" †") == bool(entry["significant"])
    assert len(table.machine.rows) == 4
    assert leaderboard.ablation_table(records, board, confusions, {}, samples=10, confidence=0.9, seed=1) is None
    lone = {"none": "alpha", "both": "gamma"}  # no second row's run under any protocol
    assert leaderboard.ablation_table(records, board, confusions, lone, samples=10, confidence=0.9, seed=1) is None


def test_avg_ranks_tie_runs_whose_interval_includes_zero():
    """Hand-made confusions over 40 images, 2 classes: a and b identical (interval [0, 0]: tied),
    c wrong on most pixels (far below: not tied), d identical to c but trained with another seed
    (cannot be paired: never tied)."""
    right = np.tile(np.array([[9, 1], [1, 9]], dtype=np.int64), (1, 1, 40, 1, 1))  # [R=1, S=1, N, K, K]
    wrong = np.tile(np.array([[2, 8], [8, 2]], dtype=np.int64), (1, 1, 40, 1, 1))
    confusions = {"a-complete": right, "b-complete": right.copy(), "c-complete": wrong, "d-complete": wrong.copy()}
    records = [{"run": run, "seed": 1 if run == "d-complete" else 0} for run in confusions]
    avg = {"a-complete": 81.8, "b-complete": 81.8, "c-complete": 11.1, "d-complete": 11.1}
    board = leaderboard.Table("leaderboard", "", [], [{"run": run, "avg": value} for run, value in avg.items()])
    ranks = leaderboard.avg_ranks(board, records, confusions, samples=200, confidence=0.95, seed=0)
    assert ranks == {"a-complete": 1, "b-complete": 1, "c-complete": 3, "d-complete": 4}
    shown = leaderboard.with_ranks(board, ranks)
    assert [row["rank"] for row in shown.rows] == [1, 1, 3, 4] and "shares the rank" in shown.note


def test_overview_uses_each_data_sets_ranks_with_ties():
    from benchmark.report.build import DatasetReport

    summary = {"x-complete": {"avg": 50.0, "last1": 40.0}, "y-uniform": {"avg": 49.0, "last1": 30.0}}
    tied = DatasetReport("a", [], [], summary, ranks={"x-complete": 1, "y-uniform": 1})
    strict = DatasetReport("b", [], [], summary)
    x, y = overview_table([tied, strict], ["x-complete", "y-uniform"]).rows
    assert (x["mean_rank"], y["mean_rank"]) == (1.0, 1.5)


def test_curves_table_and_scale_note_from_the_step_logs():
    """Two runs, two seeds each: one loss still falling at the end, one flat (batch noise around a
    constant); the table against stats.loss_trend, the note against the records' training figures."""
    from benchmark import stats

    steps = np.arange(200, dtype=float)
    falling = {"step": steps, "loss": 2.0 - steps / 150}
    flat = {"step": steps, "loss": 0.5 + 0.05 * (-1.0) ** steps}
    logs = {"a-complete": {0: falling, 1: falling}, "b-complete": {0: flat, 1: flat}}
    table = leaderboard.curves_table(logs)
    a, b = table.rows
    assert a["slope"] == pytest.approx(stats.loss_trend(steps, falling["loss"]).slope) == pytest.approx(-100 / 150)
    assert (a["falling"], a["verdict"], a["last_step"]) == ("2 of 2", "still falling", 199)
    assert (b["falling"], b["verdict"]) == ("0 of 2", "flat")
    records = [{"efficiency": {"train_steps": 200, "train_batch_size": 8, "tile_shape": [64, 64]}}] * 4
    note = leaderboard.scale_note(records, table)
    assert note.startswith("Scale: 200 training steps of batch 8 on 64x64 px tiles. ")
    assert "1 of 2 gradient-trained runs is still falling" in note and "dvc exp run -S train.steps=400" in note
    assert "undertrained" not in leaderboard.scale_note(records, leaderboard.curves_table({"b-complete": {0: flat}}))
    assert leaderboard.curves_table({"c-complete": {0: {"step": steps[:2], "loss": steps[:2]}}}) is None
    assert leaderboard.scale_note([{"efficiency": {"train_steps": 0}}], None) == ""  # floors only: no steps


TAGS = {"fog": [0, 1, 2, 3, 4], "night": [4, 5, 6, 7, 8, 9, 10, 11]}  # image 4 in both


def test_tag_table_means_each_tags_full_set_and_avg_over_seeds(tmp_path):
    truth = write_results(tmp_path, tags=TAGS)
    records = load_metrics(tmp_path, DATASET, list(METHODS))
    table = leaderboard.tag_table(records)
    assert table is not None and table.name == "conditions"
    assert [c.key for c in table.columns][4:] == ["fog_full", "fog_avg", "night_full", "night_avg"]
    for method in METHODS:
        row = _row(table, method)
        for tag, images in TAGS.items():
            confusions = [truth[method][seed]["confusion"] for seed in sorted(truth[method])]
            full = [direct_miou(c[-1][images].sum(axis=0)) for c in confusions]  # rgb+dsm: the last subset
            avg = [np.mean([direct_miou(s[images].sum(axis=0)) for s in c]) for c in confusions]
            assert (row[f"{tag}_full"], row[f"{tag}_full_std"]) == pytest.approx(_mean_std(full))
            assert (row[f"{tag}_avg"], row[f"{tag}_avg_std"]) == pytest.approx(_mean_std(avg))
    assert "fog 5, night 8" in table.note
    write_results(tmp_path / "untagged")
    assert leaderboard.tag_table(load_metrics(tmp_path / "untagged", DATASET, list(METHODS))) is None
