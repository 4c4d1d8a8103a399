"""The corrupted-input scenarios in the report: validation of the ``scenarios`` block of
metrics.json, the scenario table and its long CSV, the curves, and their place in the built report.

Expected values come from the mIoU lists fake_results wrote (themselves scored from its own
confusion matrices), averaged here with numpy.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from report.fake_results import (
    BLOCK_SIZE,
    DATASET,
    METHODS,
    MODALITIES,
    SCENARIOS,
    SUBSETS,
    direct_miou,
    write_results,
)

from benchmark.config import SCENARIO_KINDS, ReportConfig
from benchmark.io import atomic_write_json
from benchmark.report import build, leaderboard, plots
from benchmark.report.results import SCENARIO_UNITS, load_metrics, scenario_layout
from benchmark.report.tables import formatted, to_csv

THREE_SEEDS = {m: (family, [0, 1, 2], accuracy) for m, (family, _, accuracy) in METHODS.items()}
CONFIG = ReportConfig(reference="sgma-complete", failure_probs=[0.1], bootstrap_samples=50)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """(root, truth, records) of three methods x three seeds with scenario blocks."""
    root = tmp_path_factory.mktemp("scenarios")
    truth = write_results(root, methods=THREE_SEEDS, with_logs=False, scenarios=SCENARIOS)
    return root, truth, load_metrics(root, DATASET)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A fresh results folder (two seeds, as fake_results' default) with scenario blocks."""
    write_results(tmp_path, with_logs=False, scenarios=SCENARIOS)
    return tmp_path


def _miou(truth: dict, method: str, kind: str, modality: str) -> np.ndarray:
    """float[seeds, levels] of the mIoU fake_results wrote."""
    return np.array(
        [
            truth[method][seed]["record"]["scenarios"]["kinds"][kind]["modalities"][modality]["miou"]
            for seed in sorted(truth[method])
        ]
    )


def _clean(truth: dict, method: str) -> np.ndarray:
    """float[seeds]: the full set's mIoU, scored here from the subset's confusion matrices."""
    return np.array(
        [direct_miou(truth[method][s]["confusion"][SUBSETS.index("rgb+dsm")].sum(0)) for s in truth[method]]
    )


def _kind_mean(truth: dict, method: str, kind: str) -> np.ndarray:
    """float[seeds, levels]: per seed the mean over the kind's corrupted modalities."""
    return np.mean([_miou(truth, method, kind, m) for m in SCENARIOS[kind][1]], axis=0)


def _avg(truth: dict, method: str) -> np.ndarray:
    """float[seeds]: per seed the flat mean over every kind, level and corrupted modality."""
    per_seed = [
        np.concatenate([_miou(truth, method, k, m)[i] for k, (_, mods) in SCENARIOS.items() for m in mods])
        for i in range(len(truth[method]))
    ]
    return np.array([v.mean() for v in per_seed])


# --- the table ---------------------------------------------------------------------------------


