"""Data sets distributed as archives a user obtains by hand (ISPRS, DFC2023).

The user places the official archives in ``data/raw/<name>/``. The ``download`` stage checks
that every archive is there (a missing one is named with where to get it), verifies each one's
MD5 (the published checksum where one is known; otherwise the checksum recorded the first time
the archive was verified, so a later change of the file is still caught; an archive whose size
and modification time are those recorded is not hashed again), checks that it holds a file (by
name) the official archive holds, extracts it safely (:func:`benchmark.data.archive.safe_extract`)
into ``data/raw/<name>/extracted/<archive stem>/`` and writes ``manifest.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from benchmark.data.archive import ARCHIVE_SUFFIXES, archive_members, safe_extract
from benchmark.data.download import ChecksumError, md5_file
from benchmark.data.source import DatasetSource
from benchmark.io import atomic_write_json, read_json
from benchmark.layout import MANIFEST_FILE

EXTRACTED = "extracted"


@dataclass(frozen=True)
class ManualArchive:
    """One archive of the official distribution.

    Args:
        filename: its name as distributed (e.g. ``4_Ortho_RGBIR.zip``).
        contains: a member the official archive holds (recognises a wrong file; matched by file
            name, so an archive re-packed under another top folder is still accepted), or a
            folder (ending in ``/``) some member lies under, where no file name is known.
        md5: the published MD5 (hex), or None when none is published (trust on first use).
    """

    filename: str
    contains: str
    md5: str | None = None

    def found_in(self, members: list[str]) -> bool:
        """Whether ``members`` (an archive's member paths) hold :attr:`contains`."""
        if self.contains.endswith("/"):
            return any(f"/{self.contains}" in f"/{member}" for member in members)
        wanted = PurePosixPath(self.contains).name  # any folder inside the archive will do
        return any(PurePosixPath(member).name == wanted for member in members)

    @property
    def stem(self) -> str:
        """Folder name of its extracted content: the file name without the archive suffix."""
        for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):  # ".tar.gz" before ".gz"-less ".tar"
            if self.filename.lower().endswith(suffix):
                return self.filename[: -len(suffix)]
        return self.filename


def _recorded_files(manifest_path: Path) -> dict[str, dict]:
    """``files`` of a manual data set's manifest ({} when there is none); a truncated or garbled
    manifest is a ValueError naming it (it holds the checksums recorded on first use: never
    silently dropped)."""
    if not manifest_path.is_file():
        return {}
    manifest = read_json(manifest_path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise ValueError(
            f"{manifest_path}: no valid 'files' mapping (corrupt manifest); restore it, or delete it to verify "
            f"the archives again (checksums recorded on first use are then recorded anew)"
        )
    return files


class ManualArchiveSource(DatasetSource):
    """A :class:`DatasetSource` whose raw data are archives placed by the user.

    Subclasses set ``how_to_obtain`` (one sentence shown when an archive is missing) and
    implement :meth:`archives` (the archives the current params need).
    """

    how_to_obtain: ClassVar[str] = ""

    def archives(self) -> list[ManualArchive]:
        raise NotImplementedError

    def extracted(self, archive: ManualArchive) -> Path:
        """Folder holding ``archive``'s extracted members."""
        return self.raw_dir / EXTRACTED / archive.stem

    def download(self) -> Path:
        archives = self.archives()
        missing = [a for a in archives if not (self.raw_dir / a.filename).is_file()]
        if missing:
            lines = [f"  {self.raw_dir / a.filename}" for a in missing]
            raise FileNotFoundError(
                f"{self.name}: {len(missing)} archive(s) missing:\n" + "\n".join(lines) + "\n"
                f"{self.how_to_obtain} ({self.homepage}). Place the archives, unchanged, in {self.raw_dir}/ "
                f"and run `dvc repro` again (or `python -m benchmark.download --dataset {self.name}` alone)."
            )
        manifest_path = self.raw_dir / MANIFEST_FILE
        recorded = _recorded_files(manifest_path)
        # archives the current params do not use keep their record (e.g. the other label variant)
        files = {name: entry for name, entry in recorded.items() if (self.raw_dir / name).is_file()}
        for archive in archives:
            path = self.raw_dir / archive.filename
            previous = recorded.get(archive.filename, {})
            stat = path.stat()
            unchanged = previous.get("size") == stat.st_size and previous.get("mtime_ns") == stat.st_mtime_ns
            md5 = previous["md5"] if unchanged and "md5" in previous else md5_file(path)
            expected, origin = (archive.md5, "published") if archive.md5 else (previous.get("md5"), "recorded")
            if expected and md5 != expected:  # first: a truncated copy is named as such, not as unreadable
                raise ChecksumError(
                    f"{path}: MD5 {md5}, expected {expected} ({origin} checksum): the file is corrupt (e.g. a "
                    f"truncated download) or not the official {archive.filename}; obtain it again from {self.homepage}"
                )
            wanted = archive.contains if archive.contains.endswith("/") else PurePosixPath(archive.contains).name
            try:
                members = archive_members(path)
            except ValueError as err:  # truncated or not an archive, with no checksum to tell
                raise ValueError(f"{err}; obtain {archive.filename} again from {self.homepage}") from err
            if not archive.found_in(members):
                raise ValueError(
                    f"{path}: holds no file {wanted!r} (official path {archive.contains!r}), so it is not the "
                    f"official {archive.filename} ({self.homepage})"
                )
            target = self.extracted(archive)
            if previous.get("md5") != md5 or not target.is_dir():
                safe_extract(path, target)
            files[archive.filename] = {
                "md5": md5,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "checksum": "published" if archive.md5 else "recorded on first use",
                "extracted": str(target.relative_to(self.raw_dir)),
            }
        atomic_write_json(manifest_path, {"dataset": self.name, "files": dict(sorted(files.items()))})
        return self.raw_dir

    def check_present(self, root: Path, paths: Iterable[Path], what: str) -> None:
        """A FileNotFoundError listing every one of ``paths`` that is not a file (the first 20 and a
        count): ``<root>: <n> file(s) <what>``, then where to obtain the archive again. Called
        before any pixel is read."""
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
            raise FileNotFoundError(
                f"{root}: {len(missing)} file(s) {what}:\n  {shown}\nthe archive is incomplete; "
                f"{self.how_to_obtain} again ({self.homepage})"
            )

    def check_downloaded(self) -> None:
        """Before preparing: the manifest must list every archive the params need."""
        manifest_path = self.raw_dir / MANIFEST_FILE
        files = _recorded_files(manifest_path)
        absent = [a.filename for a in self.archives() if a.filename not in files or not self.extracted(a).is_dir()]
        if absent:
            raise FileNotFoundError(
                f"{manifest_path}: {', '.join(absent)} not verified and extracted yet; "
                f"run `dvc repro` (its download stage, `python -m benchmark.download --dataset {self.name}`, first)"
            )
