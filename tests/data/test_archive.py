"""Safe extraction of user-placed archives: unsafe members refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from benchmark.data.archive import (
    UnsafeArchiveError,
    archive_members,
    check_member_name,
    safe_extract,
    verify_checksum,
)
from benchmark.data.download import ChecksumError

GOOD = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 10, "sub/deeper/c.txt": b""}


def make_zip(
    path: Path, files: dict[str, bytes], extra: Sequence[zipfile.ZipInfo | tuple[zipfile.ZipInfo, bytes]] = ()
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sub/", b"")  # a directory entry
        for name, data in files.items():
            zf.writestr(name, data)
        for item in extra:
            info, data = item if isinstance(item, tuple) else (item, b"payload")
            zf.writestr(info, data)
    return path


def make_tar(path: Path, files: dict[str, bytes], extra: Sequence[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        tf.addfile(_dir("./"))
        tf.addfile(_dir("sub"))
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            data = b"payload" if info.isreg() else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return path


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _zip_named(name: str) -> zipfile.ZipInfo:
    return zipfile.ZipInfo(name)


def _zip_symlink(name: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"/etc/passwd"


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz"])
def test_good_archive_extracts_the_right_bytes(tmp_path: Path, suffix: str) -> None:
    maker = make_zip if suffix == ".zip" else make_tar
    archive = maker(tmp_path / f"data{suffix}", GOOD)
    out = tmp_path / "out"
    paths = safe_extract(archive, out)
    assert sorted(paths) == sorted(out / name for name in GOOD)
    for name, data in GOOD.items():
        assert (out / name).read_bytes() == data
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(GOOD)
    assert sorted(archive_members(archive)) == sorted(GOOD)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_members_filter_and_missing_member(tmp_path: Path, suffix: str) -> None:
    maker = make_zip if suffix == ".zip" else make_tar
    archive = maker(tmp_path / f"data{suffix}", GOOD)
    out = tmp_path / "out"
    assert safe_extract(archive, out, members=["sub/b.bin"]) == [out / "sub" / "b.bin"]
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == ["sub/b.bin"]
    with pytest.raises(KeyError, match=r"data.*'nope\.txt'"):
        safe_extract(archive, tmp_path / "other", members=["a.txt", "nope.txt"])
    assert not (tmp_path / "other").exists()


UNSAFE_ZIP = {
    "absolute": ("/etc/x", _zip_named("/etc/x")),
    "dotdot": ("../evil", _zip_named("../evil")),
    "nested dotdot": ("a/../../evil", _zip_named("a/../../evil")),
    "backslash absolute": ("\\evil", _zip_named("\\evil")),
    "symlink": ("link", _zip_symlink("link")),
}
UNSAFE_TAR = {
    "absolute": ("/etc/x", tarfile.TarInfo("/etc/x")),
    "dotdot": ("../evil", tarfile.TarInfo("../evil")),
    "nested dotdot": ("a/../../evil", tarfile.TarInfo("a/../../evil")),
    "symlink": ("link", _tar_special("link", tarfile.SYMTYPE, "/etc/passwd")),
    "hard link": ("hard", _tar_special("hard", tarfile.LNKTYPE, "a.txt")),
    "device": ("dev", _tar_special("dev", tarfile.CHRTYPE)),
    "fifo": ("pipe", _tar_special("pipe", tarfile.FIFOTYPE)),
}
REASON = {
    "absolute": "absolute path",
    "backslash absolute": "absolute path",
    "dotdot": "'..'",
    "nested dotdot": "'..'",
    "symlink": "symbolic link",
    "hard link": "hard link",
    "device": "device",
    "fifo": "FIFO",
}
UNSAFE = [("zip", k, *v) for k, v in UNSAFE_ZIP.items()] + [("tar", k, *v) for k, v in UNSAFE_TAR.items()]


@pytest.mark.parametrize(("kind", "why", "name", "member"), UNSAFE, ids=[f"{u[0]}-{u[1]}" for u in UNSAFE])
def test_unsafe_member_is_refused_and_nothing_written(tmp_path: Path, kind: str, why: str, name: str, member) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = (make_zip if kind == "zip" else make_tar)(tmp_path / f"bad.{kind}", GOOD, [member])
    target = work / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, target)
    assert f"{archive}: member {name!r}" in str(err.value)
    assert REASON[why] in str(err.value)
    assert not target.exists()
    assert list(work.iterdir()) == []  # no temporary folder, nothing written beside the target
    assert not (tmp_path / "evil").exists() and not (tmp_path / "x").exists()
    if why in ("symlink", "hard link", "device", "fifo"):  # not regular files
        assert name not in archive_members(archive)


def test_existing_target_is_untouched_on_failure_and_replaced_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_bytes(b"old")
    bad = make_tar(tmp_path / "bad.tar", GOOD, [tarfile.TarInfo("../evil")])
    with pytest.raises(UnsafeArchiveError):
        safe_extract(bad, target)
    # a failure while writing (a file where a folder must go), after validation passed
    clash = make_zip(tmp_path / "clash.zip", {"a.txt": b"file", "a.txt/b.txt": b"under a file"})
    with pytest.raises(OSError):
        safe_extract(clash, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"] and (target / "keep.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "clash.zip", "out"]
    good = make_zip(tmp_path / "good.zip", GOOD)
    safe_extract(good, target)
    assert not (target / "keep.txt").exists() and (target / "a.txt").read_bytes() == GOOD["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "clash.zip", "good.zip", "out"]


def test_check_member_name() -> None:
    assert check_member_name("x.zip", "a/./b//c.txt") == "a/b/c.txt"
    assert check_member_name("x.zip", "a\\b.txt") == "a/b.txt"
    assert check_member_name("x.zip", "./a.txt") == "a.txt"
    for name in ("", ".", "/etc/x", "\\x", "C:\\x", "c:x", "..", "a/..", "a\\..\\..\\x"):
        with pytest.raises(UnsafeArchiveError, match=r"x\.zip: member"):
            check_member_name("x.zip", name)


def test_unknown_archive_type(tmp_path: Path) -> None:
    path = tmp_path / "data.rar"
    path.write_bytes(b"Rar!")
    with pytest.raises(ValueError, match=r"data\.rar.*unknown archive type"):
        safe_extract(path, tmp_path / "out")
    corrupt = tmp_path / "data.zip"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"data\.zip"):
        safe_extract(corrupt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_verify_checksum(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"some bytes")
    md5, sha = hashlib.md5(b"some bytes").hexdigest(), hashlib.sha256(b"some bytes").hexdigest()
    verify_checksum(path, md5=md5)
    verify_checksum(path, md5=md5.upper(), sha256=sha)
    with pytest.raises(ChecksumError, match=rf"f\.bin: md5 mismatch \(expected {'0' * 32}, got {md5}\)"):
        verify_checksum(path, md5="0" * 32)
    with pytest.raises(ChecksumError, match=rf"f\.bin: sha256 mismatch \(expected {'f' * 64}, got {sha}\)"):
        verify_checksum(path, md5=md5, sha256="f" * 64)
    with pytest.raises(ValueError):
        verify_checksum(path)


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.8])  # inside the noise member
def test_truncated_archive_names_it_and_writes_nothing(tmp_path: Path, suffix: str, keep: float) -> None:
    """An archive cut short (an interrupted copy): listing and extracting both name it; nothing written."""
    maker = make_zip if suffix == ".zip" else make_tar
    big = {**GOOD, "sub/noise.bin": np.random.default_rng(0).bytes(50_000)}  # incompressible: the cut lands in data
    data = maker(tmp_path / f"whole{suffix}", big).read_bytes()
    archive = tmp_path / f"cut{suffix}"
    archive.write_bytes(data[: int(len(data) * keep)])
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_bytes(b"old")
    pattern = rf"{re.escape(str(archive))}: not a readable (zip|tar) archive"
    if suffix != ".tar":  # a plain tar has no index: its listing stops at the cut, only reading the data fails
        with pytest.raises(ValueError, match=pattern):
            archive_members(archive)
    with pytest.raises(ValueError, match=pattern):
        safe_extract(archive, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"] and (target / "keep.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"whole{suffix}", f"cut{suffix}", "out"])


def test_zip_with_garbled_member_data_names_it(tmp_path: Path) -> None:
    """The central directory is intact but a member's compressed bytes are not (zlib or CRC error)."""
    archive = make_zip(tmp_path / "data.zip", {"big.bin": bytes(range(256)) * 400})
    data = bytearray(archive.read_bytes())
    start = data.index(b"big.bin") + len("big.bin")  # the local header's name, then the compressed data
    for i in range(start + 10, start + 60):
        data[i] ^= 0x5A
    archive.write_bytes(bytes(data))
    assert archive_members(archive) == ["big.bin"]  # listing reads only the directory
    with pytest.raises(ValueError, match=rf"{re.escape(str(archive))}: not a readable zip archive"):
        safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zip"]
