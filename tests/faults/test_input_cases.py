"""Corrupt-input fault cases: every kind survives with a few seeds, and the cases really catch a
pipeline that lets the fault through (a check monkeypatched away -> NotSurvived)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import benchmark.data.archive as archive_mod
import benchmark.data.download as dl
import benchmark.data.manual as manual_mod
import benchmark.data.prepared as prepared_mod
from benchmark.data.raster import RasterLayer
from tools.faults.common import NotSurvived
from tools.faults.input_cases import CASES

KINDS = [
    "truncated_download",
    "checksum_mismatch",
    "archive_escape",
    "geotiff_band_count",
    "geotiff_size",
    "nan_pixels",
    "inf_pixels",
]


def run_case(kind: str, seed: int, tmp_path: Path) -> None:
    workdir = tmp_path / f"{kind}-{seed}"
    workdir.mkdir()
    CASES[kind](np.random.default_rng([seed, 7]), workdir)


def test_every_required_kind_is_there():
    assert set(KINDS) <= set(CASES)
    assert all(callable(case) for case in CASES.values())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", sorted(CASES))
def test_case_survives(kind: str, seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)  # retries without the real back-off
    run_case(kind, seed, tmp_path)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_cases_draw_different_faults(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rng matters: three seeds give three different errors (another file, pixel, member, ...)."""
    import tools.faults.input_cases as cases

    messages: list[str] = []
    real = cases.expect_error

    def recording(*args, **kwargs):
        err = real(*args, **kwargs)
        messages.append(str(err))
        return err

    monkeypatch.setattr(cases, "expect_error", recording)
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)
    for seed in range(3):
        workdir = tmp_path / str(seed)
        workdir.mkdir()
        cases.CASES[kind](np.random.default_rng(seed), workdir)
        messages[-1] = re.sub(r"127\.0\.0\.1:\d+", "<server>", messages[-1].replace(str(workdir), "<workdir>"))
    assert len(messages) == 3 and len(set(messages)) == 3, messages


# --- the cases detect a pipeline that does not survive -------------------------------------------


def _no_pixel_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RasterLayer, "_refuse", lambda self, *args, **kwargs: None)


@pytest.mark.parametrize("seed", range(3))
def test_nan_case_catches_nan_taken_for_nodata(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the pixel checks a NaN silently becomes nodata: no error at all."""
    _no_pixel_checks(monkeypatch)
    with pytest.raises(NotSurvived, match="no error raised"):
        run_case("nan_pixels", seed, tmp_path)


@pytest.mark.parametrize("seed", range(3))
def test_inf_case_catches_an_error_that_does_not_name_the_file(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the pixel checks the prepared writer still refuses inf, but names no file: not enough."""
    _no_pixel_checks(monkeypatch)
    with pytest.raises(NotSurvived, match="error does not name"):
        run_case("inf_pixels", seed, tmp_path)


@pytest.mark.parametrize("kind", ["truncated_download", "checksum_mismatch"])
@pytest.mark.parametrize("seed", range(2))
def test_download_cases_catch_a_half_written_destination(
    kind: str, seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download that raises the right error but leaves bytes at the destination does not survive."""
    real = dl.download_file

    def leaky(remote, dest, **kwargs):
        try:
            return real(remote, dest, **kwargs)
        except (dl.ChecksumError, dl.DownloadError):
            Path(dest).write_bytes(b"half a file")
            raise

    monkeypatch.setattr(dl, "download_file", leaky)
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)
    with pytest.raises(NotSurvived, match="exists after"):
        run_case(kind, seed, tmp_path)


@pytest.mark.parametrize("seed", range(4))
def test_archive_case_catches_a_naive_extraction(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``extractall`` with no checks: no UnsafeArchiveError (or another error) -> not survived."""
    import tarfile
    import zipfile

    def naive(archive, target, *, members=None):
        archive, target = Path(archive), Path(target)
        target.mkdir(parents=True, exist_ok=True)
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(target)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="fully_trusted")
        return []

    monkeypatch.setattr(archive_mod, "safe_extract", naive)
    monkeypatch.setattr(manual_mod, "safe_extract", naive)
    with pytest.raises(NotSurvived):
        run_case("archive_escape", seed, tmp_path)


@pytest.mark.parametrize("seed", range(3))
def test_prepared_case_catches_a_numpy_error(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading with bare ``np.load`` / no meta check: numpy's and json's errors name no file."""
    monkeypatch.setattr(prepared_mod, "load_array", lambda path, ndim, kind: np.load(path, mmap_mode="r"))
    monkeypatch.setattr(prepared_mod, "read_json", lambda path: __import__("json").loads(Path(path).read_text()))
    with pytest.raises(NotSurvived):
        run_case("prepared_corrupt", seed, tmp_path)