def _expected_table(truth: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """method -> column key -> (mean, sample std over seeds)."""
    out = {}
    for method in METHODS:
        cells = {"clean": _clean(truth, method), "avg": _avg(truth, method)}
        for kind, (levels, _) in SCENARIOS.items():
            per_seed = _kind_mean(truth, method, kind)
            for k, level in enumerate(levels):
                cells[f"{kind}_{level:g}"] = per_seed[:, k]
        out[method] = {key: (float(np.mean(v)), float(np.std(v, ddof=1))) for key, v in cells.items()}
    return out


def test_every_cell_of_the_scenario_table(fake):
    _, truth, records = fake
    table = leaderboard.scenario_table(records)
    expected = _expected_table(truth)
    keys = list(expected["alpha-complete"])
    order = ["clean", *[f"{k}_{lv:g}" for k, (levels, _) in SCENARIOS.items() for lv in levels], "avg"]
    assert sorted(order) == sorted(keys)
    assert [c.title for c in table.columns] == [
        "Run",
        "Protocol",
        "Family",
        "Seeds",
        "Clean",
        "block_missing 0.25",
        "block_missing 0.5",
        "gaussian 0.25",
        "gaussian 0.5",
        "gaussian 1",
        "speckle 0.5",
        "Avg",
    ]
    assert [c.key for c in table.columns[4:]] == order
    assert [r["run"] for r in table.rows] == list(METHODS)
    for row in table.rows:
        method = row["run"]
        assert (row["family"], row["seeds"]) == (METHODS[method][0], 3)
        for key in order:
            mean, std = expected[method][key]
            assert row[key] == pytest.approx(mean, rel=1e-12) and row[f"{key}_std"] == pytest.approx(std, rel=1e-9)
    # the shown text and the bold of every cell: mean ± std with 2 decimals, bold = best rounded mean
    shown = formatted(table)
    for i, row in enumerate(table.rows):
        for j, key in enumerate(order, start=4):
            mean, std = expected[row["run"]][key]
            best = max(round(expected[m][key][0], 2) for m in METHODS)
            assert shown[i][j] == (f"{mean:.2f} ± {std:.2f}", round(mean, 2) == best)
    # the CSV: every value with 4 decimals, the std in its own column
    parsed = list(csv.DictReader(io.StringIO(to_csv(table))))
    for line in parsed:
        for key in order:
            mean, std = expected[line["run"]][key]
            assert float(line[key]) == pytest.approx(mean, abs=5e-5)
            assert float(line[f"{key}_std"]) == pytest.approx(std, abs=5e-5)
    assert "Clean" in table.note and "speckle: dsm" in table.note and SCENARIO_UNITS["gaussian"] in table.note


def test_scenario_avg_is_the_flat_mean(fake):
    """With speckle on one modality only, the flat mean differs from the mean of the kinds' means."""
    _, truth, records = fake
    row = leaderboard.scenario_table(records).rows[0]
    per_kind = np.mean([_kind_mean(truth, "alpha-complete", k).mean(axis=1) for k in SCENARIOS], axis=0)
    assert row["avg"] == pytest.approx(_avg(truth, "alpha-complete").mean())
    assert abs(row["avg"] - per_kind.mean()) > 1e-6


def test_long_csv_rows(fake):
    _, truth, records = fake
    parsed = list(csv.DictReader(io.StringIO(to_csv(leaderboard.scenario_long_table(records)))))
    expected_rows = [
        (method, kind, level, modality)
        for method in METHODS
        for kind, (levels, modalities) in SCENARIOS.items()
        for level in levels
        for modality in modalities
    ]
    assert [(r["run"], r["kind"], float(r["level"]), r["modality"]) for r in parsed] == expected_rows
    assert list(parsed[0]) == ["run", "protocol", "kind", "level", "modality", "miou", "miou_std", "seeds"]
    assert {r["protocol"] for r in parsed} == {"complete"}
    for line in parsed:
        levels = SCENARIOS[line["kind"]][0]
        values = _miou(truth, line["run"], line["kind"], line["modality"])[:, levels.index(float(line["level"]))]
        assert float(line["miou"]) == pytest.approx(values.mean(), abs=5e-5)
        assert float(line["miou_std"]) == pytest.approx(values.std(ddof=1), abs=5e-5)
        assert int(line["seeds"]) == 3


def test_a_null_score_shows_as_n_a(tmp_path: Path):
    write_results(tmp_path, with_logs=False, scenarios=SCENARIOS)
    _edit(
        tmp_path, "beta-complete", 1, lambda b: b["kinds"]["gaussian"]["modalities"]["dsm"]["miou"].__setitem__(1, None)
    )
    table = leaderboard.scenario_table(load_metrics(tmp_path, DATASET))
    beta = next(r for r in table.rows if r["run"] == "beta-complete")
    assert math.isnan(beta["gaussian_0.5"]) and not math.isnan(beta["gaussian_0.25"])
    column = [c.key for c in table.columns].index("gaussian_0.5")
    assert formatted(table)[1][column] == ("n/a", False)


def test_scenario_table_needs_a_block(tmp_path: Path):
    write_results(tmp_path, with_logs=False)
    records = load_metrics(tmp_path, DATASET)
    assert leaderboard.scenario_means(records) == {}
    with pytest.raises(ValueError, match="scenarios"):
        leaderboard.scenario_table(records)


# --- validation of the block -------------------------------------------------------------------


def _edit(root: Path, method: str, seed: int, mutate: Callable[[dict], object], fix_avg: bool = False) -> Path:
    """Apply ``mutate`` to a run's scenarios block; with ``fix_avg`` set its avg to the flat mean again."""
    path = root / DATASET / method / f"seed{seed}" / "metrics.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    mutate(record["scenarios"])
    if fix_avg:
        block = record["scenarios"]
        block["avg"] = float(
            np.mean([v for e in block["kinds"].values() for s in e["modalities"].values() for v in s["miou"]])
        )
    atomic_write_json(path, record)
    return path


def _gaussian(block: dict) -> dict:
    return block["kinds"]["gaussian"]


def _rgb(block: dict) -> dict:
    return _gaussian(block)["modalities"]["rgb"]


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda b: b.clear(), "'scenarios.seed'"),
        (lambda b: b.pop("seed"), "'scenarios.seed'"),
        (lambda b: b.update(seed="5"), "'scenarios.seed'"),
        (lambda b: b.update(seed=True), "'scenarios.seed'"),
        (lambda b: b.update(block_size=0), "'scenarios.block_size'"),
        (lambda b: b.update(block_size=2.5), "'scenarios.block_size'"),
        (lambda b: b.pop("kinds"), "'scenarios.kinds'"),
        (lambda b: b.update(kinds=[]), "'scenarios.kinds'"),
        (lambda b: b["kinds"].update(fog=b["kinds"]["speckle"]), "'scenarios.kinds.fog'"),
        (lambda b: b.update(kinds=dict(reversed(b["kinds"].items()))), "'scenarios.kinds'"),  # not in kind order
        (lambda b: b["kinds"].update(gaussian=[]), "'scenarios.kinds.gaussian'"),
        (lambda b: _gaussian(b).update(levels=[]), "'scenarios.kinds.gaussian.levels'"),
        (lambda b: _gaussian(b).pop("levels"), "'scenarios.kinds.gaussian.levels'"),
        (lambda b: _gaussian(b).update(levels=[0.25, "0.5", 1.0]), "'scenarios.kinds.gaussian.levels'"),
        (lambda b: _gaussian(b).update(levels=[0.25, 0.25, 1.0]), "'scenarios.kinds.gaussian.levels'"),
        (lambda b: _gaussian(b).update(levels=[0.0, 0.5, 1.0]), "'scenarios.kinds.gaussian.levels'"),
        (lambda b: _gaussian(b).update(levels=[0.25, None, 1.0]), "'scenarios.kinds.gaussian.levels'"),
        (lambda b: _gaussian(b).update(modalities={}), "'scenarios.kinds.gaussian.modalities'"),
        (lambda b: _gaussian(b).pop("modalities"), "'scenarios.kinds.gaussian.modalities'"),
        (
            lambda b: _gaussian(b)["modalities"].update(nir=_rgb(b)),
            "'scenarios.kinds.gaussian.modalities.nir'",
        ),
        (
            lambda b: _gaussian(b).update(modalities=dict(reversed(_gaussian(b)["modalities"].items()))),
            "'scenarios.kinds.gaussian.modalities'",
        ),
        (lambda b: _gaussian(b)["modalities"].update(rgb=[1.0]), "'scenarios.kinds.gaussian.modalities.rgb'"),
        (lambda b: _rgb(b).update(miou=_rgb(b)["miou"][:2]), "'scenarios.kinds.gaussian.modalities.rgb.miou'"),
        (lambda b: _rgb(b).update(miou=50.0), "'scenarios.kinds.gaussian.modalities.rgb.miou'"),
        (lambda b: _rgb(b).pop("mf1"), "'scenarios.kinds.gaussian.modalities.rgb.mf1'"),
        (lambda b: _rgb(b)["mf1"].__setitem__(0, "x"), "'scenarios.kinds.gaussian.modalities.rgb.mf1'"),
        (lambda b: _rgb(b)["accuracy"].__setitem__(2, 150.0), "'scenarios.kinds.gaussian.modalities.rgb.accuracy'"),
        (lambda b: _rgb(b)["accuracy"].__setitem__(2, -1.0), "'scenarios.kinds.gaussian.modalities.rgb.accuracy'"),
        (lambda b: _rgb(b)["miou"].__setitem__(0, True), "'scenarios.kinds.gaussian.modalities.rgb.miou'"),
        (lambda b: b.update(clean_miou=b["clean_miou"] + 0.01), "'scenarios.clean_miou'"),
        (lambda b: b.pop("clean_miou"), "'scenarios.clean_miou'"),
        (lambda b: b.update(avg=b["avg"] + 0.01), "'scenarios.avg'"),
        (lambda b: b.update(avg=None), "'scenarios.avg'"),  # every score is there: so must the mean be
        (lambda b: b.update(avg="high"), "'scenarios.avg'"),
        (lambda b: b.pop("avg"), "'scenarios.avg'"),
    ],
)
def test_malformed_scenarios(results: Path, mutate, key: str):
    path = _edit(results, "beta-complete", 0, mutate)  # alpha, read first, stays correct
    with pytest.raises(ValueError) as err:
        load_metrics(results, DATASET)
    assert str(path) in str(err.value) and key in str(err.value)


