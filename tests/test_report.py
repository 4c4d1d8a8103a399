"""benchmark.report on fake metrics.json files (numpy as the oracle for means and stds)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from benchmark import report
from benchmark.io import atomic_write_json

DATASET = "synthetic"
SUBSETS = ["rgb", "dsm", "rgb+dsm"]  # evaluation order, deliberately not alphabetical
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# method -> seed -> per-subset mIoU (percent)
FAKE = {
    "zeta": {0: [61.234, 40.5, 70.0]},
    "alpha": {0: [50.0, 30.0, 66.0], 1: [54.0, 35.0, 68.5]},
}
FAMILIES = {"zeta": "reference", "alpha": "joint"}  # the leaderboard's family column


def _summary(mious: list[float]) -> dict:
    return {
        "avg": float(np.mean(mious)),
        "top1": max(mious),
        "last1": min(mious),
        "top1_subset": SUBSETS[int(np.argmax(mious))],
        "last1_subset": "x",
    }


def _record(method: str, seed: int, mious: list[float]) -> dict:
    return {
        "dataset": DATASET,
        "method": method,
        "seed": seed,
        "family": FAMILIES.get(method, "reference"),
        "modalities": ["rgb", "dsm"],
        "classes": ["a", "b"],
        "subsets": {s: {"miou": m, "mf1": m + 1, "iou": {"a": m, "b": None}} for s, m in zip(SUBSETS, mious)},
        "summary": _summary(mious),
        "extra_key_from_some_method": {"ignored": True},
    }


def _write(root: Path, rec: dict, method_dir: str | None = None, seed_dir: str | None = None):
    path = root / DATASET / (method_dir or rec["method"]) / (seed_dir or f"seed{rec['seed']}")
    atomic_write_json(path / "metrics.json", rec)
    return path / "metrics.json"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    for method, seeds in FAKE.items():
        for seed, mious in seeds.items():
            _write(tmp_path, _record(method, seed, mious))
    return tmp_path


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_values_and_column_order(results: Path):
    paths = report.write_report(results, DATASET)
    assert [p.name for p in paths] == ["leaderboard.csv", "leaderboard.md", "miou_heatmap.png"]
    rows = _read_csv(results / DATASET / "leaderboard.csv")
    header = list(rows[0])
    assert header == [
        "method",
        "family",
        "seeds",
        *SUBSETS,
        *(f"{s}_std" for s in SUBSETS),
        "avg",
        "top1",
        "last1",
        "avg_std",
        "top1_std",
        "last1_std",
    ]
    assert [r["method"] for r in rows] == ["alpha", "zeta"]  # sorted when not listed
    by_method = {r["method"]: r for r in rows}
    for method, seeds in FAKE.items():
        m = np.array(list(seeds.values()))  # [seeds, subsets]
        row = by_method[method]
        assert row["seeds"] == str(len(seeds)) and row["family"] == FAMILIES[method]
        summaries = np.array([[np.mean(x), np.max(x), np.min(x)] for x in m])
        for j, s in enumerate(SUBSETS):
            assert row[s] == f"{m[:, j].mean():.2f}"
            want_std = f"{m[:, j].std(ddof=1):.2f}" if len(m) > 1 else ""
            assert row[f"{s}_std"] == want_std
        for j, k in enumerate(["avg", "top1", "last1"]):
            assert row[k] == f"{summaries[:, j].mean():.2f}"
            assert row[f"{k}_std"] == (f"{summaries[:, j].std(ddof=1):.2f}" if len(m) > 1 else "")
    assert by_method["zeta"]["rgb"] == "61.23"  # 2-decimal rounding


def test_no_std_columns_with_single_seeds_and_method_order(results: Path):
    report.write_report(results, DATASET, methods=["zeta"])
    rows = _read_csv(results / DATASET / "leaderboard.csv")
    assert list(rows[0]) == ["method", "family", "seeds", *SUBSETS, "avg", "top1", "last1"]
    report.write_report(results, DATASET, methods=["zeta", "alpha"])
    assert [r["method"] for r in _read_csv(results / DATASET / "leaderboard.csv")] == ["zeta", "alpha"]


def test_markdown_and_png(results: Path):
    report.write_report(results, DATASET)
    md = (results / DATASET / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    assert len(md) == 2 + len(FAKE)  # header, separator, one row per method
    assert md[0].startswith("| Method | Family | Seeds | rgb | dsm | rgb+dsm | Avg")
    assert md[2].startswith("| alpha | joint | 2 |")
    alpha = next(line for line in md if line.startswith("| alpha"))
    zeta = next(line for line in md if line.startswith("| zeta"))
    assert f"52.00 ± {np.std([50.0, 54.0], ddof=1):.2f}" in alpha
    assert "**61.23**" in zeta and "**40.50**" in zeta  # best rgb and dsm
    assert "**52.00" not in alpha
    png = (results / DATASET / "miou_heatmap.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000


def test_report_is_deterministic(results: Path):
    report.write_report(results, DATASET)
    first = [(results / DATASET / n).read_bytes() for n in ("leaderboard.csv", "miou_heatmap.png")]
    report.write_report(results, DATASET)
    second = [(results / DATASET / n).read_bytes() for n in ("leaderboard.csv", "miou_heatmap.png")]
    assert first == second


def test_missing_key_raises_naming_file(results: Path):
    rec = _record("beta", 0, [1.0, 2.0, 3.0])
    del rec["summary"]
    _write(results, rec)
    with pytest.raises(ValueError, match=r"beta.*seed0.*metrics\.json.*'summary'"):
        report.load_metrics(results, DATASET)


def test_wrong_method_in_path_raises(results: Path):
    path = _write(results, _record("gamma", 0, [1.0, 2.0, 3.0]), method_dir="delta")
    with pytest.raises(ValueError) as err:
        report.load_metrics(results, DATASET, methods=["delta"])
    assert str(path) in str(err.value) and "'method'" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda r: r.update(seed="0"), "'seed'"),
        (lambda r: r.update(seed=3), "'seed'"),  # path says seed0
        (lambda r: r["subsets"]["dsm"].pop("miou"), "subsets.dsm.miou"),
        (lambda r: r["subsets"].pop("dsm"), "'subsets'"),  # differs from the other files
        (lambda r: r["summary"].update(top1="high"), "summary.top1"),
        (lambda r: r.pop("family"), "'family'"),
    ],
)
def test_malformed_files(results: Path, mutate, key: str):
    rec = _record("beta", 0, [1.0, 2.0, 3.0])
    mutate(rec)
    path = _write(results, rec, seed_dir="seed0")
    with pytest.raises(ValueError) as err:
        report.load_metrics(results, DATASET)
    assert str(path) in str(err.value) and key in str(err.value)


def test_seeds_of_one_method_must_agree_on_its_family(results: Path):
    rec = _record("alpha", 1, FAKE["alpha"][1])
    _write(results, {**rec, "family": "contrastive"})
    with pytest.raises(ValueError, match=r"'alpha'.*family.*contrastive.*joint"):
        report.write_report(results, DATASET)


def test_listed_method_without_metrics(results: Path):
    (results / DATASET / "ghost").mkdir()
    with pytest.raises(FileNotFoundError, match=r"ghost.*seed\*.*metrics\.json"):
        report.load_metrics(results, DATASET, methods=["alpha", "ghost"])


def test_failure_leaves_old_report_untouched(results: Path, monkeypatch):
    report.write_report(results, DATASET, methods=["zeta"])
    out = results / DATASET
    before = {n: (out / n).read_bytes() for n in ("leaderboard.csv", "leaderboard.md")}

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report, "render_heatmap", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        report.write_report(results, DATASET)  # would add alpha and std columns
    assert {n: (out / n).read_bytes() for n in before} == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_null_miou_is_nan(results: Path):
    rec = _record("beta", 0, [1.0, 2.0, 3.0])
    rec["subsets"]["dsm"]["miou"] = None
    _write(results, rec)
    row = next(r for r in report.leaderboard(report.load_metrics(results, DATASET)) if r["method"] == "beta")
    assert np.isnan(row["dsm"]) and row["rgb"] == 1.0


def test_cli_prints_markdown(results: Path, capsys):
    assert report.main(["--dataset", DATASET, "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    assert printed == (results / DATASET / "leaderboard.md").read_text(encoding="utf-8")
    assert report.main(["--dataset", DATASET, "--results", str(results), "--methods", "nope"]) == 1


# Robustness maps (scales 1/4 and 1/8): seed -> rgb+dsm subset's {modality: [r at 1/4, r at 1/8]}.
# A single-modality subset puts all weight on its modality; a missing modality is exactly 0.
SCALES = [4, 8]
FUSED = {0: {"rgb": [0.6, 0.3], "dsm": [0.4, 0.7]}, 1: {"rgb": [0.8, 0.5], "dsm": [0.2, 0.5]}}


def _robust_record(method: str, seed: int) -> dict:
    rec = _record(method, seed, [10.0, 20.0, 30.0])
    rec["robustness"] = {
        "scales": list(SCALES),
        "subsets": {
            "rgb": {"rgb": [1.0, 1.0], "dsm": [0.0, 0.0]},
            "dsm": {"rgb": [0.0, 0.0], "dsm": [1.0, 1.0]},
            "rgb+dsm": {m: list(v) for m, v in FUSED[seed].items()},  # a copy: tests mutate records
        },
    }
    return rec


@pytest.fixture
def robust_results(results: Path) -> Path:
    for seed in FUSED:
        _write(results, _robust_record("sgma", seed))
    return results


def test_robustness_table_means_over_seeds(robust_results: Path):
    table = report.robustness_table(report.load_metrics(robust_results, DATASET))
    assert list(table) == ["sgma"]  # alpha and zeta carry no robustness
    assert list(table["sgma"]) == SUBSETS
    assert table["sgma"]["rgb"] == {"rgb": [1.0, 1.0], "dsm": [0.0, 0.0]}
    fused = table["sgma"]["rgb+dsm"]
    assert list(fused) == ["rgb", "dsm"]
    assert fused["rgb"] == pytest.approx([(0.6 + 0.8) / 2, (0.3 + 0.5) / 2])  # [0.7, 0.4]
    assert fused["dsm"] == pytest.approx([(0.4 + 0.2) / 2, (0.7 + 0.5) / 2])  # [0.3, 0.6]


def test_robustness_png_written_and_deterministic(robust_results: Path):
    paths = report.write_report(robust_results, DATASET)
    assert [p.name for p in paths] == ["leaderboard.csv", "leaderboard.md", "miou_heatmap.png", "sgma_robustness.png"]
    png = paths[3].read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    report.write_report(robust_results, DATASET)
    assert paths[3].read_bytes() == png


def test_no_robustness_no_png(results: Path):
    assert report.render_robustness(report.load_metrics(results, DATASET)) is None
    paths = report.write_report(results, DATASET)
    assert len(paths) == 3 and not (results / DATASET / "sgma_robustness.png").exists()


def test_stale_robustness_png_removed(robust_results: Path):
    report.write_report(robust_results, DATASET)
    stale = robust_results / DATASET / "sgma_robustness.png"
    assert stale.exists()
    paths = report.write_report(robust_results, DATASET, methods=["alpha", "zeta"])  # sgma left the run
    assert stale.name not in [p.name for p in paths] and not stale.exists()


def test_failed_report_keeps_robustness_png(robust_results: Path, monkeypatch):
    report.write_report(robust_results, DATASET)
    png = (robust_results / DATASET / "sgma_robustness.png").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report, "render_heatmap", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        report.write_report(robust_results, DATASET, methods=["alpha"])  # would remove it
    assert (robust_results / DATASET / "sgma_robustness.png").read_bytes() == png


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda r: r.update(robustness=[]), "'robustness'"),
        (lambda r: r["robustness"].update(scales=[]), "'robustness.scales'"),
        (lambda r: r["robustness"].update(scales=[4, 8, 16]), "'robustness.subsets.rgb.rgb'"),  # 2 values, 3 scales
        (lambda r: r["robustness"].update(scales=[4, "8"]), "'robustness.scales'"),
        (lambda r: r["robustness"]["subsets"].pop("dsm"), "'robustness.subsets'"),
        (lambda r: r["robustness"]["subsets"]["rgb+dsm"].pop("dsm"), "'robustness.subsets.rgb+dsm'"),
        (lambda r: r["robustness"]["subsets"]["rgb+dsm"].update(nir=[0.0, 0.0]), "'robustness.subsets.rgb+dsm'"),
        (lambda r: r["robustness"]["subsets"]["dsm"].update(dsm=[1.0]), "'robustness.subsets.dsm.dsm'"),
        (lambda r: r["robustness"]["subsets"]["dsm"].update(dsm=[100.0, 100.0]), "'robustness.subsets.dsm.dsm'"),
        (lambda r: r["robustness"]["subsets"]["dsm"].update(dsm=[1.0, "x"]), "'robustness.subsets.dsm.dsm'"),
    ],
)
def test_malformed_robustness(results: Path, mutate, key: str):
    rec = _robust_record("sgma", 0)
    mutate(rec)
    path = _write(results, rec)
    with pytest.raises(ValueError) as err:
        report.load_metrics(results, DATASET)
    assert str(path) in str(err.value) and key in str(err.value)


def test_robustness_seeds_must_agree_on_scales(robust_results: Path):
    rec = _robust_record("sgma", 1)
    rec["robustness"]["scales"] = [8, 16]
    _write(robust_results, rec)
    with pytest.raises(ValueError, match=r"'sgma'.*robustness\.scales"):
        report.robustness_table(report.load_metrics(robust_results, DATASET))
