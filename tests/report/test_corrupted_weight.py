"""The corrupted modality's robustness weight in the report: validation of ``robustness.scenarios``
in metrics.json, the means over seeds, the ``corrupted_weight`` curves and CSV, and their place in
the built report; records without the entry (older files, methods without maps) are skipped.

Expected values are computed here with numpy from the weights written into the fake records.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from report.fake_results import DATASET, METHODS, MODALITIES, SCENARIOS, SUBSETS, write_results
from report.test_scenarios import _error_segments

from benchmark.config import ReportConfig
from benchmark.io import atomic_write_json
from benchmark.report import build, leaderboard, plots
from benchmark.report.results import SCENARIO_UNITS, load_metrics, scenario_layout
from benchmark.report.tables import to_csv

SCALES = [4, 8, 16]
SEEDS = [0, 1, 2]
WITH_WEIGHTS = ["beta-complete", "sgma-complete"]  # alpha-complete: robustness without its scenarios entry
CONFIG = ReportConfig(reference="sgma-complete", failure_probs=[0.1], bootstrap_samples=20)
FULL = SUBSETS[-1]


def _split(rng: np.random.Generator, present: list[bool]) -> list[list[float]]:
    """float[M][L]: per scale, weights over the present modalities that sum to 1 (0 elsewhere)."""
    weights = rng.dirichlet(np.ones(sum(present)), len(SCALES))  # [L, present]
    out = np.zeros((len(SCALES), len(present)))
    out[:, np.array(present)] = weights
    return out.T.tolist()


def _robustness(seed: int, run: str, with_scenarios: bool) -> dict:
    """A metrics.json ``robustness`` block with weights drawn from ``(seed, run)``."""
    rng = np.random.default_rng([seed, sum(map(ord, run))])
    block = {"scales": SCALES, "subsets": {}}
    for subset in SUBSETS:
        block["subsets"][subset] = dict(zip(MODALITIES, _split(rng, [m in subset.split("+") for m in MODALITIES])))
    if with_scenarios:
        block["scenarios"] = {}
        for kind, (levels, corrupted) in SCENARIOS.items():
            per_modality = {}
            for c in corrupted:
                per_level = [_split(rng, [True] * len(MODALITIES)) for _ in levels]  # [level][M][L]
                per_modality[c] = {m: [w[j] for w in per_level] for j, m in enumerate(MODALITIES)}
            block["scenarios"][kind] = {"levels": list(levels), "modalities": per_modality}
    return block


def _edit(root: Path, run: str, seed: int, mutate: Callable[[dict], object]) -> Path:
    path = root / DATASET / run / f"seed{seed}" / "metrics.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    mutate(record)
    atomic_write_json(path, record)
    return path


def _results(root: Path, with_scenarios: tuple[str, ...] = tuple(WITH_WEIGHTS)) -> Path:
    """Three runs x three seeds with scenario blocks, every run with robustness, ``with_scenarios``
    also with ``robustness.scenarios``."""
    write_results(root, {m: (f, SEEDS, a) for m, (f, _, a) in METHODS.items()}, with_logs=False, scenarios=SCENARIOS)
    for run in METHODS:
        for seed in SEEDS:
            block = _robustness(seed, run, run in with_scenarios)
            _edit(root, run, seed, lambda r, b=block: r.update(robustness=b))
    return root


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = _results(tmp_path_factory.mktemp("corrupted_weight"))
    return root, load_metrics(root, DATASET)


def _expected(records: list[dict], run: str, kind: str, modality: str) -> np.ndarray:
    """float[seeds, 1 + levels]: per seed the corrupted modality's mean over scales, clean first."""
    rows = []
    for r in (r for r in records if r["run"] == run):
        clean = np.mean(r["robustness"]["subsets"][FULL][modality])
        levels = np.mean(r["robustness"]["scenarios"][kind]["modalities"][modality][modality], axis=1)
        rows.append([clean, *levels])
    return np.array(rows)


def test_corrupted_weights_over_seeds(fake):
    _, records = fake
    weights = leaderboard.corrupted_weights(records)
    assert list(weights) == WITH_WEIGHTS  # alpha-complete has no robustness.scenarios: left out
    for run in WITH_WEIGHTS:
        assert weights[run]["seeds"] == len(SEEDS)
        assert list(weights[run]["kinds"]) == list(SCENARIOS)
        for kind, (levels, corrupted) in SCENARIOS.items():
            assert list(weights[run]["kinds"][kind]) == corrupted
            for m in corrupted:
                per_seed = _expected(records, run, kind, m)
                assert per_seed.shape == (len(SEEDS), 1 + len(levels))
                mean, std = weights[run]["kinds"][kind][m]
                np.testing.assert_allclose(mean, per_seed.mean(axis=0), rtol=1e-12)
                np.testing.assert_allclose(std, per_seed.std(axis=0, ddof=1), rtol=1e-9)


@pytest.mark.slow  # renders every corrupted-weight curve (~4 s)
def test_corrupted_weight_curves(fake):
    _, records = fake
    layout = scenario_layout(records[0])
    weights = leaderboard.corrupted_weights(records)
    fig = plots.corrupted_weight_curves(weights, layout, MODALITIES, "t", SCENARIO_UNITS)
    axes = {ax.get_label(): ax for ax in fig.axes if ax.get_label()}
    assert set(axes) == {f"{k}|{m}" for k in SCENARIOS for m in MODALITIES}  # no "mean" column
    assert axes["gaussian|rgb"].get_gridspec().get_geometry() == (len(SCENARIOS), len(MODALITIES))
    styles = plots.method_styles(WITH_WEIGHTS)
    for kind, (levels, corrupted) in SCENARIOS.items():
        for m in MODALITIES:
            ax = axes[f"{kind}|{m}"]
            if m not in corrupted:  # speckle corrupts dsm only
                assert not ax.get_lines() and [t.get_text() for t in ax.texts] == ["not corrupted"]
                continue
            assert ax.get_xlabel() == SCENARIO_UNITS[kind] and ax.get_ylim() == pytest.approx((-0.03, 1.03))
            assert [float(t) for t in ax.get_xticks()] == [0.0, *levels]
            lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
            assert set(lines) == {f"{run}|{kind}|{m}" for run in WITH_WEIGHTS}
            segments = _error_segments(ax)
            for run in WITH_WEIGHTS:
                per_seed = _expected(records, run, kind, m)
                line = lines[f"{run}|{kind}|{m}"]
                np.testing.assert_allclose(line.get_ydata(), per_seed.mean(axis=0), rtol=1e-12)
                offset = np.asarray(line.get_xdata()) - np.array([0.0, *levels])
                assert np.ptp(offset) == pytest.approx(0.0, abs=1e-12) and abs(offset[0]) <= 0.021 * max(levels)
                assert to_rgb(line.get_color()) == to_rgb(styles[run]["color"])
                for x, std in zip(line.get_xdata(), per_seed.std(axis=0, ddof=1)):
                    low, high = segments[round(float(x), 9)]
                    assert high - low == pytest.approx(2 * std)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == WITH_WEIGHTS
    first, second = (
        plots.figure_bytes(plots.corrupted_weight_curves(weights, layout, MODALITIES, "t")) for _ in range(2)
    )
    assert first == second and first["png"].startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="at least one"):
        plots.corrupted_weight_curves({}, layout, MODALITIES, "t")
    with pytest.raises(ValueError, match="not among the modalities"):
        plots.corrupted_weight_curves(weights, layout, ["rgb"], "t")


def test_corrupted_weight_csv(fake):
    _, records = fake
    parsed = list(csv.DictReader(io.StringIO(to_csv(leaderboard.corrupted_weight_table(records)))))
    assert list(parsed[0]) == ["run", "protocol", "kind", "modality", "level", "weight", "weight_std", "seeds"]
    expected_rows = [
        (run, kind, m, level)
        for run in WITH_WEIGHTS
        for kind, (levels, corrupted) in SCENARIOS.items()
        for m in corrupted
        for level in [0.0, *levels]
    ]
    assert [(r["run"], r["kind"], r["modality"], float(r["level"])) for r in parsed] == expected_rows
    for line in parsed:
        per_seed = _expected(records, line["run"], line["kind"], line["modality"])
        k = [0.0, *SCENARIOS[line["kind"]][0]].index(float(line["level"]))
        assert float(line["weight"]) == pytest.approx(per_seed[:, k].mean(), abs=5e-5)
        assert float(line["weight_std"]) == pytest.approx(per_seed[:, k].std(ddof=1), abs=5e-5)
        assert (line["protocol"], int(line["seeds"])) == ("complete", len(SEEDS))


