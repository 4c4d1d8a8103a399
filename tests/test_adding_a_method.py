"""docs/adding_a_method.md, followed literally: its code block becomes user_methods/gated_mean.py
in a copy of the project, its params block is merged into params.yaml, the stages' commands run,
and the new method has its row in the leaderboard."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from tiny import REPO, TINY_PARAMS, copy_project, run

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "adding_a_method.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def _merge(params: dict, additions: dict) -> dict:
    """What the doc asks of the user: append to the lists, add to the mappings."""
    merged = dict(params)
    for key, value in additions.items():
        if isinstance(value, list):
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = {**merged.get(key, {}), **value}
    return merged


def test_the_documented_method_trains_evaluates_and_reaches_the_leaderboard(tmp_path: Path):
    (code,) = _blocks("python")
    params_block, variant_block = _blocks("yaml")  # step 2, then "A variant instead of a new file"
    path = re.search(r"## 1\. Write the method: `([^`]+\.py)`", DOC.read_text(encoding="utf-8")).group(1)
    assert len(code.splitlines()) <= 40, "the worked example should stay about 30 lines"
    additions = yaml.safe_load(params_block)
    (name,) = additions["method_params"]
    assert additions["runs"] == [f"{name}-complete", f"{name}-uniform"]
    params = _merge(TINY_PARAMS, additions)
    variant = yaml.safe_load(variant_block)
    (wide,) = variant["variants"]
    assert variant["variants"][wide]["method"] == name and variant["runs"] == [f"{wide}-complete"]
    params = _merge(params, variant)

    project = copy_project(tmp_path, params)
    (project / path).write_text(code)
    python = sys.executable
    run(project, python, "-m", "benchmark.prepare", "--dataset", "synthetic")
    for run_ in params["runs"]:  # the commands of the dvc.yaml stages
        args = ["--dataset", "synthetic", "--run-name", run_, "--seed", "0", "--no-progress"]
        run(project, python, "-m", "benchmark.train", *args)
        run(project, python, "-m", "benchmark.evaluate", *args)
    overview = run(project, python, "-m", "benchmark.report", "--params", "params.yaml")
    board = (project / "results" / "report" / "synthetic" / "leaderboard.md").read_text()
    shown = ((f"{name}-complete", "complete", name), (f"{name}-uniform", "uniform", name))
    for run_, protocol, method in (*shown, (f"{wide}-complete", "complete", wide)):
        assert f"| {run_} |" in overview
        row = next((line for line in board.splitlines() if line.startswith(f"| {run_} |")), None)
        assert row is not None, board
        assert [c.strip() for c in row.split("|")[2:4]] == [protocol, "reference"]  # protocol and family columns
        metrics_file = project / "results" / "runs" / "synthetic" / run_ / "seed0" / "metrics.json"
        metrics = yaml.safe_load(metrics_file.read_text())
        assert metrics["method"] == method and metrics["protocol"]["name"] == protocol and len(metrics["subsets"]) == 7
        assert (project / "models" / "synthetic" / run_ / "seed0" / "model.pt").exists()
