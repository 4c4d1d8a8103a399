"""The whole report from a hand-made results folder: files, summary, determinism, atomicity, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from report.fake_results import DATASET, METHODS, SUBSETS, write_results

from benchmark import errors
from benchmark.config import ReportConfig
from benchmark.report import build, main

CONFIG = ReportConfig(reference="sgma-complete", failure_probs=[0.1], bootstrap_samples=100)
TABLES = ["leaderboard", "fragility", "per_class", "efficiency", "comparison"]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    write_results(tmp_path / "results")
    return tmp_path / "results"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_every_table_plot_and_page(results: Path, tmp_path: Path):
    paths = build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG, prepared_root=tmp_path / "none")
    names = {str(p.relative_to(results)) for p in paths}
    for table in TABLES:
        for suffix in ("csv", "md", "tex"):
            assert f"{DATASET}/{table}.{suffix}" in names
    for plot in ("miou_heatmap", "miou_bars", "fragility", "training_curves"):
        for suffix, magic in (("png", b"\x89PNG"), ("svg", b"<?xml")):
            path = results / suffix / DATASET / f"{plot}.{suffix}"
            assert path.read_bytes().startswith(magic), path
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.tex", "summary.json", "report.html"} <= names
    page = (results / "report.html").read_text()
    assert "No predictions.npz" in page  # the panel's absence is said, not silent
    assert not list(results.rglob("*.tmp")) and not list(results.glob(f"*/.{DATASET}.*"))


def test_summary_json_matches_the_leaderboard(results: Path):
    build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    summary = json.loads((results / "summary.json").read_text())
    board = (results / DATASET / "leaderboard.csv").read_text().splitlines()
    header = board[0].split(",")
    for line in board[1:]:
        row = dict(zip(header, line.split(",")))
        entry = summary[DATASET][row["run"]]
        assert set(entry) == {"avg", "top1", "last1", "expected_p0_1"}
        for key in entry:
            assert entry[key] == pytest.approx(float(row[key]), abs=5e-5)  # the CSV keeps 4 decimals


@pytest.mark.slow  # builds a whole report twice
def test_report_is_deterministic(results: Path):
    build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    first = _snapshot(results)
    build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    assert _snapshot(results) == first


def test_a_failure_leaves_the_previous_report_untouched(results: Path):
    build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    before = _snapshot(results)
    metrics = results / DATASET / "beta-complete" / "seed1" / "metrics.json"
    record = json.loads(metrics.read_text())
    record["subsets"]["rgb"]["miou"] += 1.0  # no longer what the image scores give
    metrics.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"beta-complete/seed1/image_scores.npz: subset 'rgb'"):
        build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    after = _snapshot(results)
    after.pop(f"{DATASET}/beta-complete/seed1/metrics.json")
    before.pop(f"{DATASET}/beta-complete/seed1/metrics.json")
    assert after == before


@pytest.mark.slow  # builds a whole report twice (~6 s)
def test_stale_plots_are_removed(results: Path):
    build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    stale = results / "png" / DATASET / "qualitative_tile9.png"
    stale.write_bytes(b"old")
    build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    assert not stale.exists()


def _params(tmp_path: Path, **changes) -> Path:
    """A params.yaml the whole-file check accepts (registered data set and methods: the fake's
    "toy", "alpha" and "beta" are not); the CLI calls name the fake's data set and runs."""
    registered = ["muss", "m3l", "sgma"]
    params = {
        "datasets": ["synthetic"],
        "runs": [f"{m}-complete" for m in registered],
        "seeds": [0, 1],
        "method_params": {m: {} for m in registered},
        "synthetic": None,
        "train": {},
        "report": {"reference": "sgma-complete", "bootstrap_samples": 50},
    }
    params.update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _cli(params: Path, results: Path, *extra: str) -> list[str]:
    return ["--params", str(params), "--results", str(results), "--out", str(results), "--datasets", DATASET,
            "--runs", *METHODS, *extra]  # fmt: skip


def test_cli_prints_the_leaderboard(results: Path, tmp_path: Path, capsys):
    params = _params(tmp_path)
    assert main(_cli(params, results, "--prepared", str(tmp_path / "none"))) == 0
    out = capsys.readouterr().out
    assert out.startswith("| Run | Protocol | toy Avg | toy Last-1 | Mean rank (Avg) |")
    for method in METHODS:
        assert f"| {method} |" in out or f"| **{method}** |" in out
    assert "report.html" in out


@pytest.mark.parametrize(
    ("changes", "extra", "message"),
    [
        ({"report": {"reference": "gamma"}}, [], r"report.reference: 'gamma' is not one of the runs"),
        ({"report": {"bootstrap_sample": 5}}, [], r"report: unknown key\(s\) \['bootstrap_sample'\]"),
        ({"report": {"failure_probs": [1.0]}}, [], r"report.failure_probs\[0\]: 1.0 is not allowed; must be a"),
        ({}, ["--runs", "alpha-complete", "sgma-complete", "gamma"], r"toy/gamma/seed0/metrics.json: not found"),
        ({}, ["--seeds", "0", "7"], r"alpha-complete/seed7/metrics.json: not found"),
    ],
)
def test_cli_errors_name_the_key_or_file(results: Path, tmp_path: Path, capsys, changes, extra, message):
    params = _params(tmp_path, **changes)
    with pytest.raises(SystemExit) as exited:
        errors.run(main, _cli(params, results, *extra))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert pytest.importorskip("re").search(message, err)
    assert not (results / "report.html").exists()


def test_subsets_reach_every_table(results: Path):
    build.write_report(results, [DATASET], list(METHODS), [0, 1], CONFIG)
    for table in ("leaderboard", "comparison"):
        header = (results / DATASET / f"{table}.md").read_text().splitlines()[0]
        for subset in SUBSETS:
            assert f"| {subset} |" in header


@pytest.mark.slow  # builds a whole report twice
def test_tables_that_no_longer_apply_are_removed(tmp_path: Path):
    """Runs under two protocols write protocols.*; a later report of one protocol removes them."""
    results = tmp_path / "results"
    two = {"alpha-complete": METHODS["alpha-complete"], "alpha-uniform": METHODS["beta-complete"]}
    write_results(results, methods=two, with_logs=False)
    config = ReportConfig(reference="alpha-complete", bootstrap_samples=20)
    build.write_report(results, [DATASET], list(two), [0, 1], config)
    assert (results / DATASET / "protocols.csv").exists() and (results / DATASET / "protocols.md").exists()
    build.write_report(results, [DATASET], ["alpha-complete"], [0, 1], config)
    assert not list((results / DATASET).glob("protocols.*"))
    assert (results / DATASET / "leaderboard.csv").exists()
