"""Safe extraction and checksum checks of archives a user placed by hand.

:func:`safe_extract` checks every member of a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` before writing
anything (no absolute paths, no ``..``, no links, devices or other special files), streams the
files into a temporary folder beside the target and renames it into place only once complete.
"""

from __future__ import annotations

import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from benchmark.data.download import ChecksumError, md5_file, sha256_file
from benchmark.errors import UserError
from benchmark.io import atomic_write_dir, remove_stale_temps

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (".zip", *TAR_SUFFIXES)  # what safe_extract reads

# (name as in the archive, normalised relative path or None for the archive's root folder, is a directory, opener)
_Member = tuple[str, str | None, bool, Callable[[], IO[bytes]]]


# what a truncated or garbled archive raises while its members are listed or read
_CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


class UnsafeArchiveError(UserError, ValueError):
    """An archive member that would write outside the target or is not a plain file or folder."""


def check_member_name(archive: str | Path, name: str) -> str:
    """The member ``name`` as a normalised relative posix path; :class:`UnsafeArchiveError` for an
    absolute path (``/x``, ``\\x``, ``C:x``), a ``..`` component or an empty name."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a '..' component (would write outside the target)")
    if not parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty name")
    return "/".join(parts)


def _is_root_dir(name: str) -> bool:
    """``./`` and the like: the archive's own top folder, harmless and skipped."""
    return not name.startswith(("/", "\\")) and all(p in ("", ".") for p in name.replace("\\", "/").split("/"))


def _kind(archive: Path) -> str:
    lower = archive.name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    raise ValueError(f"{archive}: unknown archive type (expected .zip, {', '.join(TAR_SUFFIXES)})")


@contextmanager
def _open_members(archive: Path) -> Iterator[list[_Member]]:
    """Every member of ``archive``, checked; :class:`UnsafeArchiveError` names the first bad one."""
    kind = _kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                yield [_zip_member(archive, zf, info) for info in zf.infolist()]
        else:
            with tarfile.open(archive, "r:*") as tf:
                yield [_tar_member(archive, tf, info) for info in tf.getmembers()]
    except _CORRUPT as err:
        raise ValueError(f"{archive}: not a readable {kind} archive ({type(err).__name__}: {err})") from err


def _zip_member(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    name, ftype = info.filename, stat.S_IFMT(info.external_attr >> 16)
    if ftype == stat.S_IFLNK:
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a symbolic link")
    if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a device or other special file")
    is_dir = info.is_dir() or ftype == stat.S_IFDIR
    rel = None if is_dir and _is_root_dir(name) else check_member_name(archive, name)
    return name, rel, is_dir, lambda: zf.open(info)


def _tar_member(archive: Path, tf: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    name = info.name
    if info.issym():
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a symbolic link")
    if info.islnk():
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a hard link")
    if info.ischr() or info.isblk():
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a device file")
    if info.isfifo():
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a FIFO")
    if not (info.isreg() or info.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a special file (tar type {info.type!r})")
    rel = None if info.isdir() and _is_root_dir(name) else check_member_name(archive, name)

    def opener() -> IO[bytes]:
        f = tf.extractfile(info)
        assert f is not None  # a regular file
        return f

    return name, rel, info.isdir(), opener


def archive_members(archive: str | Path) -> list[str]:
    """Names (as in the archive) of its regular-file members, in archive order (a ValueError names
    an archive that cannot be read: truncated, garbled or not an archive)."""
    archive = Path(archive)
    kind = _kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                return [
                    i.filename
                    for i in zf.infolist()
                    if not i.is_dir() and stat.S_IFMT(i.external_attr >> 16) in (0, stat.S_IFREG)
                ]
        with tarfile.open(archive, "r:*") as tf:
            return [m.name for m in tf.getmembers() if m.isreg()]
    except _CORRUPT as err:
        raise ValueError(f"{archive}: not a readable {kind} archive ({type(err).__name__}: {err})") from err


def safe_extract(archive: str | Path, target: str | Path, *, members: Iterable[str] | None = None) -> list[Path]:
    """Extract ``archive`` (or only ``members``, named as in the archive) into the folder ``target``,
    replacing it only on success; return the extracted file paths. Nothing is written if any
    member is unsafe (:class:`UnsafeArchiveError`) or a requested member is missing (``KeyError``)."""
    archive, target = Path(archive), Path(target)
    with _open_members(archive) as checked:
        if members is not None:
            by_name = {m[0]: m for m in checked}
            wanted = list(members)
            missing = [name for name in wanted if name not in by_name]
            if missing:
                raise KeyError(f"{archive}: no member named {', '.join(map(repr, missing))}")
            checked = [by_name[name] for name in dict.fromkeys(wanted)]
        written: dict[str, None] = {}

        def copy_members(tmp: Path) -> None:
            for _, rel, is_dir, opener in checked:
                if rel is None:
                    continue
                out = tmp / rel
                if is_dir:
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with opener() as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                written[rel] = None

        remove_stale_temps(target)  # the half-extracted folder of a killed run (possibly GBs)
        atomic_write_dir(target, copy_members)
    return [target / rel for rel in written]


def verify_checksum(path: str | Path, *, md5: str | None = None, sha256: str | None = None) -> None:
    """Check a file's MD5 and/or SHA-256 (hex); :class:`ChecksumError` names the file, expected and got."""
    if md5 is None and sha256 is None:
        raise ValueError(f"{path}: verify_checksum needs md5 or sha256")
    for algorithm, expected, compute in (("md5", md5, md5_file), ("sha256", sha256, sha256_file)):
        if expected is None:
            continue
        got = compute(path)
        if got != expected.strip().lower():
            raise ChecksumError(f"{path}: {algorithm} mismatch (expected {expected}, got {got})")
