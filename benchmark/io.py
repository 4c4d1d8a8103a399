"""Atomic file writes: a reader never sees a half-written file.

Every file the suite writes goes through these helpers: the content is written to a
temporary file ``.<name>.<8 random characters>.tmp`` in the destination folder, flushed to disk
(fsync), then renamed over the target (``os.replace`` is atomic on POSIX and Windows for paths on
one file system), and the folder entry is flushed too. Folders are built the same way under a
temporary folder of the same name pattern, every file in it flushed, then swapped in
(:func:`replace_dir`). A process killed at any point (SIGKILL, power loss) leaves either the old
file or the new one, never a truncated one; at worst a stale temporary entry, which
:func:`remove_stale_temps` clears on the next run (``.dvcignore`` keeps them out of DVC's hashes).
One process writes a given path at a time.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.errors import DamagedFileError


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        tmp_path.chmod(default_mode("file"))  # mkstemp creates 0600
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


TEMP_SUFFIX = ".tmp"  # of every temporary file and folder: .<name>.<8 characters of tempfile>.tmp
OLD_SUFFIX = ".old"  # a target folder moved aside by replace_dir: .<name>.<8 characters>.tmp.old


def is_temp_of(entry: str, name: str) -> bool:
    """Whether folder entry ``entry`` is a temporary (or moved-aside) entry of the target ``name``."""
    pattern = rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}({re.escape(OLD_SUFFIX)})?"
    return re.fullmatch(pattern, entry) is not None


def is_temp(entry: str) -> bool:
    """Whether folder entry ``entry`` is a temporary (or moved-aside) entry of any target."""
    return re.fullmatch(rf"\..+\.[a-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}({re.escape(OLD_SUFFIX)})?", entry) is not None


def make_temp_dir(path: Path) -> Path:
    """A fresh, empty temporary folder beside ``path`` (``.<name>.<random>.tmp``, the umask's permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    tmp.chmod(default_mode("dir"))  # mkdtemp creates 0700
    return tmp


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to the disk (before a rename publishes it)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` (before :func:`replace_dir` publishes it)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        _fsync_dir(Path(root))


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
    """Delete the temporary files and folders a killed writer of ``path`` left beside it (exactly
    the names :func:`atomic_write`, :func:`make_temp_dir` and :func:`replace_dir` make, see
    :func:`is_temp_of`; nothing else); return them. If ``path`` is missing but a moved-aside copy
    exists (a kill between the two renames of :func:`replace_dir`), that copy is put back first.
    Call it before writing ``path``, where no other process writes ``path`` at the same time."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(p for p in path.parent.iterdir() if is_temp_of(p.name, path.name))
    if not os.path.lexists(path):
        moved_aside = [p for p in stale if p.name.endswith(OLD_SUFFIX)]
        if moved_aside:
            os.rename(moved_aside[-1], path)
            stale.remove(moved_aside[-1])
    for entry in stale:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return stale


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
        raise DamagedFileError(f"{path}: not valid JSON ({err})") from None


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` on a fresh folder beside ``path``, then swap it in for ``path``
    (:func:`replace_dir`). On any error the temporary folder is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = make_temp_dir(path)
    try:
        write(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def replace_dir(tmp: str | Path, target: str | Path) -> None:
    """Flush the folder ``tmp`` to the disk and rename it onto ``target`` (same file system),
    removing an old ``target`` only once the rename succeeded; if it fails, the old ``target`` is
    put back. ``tmp`` comes from :func:`make_temp_dir`, so the moved-aside old ``target``
    (``<tmp>.old``) is a name :func:`remove_stale_temps` recognises."""
    tmp, target = Path(tmp), Path(target)
    fsync_tree(tmp)
    if not os.path.lexists(target):
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        return
    old = tmp.with_name(tmp.name + OLD_SUFFIX)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _fsync_dir(target.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()
