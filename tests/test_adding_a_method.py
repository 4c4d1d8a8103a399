"""docs/adding_a_method.md, followed literally on a finished tiny workspace: its code block becomes
user_methods/gated_mean.py in a copy of the project, its params block is merged into params.yaml,
only the new method's stages (and configure and the report) are stale, its commands run as printed,
and the new method has its row in the leaderboard."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from tiny import REPO, TINY_PARAMS, copy_project, doc_lines, run, shell, write_params

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

    project = copy_project(tmp_path, TINY_PARAMS)
    shell(project, "dvc repro")  # a finished workspace, before the method is added
    (project / path).write_text(code)
    write_params(project / "params.yaml", params)
    # only the new runs' stages are stale, besides configure (params.yaml) and the report (its runs)
    added = {f"{stage}@synthetic-{r}-0" for stage in ("train", "evaluate") for r in additions["runs"] + variant["runs"]}
    status = run(project, sys.executable, "-m", "dvc", "status", "--json")
    assert set(json.JSONDecoder().raw_decode(status)[0]) == {"configure", *added, "report"}
    repro, show = doc_lines("docs/adding_a_method.md", "## 3. Run it")
    assert set(re.findall(r"Running stage '([^']+)'", shell(project, repro))) == {"configure", *added, "report"}
    board = shell(project, show)
    overview = (project / "results" / "report" / "synthetic" / "leaderboard.md").read_text()
    assert board.strip() == overview.strip()
    shown = ((f"{name}-complete", "complete", name), (f"{name}-uniform", "uniform", name))
    for run_, protocol, method in (*shown, (f"{wide}-complete", "complete", wide)):
        row = next((line for line in board.splitlines() if line.startswith(f"| {run_} |")), None)
        assert row is not None, board
        assert [c.strip() for c in row.split("|")[2:4]] == [protocol, "reference"]  # protocol and family columns
        metrics_file = project / "results" / "runs" / "synthetic" / run_ / "seed0" / "metrics.json"
        metrics = yaml.safe_load(metrics_file.read_text())
        assert metrics["method"] == method and metrics["protocol"]["name"] == protocol and len(metrics["subsets"]) == 7
        assert (project / "models" / "synthetic" / run_ / "seed0" / "model.pt").exists()
    (diagnose,) = re.findall(r"`(python -m benchmark\.diagnose [^`]+)`", DOC.read_text(encoding="utf-8"))
    assert f"--run-name {name}-complete" in diagnose
    assert "gradient" in shell(project, diagnose).lower()
