"""The DVC pipeline on the tiny config: runs, a second repro is a no-op, reruns are minimal."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from tiny import TINY_PARAMS, copy_project, run, write_params

from benchmark.config import load_params

pytestmark = pytest.mark.slow

PLUGIN = '''
from benchmark.methods import register_method
from baselines.muss import MuSS

@register_method("muss-copy")
class MuSSCopy(MuSS):
    """MuSS under a second name: a second method for the pipeline test."""
'''


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the pipeline with the tiny params and a second method from a module of its own."""
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    params = {
        **TINY_PARAMS,
        "methods": ["muss", "muss-copy"],
        "method_modules": ["my_methods"],
        "method_params": {"muss": {}, "muss-copy": {}},
    }
    return copy_project(tmp_path, params)


def test_repro_then_noop_then_minimal_reruns(project: Path):
    first = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert first == {
        "download@synthetic",
        "prepare@synthetic",
        "train@synthetic-muss-0",
        "train@synthetic-muss-copy-0",
        "evaluate@synthetic-muss-0",
        "evaluate@synthetic-muss-copy-0",
        "report",
    }
    board = (project / "results" / "synthetic" / "leaderboard.csv").read_text()
    assert board.splitlines()[0].startswith("method") and "muss-copy" in board
    assert (project / "results" / "synthetic" / "plots" / "miou_heatmap.png").stat().st_size > 1000
    assert (project / "results" / "report.html").stat().st_size > 10_000
    metrics = run(project, sys.executable, "-m", "dvc", "metrics", "show")
    assert "results/summary.json" in metrics and "synthetic.muss-copy.avg" in metrics
    plots = run(project, sys.executable, "-m", "dvc", "plots", "show", "-o", "dvc_plots")
    assert "index.html" in plots and list((project / "dvc_plots" / "static").glob("*miou_heatmap.png"))

    second = run(project, sys.executable, "-m", "dvc", "repro")
    assert _ran(second) == set()
    assert "up to date" in run(project, sys.executable, "-m", "dvc", "status")

    params = __import__("yaml").safe_load((project / "params.yaml").read_text())
    params["method_params"]["muss"] = {"decoder_dim": 8}
    write_params(project / "params.yaml", params)
    third = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert third == {"train@synthetic-muss-0", "evaluate@synthetic-muss-0", "report"}

    params["evaluate"] = {"batch_size": 3}
    write_params(project / "params.yaml", params)
    fourth = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    # the report reruns only if a metrics file changed (batch size may not change any number)
    assert fourth - {"report"} == {"evaluate@synthetic-muss-0", "evaluate@synthetic-muss-copy-0"}


def test_two_experiments_compare_with_dvc(tmp_path: Path):
    """README's recipe: commit, run an experiment with another dropout rate, compare the metrics."""
    params = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "drop_prob": None}}
    project = copy_project(tmp_path, params)
    run(project, sys.executable, "-m", "dvc", "repro")
    run(project, "git", "add", "-A")
    run(project, "git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qm", "baseline")
    tracked = run(project, "git", "ls-files", "results")
    assert set(tracked.split()) == {"results/summary.json", "results/synthetic/muss/seed0/metrics.json"}
    dvc = [sys.executable, "-m", "dvc"]
    run(project, *dvc, "exp", "run", "-n", "drop50", "-S", "train.drop_prob=[0.5,0.5,0.5]")
    table = run(project, *dvc, "exp", "show", "--md", "--only-changed", "--drop", "^(subsets|efficiency)")
    assert "drop50" in table and "synthetic.muss.avg" in table and "train.drop_prob" in table
    assert "subsets.rgb.miou" not in table
    diff = run(project, *dvc, "metrics", "diff", "--targets", "results/summary.json", "--md")
    assert "synthetic.muss.avg" in diff and "synthetic.muss.expected_p0_1" in diff


SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sen1floods11_sample"


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"real Sen1Floods11 sample not found at {SAMPLE}")
def test_real_sample_runs_every_method_through_the_pipeline(tmp_path: Path):
    """The real two-sensor chip: download (verify) -> prepare -> train -> evaluate -> report, all methods."""
    shipped = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params = {
        **TINY_PARAMS,
        "datasets": ["sen1floods11-sample"],
        "methods": shipped["methods"],
        "method_params": shipped["method_params"],
        "sen1floods11-sample": {**shipped["sen1floods11-sample"], "source_dir": str(SAMPLE), "tile_size": 32},
    }
    params["method_params"]["m3l"] = {**params["method_params"]["m3l"], "supervised_warmup": 2}
    project = copy_project(tmp_path, params)
    ran = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert {"download@sen1floods11-sample", "prepare@sen1floods11-sample", "report"} <= ran
    assert len(ran) == 3 + 2 * len(shipped["methods"])
    board = (project / "results" / "sen1floods11-sample" / "leaderboard.md").read_text()
    assert "| s1 | s2 | s1+s2 |" in board
    for method in shipped["methods"]:
        assert f"| {method} |" in board
    assert _ran(run(project, sys.executable, "-m", "dvc", "repro")) == set()