def _build(root: Path) -> set[str]:
    paths = build.write_report(root, [DATASET], list(METHODS), SEEDS, CONFIG, prepared_root=root / "none")
    return {str(p.relative_to(root)) for p in paths}


@pytest.mark.slow  # builds a whole report twice (~13 s)
def test_report_with_corrupted_weights_then_without(tmp_path: Path):
    root = _results(tmp_path)
    names = _build(root)
    for name in (f"{DATASET}/corrupted_weight.csv", *(f"{s}/{DATASET}/corrupted_weight.{s}" for s in ("png", "svg"))):
        assert name in names
    page = (root / "report.html").read_text()
    section = page[page.index(f'<section id="{DATASET}-corrupted-inputs">') :]
    assert f'id="{DATASET}-corrupted-inputs-fig-corrupted-weight"' in section
    assert "mean over the feature scales" in section
    # the same runs evaluated before robustness.scenarios existed: skipped, and the files go
    for run in WITH_WEIGHTS:
        for seed in SEEDS:
            _edit(root, run, seed, lambda r: r["robustness"].pop("scenarios"))
    names = _build(root)
    assert not [n for n in names if "corrupted_weight" in n]
    assert not list(root.rglob("corrupted_weight*"))
    assert f"png/{DATASET}/scenarios.png" in names and f"png/{DATASET}/robustness_means.png" in names
    assert "corrupted-weight" not in (root / "report.html").read_text()


def test_a_seed_without_the_entry_is_left_out(tmp_path: Path):
    root = _results(tmp_path)
    _edit(root, "sgma-complete", 1, lambda r: r["robustness"].pop("scenarios"))
    records = load_metrics(root, DATASET)
    entry = leaderboard.corrupted_weights(records)["sgma-complete"]
    kept = [r for r in records if r["run"] == "sgma-complete" and r["seed"] != 1]
    assert entry["seeds"] == 2
    expected = _expected(kept, "sgma-complete", "gaussian", "rgb").mean(axis=0)
    np.testing.assert_allclose(entry["kinds"]["gaussian"]["rgb"][0], expected, rtol=1e-12)


def _gaussian(record: dict) -> dict:
    return record["robustness"]["scenarios"]["gaussian"]


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda r: r["robustness"].update(scenarios=[]), "'robustness.scenarios'"),
        (lambda r: r["robustness"]["scenarios"].pop("speckle"), "'robustness.scenarios'"),
        (lambda r: _gaussian(r).update(levels=[0.25, 0.5]), "'robustness.scenarios.gaussian.levels'"),
        (lambda r: _gaussian(r)["modalities"].pop("rgb"), "'robustness.scenarios.gaussian.modalities'"),
        (lambda r: _gaussian(r)["modalities"]["rgb"].pop("dsm"), "'robustness.scenarios.gaussian.modalities.rgb'"),
        (
            lambda r: _gaussian(r)["modalities"]["rgb"].update(rgb=[[0.5] * len(SCALES)] * 2),
            "'robustness.scenarios.gaussian.modalities.rgb.rgb'",
        ),
        (
            lambda r: _gaussian(r)["modalities"]["rgb"]["dsm"].__setitem__(0, [0.5, 0.5]),
            "'robustness.scenarios.gaussian.modalities.rgb.dsm'",
        ),
        (
            lambda r: _gaussian(r)["modalities"]["rgb"]["dsm"][1].__setitem__(0, 1.5),
            "'robustness.scenarios.gaussian.modalities.rgb.dsm'",
        ),
    ],
)
def test_malformed_entry(tmp_path: Path, mutate, key: str):
    root = _results(tmp_path)
    path = _edit(root, "sgma-complete", 1, mutate)
    with pytest.raises(ValueError) as err:
        load_metrics(root, DATASET)
    assert str(path) in str(err.value) and key in str(err.value)


def test_entry_without_a_scenarios_block(tmp_path: Path):
    root = _results(tmp_path)
    block = _robustness(0, "alpha-complete", True)
    path = _edit(root, "alpha-complete", 0, lambda r: (r.pop("scenarios"), r.update(robustness=block)))
    with pytest.raises(ValueError, match="no 'scenarios' block") as err:
        load_metrics(root, DATASET)
    assert str(path) in str(err.value) and "'robustness.scenarios'" in str(err.value)
