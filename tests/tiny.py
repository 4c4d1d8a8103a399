"""The tiny configuration of the whole pipeline that tests run in seconds, and a copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from benchmark.faults.common import TINY_PARAMS  # lives in the package: the fault cases run it too

__all__ = ["TINY_PARAMS", "copy_project", "dataset_params", "run", "write_params"]

REPO = Path(__file__).resolve().parents[1]


def dataset_params(name: str, section: dict | None) -> dict:
    """TINY_PARAMS for data set ``name`` alone with its ``section``: a whole file the schema accepts."""
    return {**TINY_PARAMS, "datasets": [name], name: section}


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def copy_project(dest: Path, params: dict) -> Path:
    """A copy of the pipeline (code, dvc.yaml, .dvc config, user_methods/) with ``params`` as
    params.yaml, as a fresh git repository: what a user has after cloning."""
    for name in ("benchmark", "baselines", "floors", "user_methods"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    write_params(dest / "params.yaml", params)
    run(dest, "git", "init", "-q")
    return dest


def run(cwd: Path, *args: str) -> str:
    """Run a command in ``cwd`` with this interpreter's scripts on PATH; its output, or a failed assert."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)  # imports resolve from cwd, as for a user (python -m puts cwd first)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr
