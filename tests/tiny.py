"""The tiny configuration of the whole pipeline that tests (and the fault harness, tools/faults) run in
seconds, and a copy of the project."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

from benchmark.layout import CONFIGS_DIR

__all__ = [
    "TINY_PARAMS",
    "columns",
    "download_and_prepare",
    "repro_on_archive",
    "configure_runs",
    "copy_project",
    "dataset_params",
    "doc_lines",
    "run",
    "shell",
    "write_params",
    "zip_tree",
]

REPO = Path(__file__).resolve().parents[1]

# A complete tiny configuration of the whole pipeline that runs in seconds on a CPU: what the tests
# use and the fault cases run (tools/faults).
TINY_PARAMS: dict[str, Any] = {
    "datasets": ["synthetic"],
    "runs": ["muss-uniform"],
    "seeds": [0],
    "method_modules": [],
    "method_params": {"muss": {}},
    "synthetic": {"seed": 0, "tile_size": 32, "num_train": 16, "num_test": 6},
    "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 2, "decoder_dim": 16, "lr": 0.003},
    "evaluate": {"batch_size": 4},
    "scenarios": {
        "seed": 0,
        "block_size": 8,
        "block_missing": [0.5],
        "pixel_missing": [0.25],
        "gaussian": [0.5],
        "salt_pepper": [0.1],
        "speckle": [0.5],
    },
    "report": {"reference": "muss-uniform", "bootstrap_samples": 200},
}


def configure_runs(params: Path) -> Path:
    """Run the configure stage on ``params`` into ``<its folder>/configs``: that folder (one
    ``<run>.json`` per listed run, what ``train --config`` and ``evaluate --config`` read)."""
    from benchmark import configure

    out = params.parent / CONFIGS_DIR
    with contextlib.redirect_stdout(io.StringIO()):
        if configure.main(["--params", str(params), "--out", str(out)]) != 0:
            raise RuntimeError(f"{params}: the configure stage failed")
    return out


def dataset_params(name: str, section: dict | None) -> dict:
    """TINY_PARAMS for data set ``name`` alone with its ``section``: a whole file the schema accepts."""
    return {**TINY_PARAMS, "datasets": [name], name: section}


def zip_tree(folder: Path, archive: Path, skip: tuple[str, ...] = ()) -> Path:
    """``archive`` (a zip, its folder made) of every file under ``folder`` as ``<path relative to
    folder>``, but those whose member path ends with one of ``skip``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            member = path.relative_to(folder).as_posix()
            if path.is_file() and not member.endswith(skip):
                zf.write(path, member)
    return archive


def download_and_prepare(
    tmp_path: Path, name: str, section: dict, raw: Path | None = None, out: str = "prepared"
) -> Path:
    """The download and prepare stages of data set ``name`` with its params ``section`` (written
    to ``tmp_path/params_<out>.yaml``), raw files in ``raw`` (default ``tmp_path/raw``); the
    prepared folder ``tmp_path/<out>``."""
    from benchmark import download, prepare

    params = write_params(tmp_path / f"params_{out}.yaml", dataset_params(name, section))
    common = ["--dataset", name, "--params", str(params), "--raw-dir", str(raw or tmp_path / "raw")]
    assert download.main(common) == 0
    assert prepare.main([*common, "--out", str(tmp_path / out)]) == 0
    return tmp_path / out


def repro_on_archive(tmp_path: Path, name: str, archive: Path, runs: list[str], section: dict) -> tuple[Path, str]:
    """``dvc repro`` of a project copy (in ``tmp_path/project``) with data set ``name`` alone
    (params ``section``), its test-made ``archive`` placed in ``data/raw/<name>/``, and ``runs``
    (tiny, batch 2, the first run the report's reference): the project and dvc's output."""
    from benchmark.protocol import parse_run

    params = {
        **TINY_PARAMS,
        "datasets": [name],
        "runs": runs,
        "method_params": {parse_run(r)[0]: {} for r in runs},
        name: section,
        "train": {**TINY_PARAMS["train"], "batch_size": 2},
        "evaluate": {"batch_size": 2},
        "report": {**TINY_PARAMS["report"], "reference": runs[0]},
    }
    project = copy_project(tmp_path / "project", params)
    (project / "data" / "raw" / name).mkdir(parents=True)
    shutil.copy(archive, project / "data" / "raw" / name / archive.name)
    return project, run(project, sys.executable, "-m", "dvc", "repro")


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


def run(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run a command in ``cwd`` with this interpreter's scripts on PATH (and ``env`` added to the
    environment); its output, or a failed assert (``check``; else the output of a failure too)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path, **(env or {})}
    env.pop("PYTHONPATH", None)  # imports resolve from cwd, as for a user (python -m puts cwd first)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 or not check, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


WIDE = {"COLUMNS": "400"}  # DVC's tables fit the terminal: wide enough that no column name is cut


def doc_lines(doc: str, heading: str) -> list[str]:
    """The lines of the first ``bash`` block after ``heading`` in ``doc`` (a path under the repository)."""
    text = (REPO / doc).read_text(encoding="utf-8").split(heading + "\n", 1)[1]
    return [line for line in text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines() if line.strip()]


def shell(project: Path, line: str) -> str:
    """One documented command line as a shell runs it: leading ``NAME=value`` words set the
    environment, ``#`` starts a comment, ``dvc`` is this interpreter's."""
    words, env = shlex.split(line, comments=True), dict(WIDE)
    while re.match(r"^[A-Z_]+=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words[0] == "dvc":
        words = [sys.executable, "-m", "dvc", *words[1:]]
    return run(project, *words, env=env)


def columns(table: str) -> list[str]:
    """The column names of a table DVC printed (Markdown or its plain format): its header row's words."""
    header = next(line for line in table.splitlines() if "Experiment" in line)
    return re.findall(r"[^\s|│┃]+", header)
