"""Data sets distributed as archives a user obtains by hand (ISPRS, DFC2023).

The user places the official archives in ``data/raw/<name>/``. The ``download`` stage checks
that every archive is there (a missing one is named with where to get it), verifies each one's
MD5 (the published checksum where one is known; otherwise the checksum recorded the first time
the archive was verified, so a later change of the file is still caught), checks that it holds
a file (by name) the official archive holds, extracts it safely (:func:`benchmark.data.archive.safe_extract`)
into ``data/raw/<name>/extracted/<archive stem>/`` and writes ``manifest.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from benchmark.data.archive import archive_members, safe_extract
from benchmark.data.download import ChecksumError, md5_file
from benchmark.data.source import MANIFEST_NAME, DatasetSource
from benchmark.io import atomic_write_json, read_json

EXTRACTED = "extracted"


@dataclass(frozen=True)
class ManualArchive:
    """One archive of the official distribution.

    Args:
        filename: its name as distributed (e.g. ``4_Ortho_RGBIR.zip``).
        contains: a member the official archive holds (recognises a wrong file; matched by file
            name, so an archive re-packed under another top folder is still accepted).
        md5: the published MD5 (hex), or None when none is published (trust on first use).
    """

    filename: str
    contains: str
    md5: str | None = None

    @property
    def stem(self) -> str:
        """Folder name of its extracted content: the file name without the archive suffix."""
        name = self.filename
        for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar", ".zip"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name


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
                f"and run `dvc repro download@{self.name}` again."
            )
        manifest_path = self.raw_dir / MANIFEST_NAME
        recorded = read_json(manifest_path).get("files", {}) if manifest_path.is_file() else {}
        files = {}
        for archive in archives:
            path = self.raw_dir / archive.filename
            md5 = md5_file(path)
            previous = recorded.get(archive.filename, {})
            expected, origin = (archive.md5, "published") if archive.md5 else (previous.get("md5"), "recorded")
            if expected and md5 != expected:
                raise ChecksumError(
                    f"{path}: MD5 {md5}, expected {expected} ({origin} checksum): the file is corrupt or not the "
                    f"official {archive.filename}; obtain it again from {self.homepage}"
                )
            wanted = PurePosixPath(archive.contains).name  # any folder inside the archive will do
            if not any(PurePosixPath(member).name == wanted for member in archive_members(path)):
                raise ValueError(
                    f"{path}: holds no file {wanted!r} (official path {archive.contains!r}), so it is not the "
                    f"official {archive.filename} ({self.homepage})"
                )
            target = self.extracted(archive)
            if previous.get("md5") != md5 or not target.is_dir():
                safe_extract(path, target)
            files[archive.filename] = {
                "md5": md5,
                "size": path.stat().st_size,
                "checksum": "published" if archive.md5 else "recorded on first use",
                "extracted": str(target.relative_to(self.raw_dir)),
            }
        atomic_write_json(manifest_path, {"dataset": self.name, "files": files})
        return self.raw_dir

    def check_downloaded(self) -> None:
        """Before preparing: the manifest must list every archive the params need."""
        manifest_path = self.raw_dir / MANIFEST_NAME
        files = read_json(manifest_path).get("files", {}) if manifest_path.is_file() else {}
        absent = [a.filename for a in self.archives() if a.filename not in files or not self.extracted(a).is_dir()]
        if absent:
            raise FileNotFoundError(
                f"{manifest_path}: {', '.join(absent)} not verified and extracted yet; "
                f"run `python -m benchmark.download --dataset {self.name}` (the download stage) first"
            )
