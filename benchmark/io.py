"""Atomic file writes: a reader never sees a half-written file.

Every file the suite writes goes through these helpers: the content is written to a
temporary file ``.<name>.<random>.tmp`` in the destination folder, flushed to disk (fsync),
then renamed over the target (``os.replace`` is atomic on POSIX and Windows for paths on one
file system), and the folder entry is flushed too. A process killed at any point (SIGKILL, power
loss) leaves either the old file or the new one, never a truncated one; at worst a stale
temporary file, which :func:`remove_stale_temps` clears on the next run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_mode(kind: str) -> int:
    """Permissions a plain ``open()``/``mkdir()`` would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if kind == "dir" else 0o666) & ~umask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    The temporary file lives beside ``path`` so the rename never crosses file systems.
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        tmp_path.chmod(default_mode("file"))  # mkstemp creates 0600
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync(path: Path) -> None:
    """Flush a file's data to the disk (the rename must not reach the disk before the bytes)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the rename itself); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer of ``path`` left beside it (``.<name>.*.tmp``, and
    ``.<name>.*`` folders of :func:`atomic_write_dir`); return them. Call it only where one process
    writes ``path`` (a run's own folder), before writing."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    if not os.path.lexists(path):  # killed inside replace_dir between its two renames: put the old one back
        old = sorted(path.parent.glob(f".{glob_escape(path.name)}.*.old"))
        if old:
            os.rename(old[-1], path)
    for stale in sorted(path.parent.glob(f".{glob_escape(path.name)}.*")):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with the glob metacharacters ``*?[`` taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf floats by ``None`` so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented strict JSON (NaN/inf become ``null``) atomically."""
    text = json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def atomic_write_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` (name -> numpy array) as a compressed ``.npz`` atomically."""
    import numpy as np

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a parse error names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` on a fresh folder beside ``path``, then swap it in for ``path``
    (:func:`replace_dir`). On any error the temporary folder is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp.chmod(default_mode("dir"))  # mkdtemp creates 0700
        write(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def replace_dir(tmp: str | Path, target: str | Path) -> None:
    """Rename the folder ``tmp`` onto ``target`` (same file system), removing an old ``target``
    only once the rename succeeded; if it fails, the old ``target`` is put back."""
    tmp, target = Path(tmp), Path(target)
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    old = tmp.with_name(tmp.name + ".old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()