def test_not_a_dict(results: Path):
    path = results / DATASET / "beta-complete" / "seed0" / "metrics.json"
    record = json.loads(path.read_text())
    atomic_write_json(path, record | {"scenarios": [1, 2]})
    with pytest.raises(ValueError) as err:
        load_metrics(results, DATASET)
    assert str(path) in str(err.value) and "'scenarios'" in str(err.value)


def test_infinite_score(results: Path):
    path = results / DATASET / "sgma-complete" / "seed1" / "metrics.json"
    record = json.loads(path.read_text())
    record["scenarios"]["kinds"]["speckle"]["modalities"]["dsm"]["mf1"][0] = math.inf
    path.write_text(json.dumps(record))  # Python's json writes (and reads) Infinity
    with pytest.raises(ValueError) as err:
        load_metrics(results, DATASET)
    assert str(path) in str(err.value) and "'scenarios.kinds.speckle.modalities.dsm.mf1'" in str(err.value)


def test_null_scores_are_accepted(results: Path):
    """A null (NaN) score is allowed, and then neither the mean nor clean_miou can be checked."""
    _edit(results, "beta-complete", 0, lambda b: (_rgb(b)["miou"].__setitem__(0, None), b.update(avg=None)))
    rec = next(r for r in load_metrics(results, DATASET) if (r["run"], r["seed"]) == ("beta-complete", 0))
    assert rec["scenarios"]["avg"] is None


