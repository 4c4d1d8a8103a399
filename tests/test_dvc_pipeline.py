"""The DVC pipeline on the tiny config: runs, a second repro is a no-op, reruns are minimal."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from tiny import TINY_PARAMS, copy_project, run, write_params

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
        "prepare@synthetic",
        "train@synthetic-muss-0",
        "train@synthetic-muss-copy-0",
        "evaluate@synthetic-muss-0",
        "evaluate@synthetic-muss-copy-0",
        "report@synthetic",
    }
    board = (project / "results" / "synthetic" / "leaderboard.csv").read_text()
    assert board.splitlines()[0].startswith("method") and "muss-copy" in board
    assert (project / "results" / "synthetic" / "miou_heatmap.png").stat().st_size > 1000
    assert "muss-copy" in run(project, sys.executable, "-m", "dvc", "metrics", "show")

    second = run(project, sys.executable, "-m", "dvc", "repro")
    assert _ran(second) == set()
    assert "up to date" in run(project, sys.executable, "-m", "dvc", "status")

    params = __import__("yaml").safe_load((project / "params.yaml").read_text())
    params["method_params"]["muss"] = {"decoder_dim": 8}
    write_params(project / "params.yaml", params)
    third = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert third == {"train@synthetic-muss-0", "evaluate@synthetic-muss-0", "report@synthetic"}

    params["evaluate"] = {"batch_size": 3}
    write_params(project / "params.yaml", params)
    fourth = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    # the report reruns only if a metrics file changed (batch size may not change any number)
    assert fourth - {"report@synthetic"} == {"evaluate@synthetic-muss-0", "evaluate@synthetic-muss-copy-0"}
