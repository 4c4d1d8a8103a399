"""The DVC pipeline on the tiny config: runs, a second repro is a no-op, reruns are minimal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import REPO, TINY_PARAMS, write_params

pytestmark = pytest.mark.slow

PLUGIN = '''
from benchmark.methods import register_method
from baselines.muss import MuSS

@register_method("muss-copy")
class MuSSCopy(MuSS):
    """MuSS under a second name: a second method for the pipeline test."""
'''


def _run(cwd: Path, *args: str) -> str:
    env = dict(
        os.environ,
        DVC_NO_ANALYTICS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(cwd),
    )
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the pipeline (code, dvc.yaml, .dvc config) with the tiny params, as a git repo."""
    for name in ("benchmark", "baselines"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    params = {
        **TINY_PARAMS,
        "methods": ["muss", "muss-copy"],
        "method_modules": ["my_methods"],
        "method_params": {"muss": {}, "muss-copy": {}},
    }
    write_params(tmp_path / "params.yaml", params)
    _run(tmp_path, "git", "init", "-q")
    return tmp_path


def test_repro_then_noop_then_minimal_reruns(project: Path):
    first = _ran(_run(project, sys.executable, "-m", "dvc", "repro"))
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
    assert "muss-copy" in _run(project, sys.executable, "-m", "dvc", "metrics", "show")

    second = _run(project, sys.executable, "-m", "dvc", "repro")
    assert _ran(second) == set()
    assert "up to date" in _run(project, sys.executable, "-m", "dvc", "status")

    params = __import__("yaml").safe_load((project / "params.yaml").read_text())
    params["method_params"]["muss"] = {"decoder_dim": 8}
    write_params(project / "params.yaml", params)
    third = _ran(_run(project, sys.executable, "-m", "dvc", "repro"))
    assert third == {"train@synthetic-muss-0", "evaluate@synthetic-muss-0", "report@synthetic"}

    params["evaluate"] = {"batch_size": 3}
    write_params(project / "params.yaml", params)
    fourth = _ran(_run(project, sys.executable, "-m", "dvc", "repro"))
    # the report reruns only if a metrics file changed (batch size may not change any number)
    assert fourth - {"report@synthetic"} == {"evaluate@synthetic-muss-0", "evaluate@synthetic-muss-copy-0"}