def _drop_rgb_from_blocks(block: dict) -> None:
    block["kinds"]["block_missing"]["modalities"].pop("rgb")


def _other_levels(block: dict) -> None:
    _gaussian(block)["levels"] = [0.25, 0.5, 2.0]


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda b: b.update(seed=6), "'scenarios.seed'"),
        (lambda b: b.update(block_size=BLOCK_SIZE * 2), "'scenarios.block_size'"),
        (lambda b: b["kinds"].pop("speckle"), "'scenarios.kinds'"),
        (_other_levels, "'scenarios.kinds.gaussian.levels'"),
        (_drop_rgb_from_blocks, "'scenarios.kinds.block_missing.modalities'"),
    ],
)
def test_runs_must_share_the_scenarios(results: Path, mutate, key: str):
    path = _edit(results, "sgma-complete", 1, mutate, fix_avg=True)  # fine on its own, differs from the others
    with pytest.raises(ValueError) as err:
        load_metrics(results, DATASET)
    assert str(path) in str(err.value) and key in str(err.value) and "other files" in str(err.value)


@pytest.mark.parametrize(("method", "seed"), [("beta-complete", 1), ("alpha-complete", 0)])
def test_some_runs_without_scenarios(results: Path, method: str, seed: int):
    """A block missing in one run (or present in only the others): the file read second is named."""
    path = results / DATASET / method / f"seed{seed}" / "metrics.json"
    record = json.loads(path.read_text())
    record.pop("scenarios")
    atomic_write_json(path, record)
    named = (
        path
        if (method, seed) != ("alpha-complete", 0)
        else results / DATASET / "alpha-complete" / "seed1" / "metrics.json"
    )
    with pytest.raises(ValueError) as err:
        load_metrics(results, DATASET)
    assert str(named) in str(err.value) and "'scenarios'" in str(err.value)


