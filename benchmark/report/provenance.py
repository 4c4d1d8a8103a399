"""Provenance of a report: the code (git commit), configuration (params.yaml), software
(package versions), hardware and data (checksums) the numbers came from.

Everything here is deterministic for a fixed checkout, environment and data: no timestamps.
Missing pieces (no git, no GPU, a data set not prepared) give ``None`` or empty values, never an
exception, so a report always renders.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.layout import MANIFEST_FILE, PREPARED_DIR, RAW_DIR

PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "matplotlib",
    "dvc",
    "rasterio",
    "scikit-learn",
)
CHUNK = 1 << 20  # bytes read at a time when hashing (1 MiB)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    """Stdout of ``git <args>`` in ``repo`` (stripped), or ``None`` when git fails or is missing."""
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


def git_info(repo: Path = Path(".")) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None, "describe": str or None}``; ``dirty``: some
    file outside ``results/`` and ``dvc.lock`` differs from the commit or is new and not ignored."""
    commit = _git(repo, "rev-parse", "HEAD") or None
    if commit is None:
        return {"commit": None, "dirty": None, "describe": None}
    # dirty = the code or configuration differs from the commit: changed tracked files or new files
    # git does not ignore (a method in user_methods/), but not what the pipeline itself writes
    # (results/, whose metrics are committed, and dvc.lock)
    status = _git(repo, "status", "--porcelain", "--", ".", ":(exclude)results", ":(exclude)dvc.lock")
    describe = _git(repo, "describe", "--always", "--dirty") or None
    return {"commit": commit, "dirty": None if status is None else bool(status), "describe": describe}


def package_versions() -> dict[str, str]:
    """``{name: version}``: Python itself and each of :data:`PACKAGES` that is installed."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _memory_gb() -> float | None:
    """Physical memory in GiB (``os.sysconf``, else ``/proc/meminfo``), ``None`` when unknown."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 1)  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpus() -> list[str]:
    """Names of the CUDA devices torch sees (``[]`` without torch or CUDA).

    torch is imported only when it is already loaded or installed, so this stays cheap otherwise.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return []
    try:
        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not break the report
        return []


def hardware() -> dict[str, Any]:
    """Platform, CPU count, memory (GiB) and GPU names of this machine."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "gpus": _gpus(),
    }


def data_checksums(dataset: str, prepared_root: Path, raw_root: Path) -> dict[str, Any]:
    """``{"prepared": {relative path: sha256}, "raw_manifest_sha256": sha256 or None}``.

    ``prepared`` lists every file under ``prepared_root/<dataset>`` (POSIX relative paths, sorted);
    it is ``{}`` when that folder does not exist.
    """
    folder = Path(prepared_root) / dataset
    prepared: dict[str, str] = {}
    if folder.is_dir():
        files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
        for path in files:
            prepared[path.relative_to(folder).as_posix()] = sha256_file(path)
    manifest = Path(raw_root) / dataset / MANIFEST_FILE
    return {"prepared": prepared, "raw_manifest_sha256": sha256_file(manifest) if manifest.is_file() else None}


def collect(
    params_path: Path,
    datasets: Sequence[str],
    prepared_root: Path = PREPARED_DIR,
    raw_root: Path = RAW_DIR,
    repo: Path = Path("."),
) -> dict[str, Any]:
    """Provenance of a report.

    Returns ``{"git": {"commit", "dirty", "describe"}, "params": text of params.yaml ("" when
    missing), "packages": {name: version}, "hardware": {...}, "data": {dataset: {"prepared":
    {file: sha256}, "raw_manifest_sha256": sha256 or None}}}``.
    """
    params_path = Path(params_path)
    params = params_path.read_text(encoding="utf-8") if params_path.is_file() else ""
    return {
        "git": git_info(Path(repo)),
        "params": params,
        "packages": package_versions(),
        "hardware": hardware(),
        "data": {name: data_checksums(name, Path(prepared_root), Path(raw_root)) for name in datasets},
    }