def test_layout(fake):
    _, _, records = fake
    layout = scenario_layout(records[0])
    assert layout == {k: (list(levels), list(mods)) for k, (levels, mods) in SCENARIOS.items()}
    assert list(layout) == [k for k in SCENARIO_KINDS if k in SCENARIOS]


# --- the curves --------------------------------------------------------------------------------


def _error_segments(ax) -> dict[float, tuple[float, float]]:
    out = {}
    for coll in ax.collections:
        if isinstance(coll, LineCollection):
            for (x0, y0), (_, y1) in coll.get_segments():
                out[round(float(x0), 9)] = (min(y0, y1), max(y0, y1))
    return out


@pytest.mark.slow  # renders every scenario curve (~4 s)
def test_scenario_curves(fake):
    _, truth, records = fake
    layout = scenario_layout(records[0])
    fig = plots.scenario_curves(leaderboard.scenario_means(records), layout, MODALITIES, "t", SCENARIO_UNITS)
    axes = {ax.get_label(): ax for ax in fig.axes if ax.get_label()}
    columns = [*MODALITIES, "mean"]
    assert set(axes) == {f"{k}|{c}" for k in SCENARIOS for c in columns}
    assert axes["gaussian|rgb"].get_gridspec().get_geometry() == (len(SCENARIOS), len(columns))
    for r, kind in enumerate(SCENARIOS):
        for c, column in enumerate(columns):
            assert axes[f"{kind}|{column}"].get_subplotspec().rowspan.start == r
            assert axes[f"{kind}|{column}"].get_subplotspec().colspan.start == c
    styles = plots.method_styles(list(METHODS))
    for kind, (levels, corrupted) in SCENARIOS.items():
        limits = set()
        for column in columns:
            ax = axes[f"{kind}|{column}"]
            if column != "mean" and column not in corrupted:
                assert not ax.get_lines() and [t.get_text() for t in ax.texts] == ["not corrupted"]
                continue
            limits.add(ax.get_ylim())
            assert ax.get_xlabel() == SCENARIO_UNITS[kind]
            lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}  # not the error bar caps
            assert set(lines) == {f"{m}|{kind}|{column}" for m in METHODS}
            for method in METHODS:
                per_seed = _kind_mean(truth, method, kind) if column == "mean" else _miou(truth, method, kind, column)
                per_seed = np.column_stack([_clean(truth, method), per_seed])  # x = 0: clean
                line = lines[f"{method}|{kind}|{column}"]
                np.testing.assert_allclose(line.get_ydata(), per_seed.mean(axis=0), rtol=1e-12)
                offset = np.asarray(line.get_xdata()) - np.array([0.0, *levels])
                assert np.ptp(offset) == pytest.approx(0.0, abs=1e-12) and abs(offset[0]) <= 0.021 * max(levels)
                assert to_rgb(line.get_color()) == to_rgb(styles[method]["color"])
                segments = _error_segments(ax)
                for x, std in zip(line.get_xdata(), per_seed.std(axis=0, ddof=1)):
                    low, high = segments[round(float(x), 9)]
                    assert high - low == pytest.approx(2 * std)
                top, bottom = (per_seed.mean(0) + per_seed.std(0, ddof=1)).max(), per_seed.mean(0).min()
                assert ax.get_ylim()[0] < bottom and ax.get_ylim()[1] > top
            assert [float(t) for t in ax.get_xticks()] == [0.0, *levels]
        assert len(limits) == 1  # one y range per row
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(METHODS)
    first, second = (
        plots.figure_bytes(
            plots.scenario_curves(leaderboard.scenario_means(records), layout, MODALITIES, "t", SCENARIO_UNITS)
        )
        for _ in range(2)
    )
    assert first == second and first["png"].startswith(b"\x89PNG")


def test_scenario_curves_rejects_bad_input(fake):
    _, _, records = fake
    means = leaderboard.scenario_means(records)
    layout = scenario_layout(records[0])
    with pytest.raises(ValueError, match="not among the modalities"):
        plots.scenario_curves(means, layout, ["rgb"], "t")
    with pytest.raises(ValueError, match="at least one"):
        plots.scenario_curves({}, layout, MODALITIES, "t")
    short = {"gaussian": ([0.25, 0.5], ["rgb", "dsm"])}  # the means hold three levels
    with pytest.raises(ValueError, match="shape"):
        plots.scenario_curves(means, short, MODALITIES, "t")


# --- the built report --------------------------------------------------------------------------


@pytest.mark.slow  # builds a whole report
def test_report_with_scenarios(results: Path, tmp_path: Path):
    paths = build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG, prepared_root=tmp_path / "none")
    names = {str(p.relative_to(results)) for p in paths}
    for suffix in ("csv", "md", "tex"):
        assert f"{DATASET}/scenarios.{suffix}" in names
    assert f"{DATASET}/scenarios_long.csv" in names
    for suffix, magic in (("png", b"\x89PNG"), ("svg", b"<?xml")):
        assert (results / suffix / DATASET / f"scenarios.{suffix}").read_bytes().startswith(magic)
    long = list(csv.DictReader(io.StringIO((results / DATASET / "scenarios_long.csv").read_text())))
    assert len(long) == len(METHODS) * sum(len(lv) * len(m) for lv, m in SCENARIOS.values())

    summary = json.loads((results / "summary.json").read_text())
    for method in METHODS:
        avgs = [
            json.loads((results / DATASET / method / f"seed{s}" / "metrics.json").read_text())["scenarios"]["avg"]
            for s in (0, 1)
        ]
        assert summary[DATASET][method]["scenario_avg"] == pytest.approx(np.mean(avgs))

    page = (results / "report.html").read_text()
    assert f'<section id="{DATASET}-corrupted-inputs">' in page
    assert f'id="{DATASET}-corrupted-inputs-scenarios"' in page  # the table
    assert f'id="{DATASET}-corrupted-inputs-fig-scenarios"' in page  # the figure
    assert "No corrupted-input scenarios" not in page

    board = (results / "leaderboard.md").read_text().splitlines()[0]
    assert board.startswith("| Run | Protocol | toy Avg | toy Last-1 | toy Corrupted Avg | Mean rank (Avg) |")
    overview = list(csv.DictReader(io.StringIO((results / "leaderboard.csv").read_text())))
    for line in overview:
        assert float(line["toy_scenario_avg"]) == pytest.approx(summary[DATASET][line["run"]]["scenario_avg"], abs=5e-5)


@pytest.mark.slow  # builds a whole report
def test_report_without_scenarios(tmp_path: Path):
    """Runs evaluated before the scenarios existed: the report builds, says so, writes none of their files."""
    write_results(tmp_path, with_logs=False)
    paths = build.write_report(tmp_path, [DATASET], list(METHODS), [0, 1], CONFIG, prepared_root=tmp_path / "none")
    assert not [p for p in paths if "scenarios" in p.name]
    assert not list((tmp_path / DATASET).rglob("scenarios*"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all("scenario_avg" not in entry for entry in summary[DATASET].values())
    page = (tmp_path / "report.html").read_text()
    assert "No corrupted-input scenarios" in page and "corrupted-inputs" not in page
    assert "Corrupted Avg" not in (tmp_path / "leaderboard.md").read_text()


@pytest.mark.slow  # builds a whole report
def test_scenarios_in_the_cli_markdown(results: Path):
    inputs = build.load_inputs(results, DATASET, list(METHODS), [0, 1], CONFIG, prepared_root=results / "none")
    report = build.build_dataset(inputs, CONFIG)
    text = build.dataset_markdown(report)
    assert "### mIoU (%) with corrupted inputs" in text and "| speckle 0.5 |" in text
