"""HTTPS download against a local fake of Google Cloud Storage: listing, resume, retries, checksums."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_gcs import BUCKET, PREFIX, FakeGCS, serve_fake_gcs

from benchmark.data import download as dl
from benchmark.data.download import (
    ChecksumError,
    DownloadError,
    RemoteFile,
    download_all,
    download_file,
    list_gcs_objects,
    md5_file,
    sha256_file,
    verify_manifest,
)


@pytest.fixture
def gcs() -> Iterator[FakeGCS]:
    with serve_fake_gcs() as state:
        yield state


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)


def payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def one_file(gcs: FakeGCS, name: str = "S1Hand/Spain_7370579_S1Hand.tif", n: int = 20_000, **options) -> RemoteFile:
    """Put one object in the bucket and return its listing entry."""
    gcs.add(PREFIX + name, payload(n), **options)
    (remote,) = list_gcs_objects(BUCKET, PREFIX + name, api=gcs.api, strip_prefix=PREFIX)
    return remote


def test_hashes_match_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(payload((1 << 20) + 17))
    assert md5_file(path) == hashlib.md5(path.read_bytes()).hexdigest()
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_list_gcs_objects_pages_md5_and_strip_prefix(gcs: FakeGCS) -> None:
    data = {
        "S1Hand/Spain_7370579_S1Hand.tif": gcs.add(PREFIX + "S1Hand/Spain_7370579_S1Hand.tif", payload(100, 1)),
        "LabelHand/Spain_7370579_LabelHand.tif": gcs.add(PREFIX + "LabelHand/Spain_7370579_LabelHand.tif", b"ab"),
        "S1Hand/with space.tif": gcs.add(PREFIX + "S1Hand/with space.tif", payload(7, 2)),
    }
    gcs.add(PREFIX + "S1Hand/", b"")  # a "folder" placeholder object
    gcs.add("v1.1/other/outside.tif", b"not listed")
    files = list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX)
    assert len(gcs.listings) == 2 and gcs.listings[1]["pageToken"] == ["2"]  # 4 objects, 2 per page
    assert {f.path: (f.md5, f.size) for f in files} == {
        path: (hashlib.md5(body).hexdigest(), len(body)) for path, body in data.items()
    }
    spaced = next(f for f in files if f.path.endswith("with space.tif"))
    assert spaced.url == f"{gcs.api}/{BUCKET}/{PREFIX}S1Hand/with%20space.tif"
    unstripped = list_gcs_objects(BUCKET, PREFIX + "LabelHand/", api=gcs.api)
    assert [f.path for f in unstripped] == [PREFIX + "LabelHand/Spain_7370579_LabelHand.tif"]


def test_list_gcs_objects_errors_name_the_listing(gcs: FakeGCS) -> None:
    gcs.add(PREFIX + "a.tif", b"abc", omit_md5=True)
    with pytest.raises(DownloadError, match=rf"{re.escape(gcs.api)}/storage/v1/b/{BUCKET}/o\?prefix=.*md5Hash"):
        list_gcs_objects(BUCKET, PREFIX, api=gcs.api)
    with pytest.raises(DownloadError, match="storage/v1/b/no-such-bucket/o.*404"):
        list_gcs_objects("no-such-bucket", PREFIX, api=gcs.api)


def test_download_all_fetches_in_parallel_and_writes_manifest(gcs: FakeGCS, tmp_path: Path) -> None:
    bodies = {
        f"S1Hand/f{i}.tif": gcs.add(PREFIX + f"S1Hand/f{i}.tif", payload(30_000 + i, i), delay=0.1) for i in range(6)
    }
    files = list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX)
    got = download_all(files, tmp_path / "raw", workers=4, progress=False)
    expected = {path: {"md5": hashlib.md5(body).hexdigest(), "size": len(body)} for path, body in bodies.items()}
    assert got == expected
    assert json.loads((tmp_path / "raw" / "manifest.json").read_text())["files"] == expected
    for path, body in bodies.items():
        assert (tmp_path / "raw" / path).read_bytes() == body
    assert not list((tmp_path / "raw").rglob("*.part"))
    assert gcs.max_active > 1  # several transfers were in flight at once
    verify_manifest(tmp_path / "raw")


def test_second_download_all_fetches_nothing(gcs: FakeGCS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        gcs.add(PREFIX + f"f{i}.tif", payload(5000, i))
    files = list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX)
    first = download_all(files, tmp_path, progress=False)
    assert len(gcs.object_requests()) == 3
    hashed: list[Path] = []
    monkeypatch.setattr(dl, "md5_file", lambda path: hashed.append(path) or md5_file(path))
    assert download_all(files, tmp_path, progress=False) == first
    assert len(gcs.object_requests()) == 3
    assert hashed == []  # the manifest vouches for them: not even re-hashed (verify_manifest does that)
    (tmp_path / "manifest.json").unlink()  # a lost manifest: files on disk are checked, not fetched again
    assert download_all(files, tmp_path, progress=False) == first
    assert len(gcs.object_requests()) == 3 and len(hashed) == 3


def test_truncated_transfer_is_resumed_with_a_range_request(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs, n=40_000, truncate=1)
    seen: list[int] = []
    dest = download_file(remote, tmp_path / "x.tif", progress=seen.append)
    assert dest.read_bytes() == gcs.objects[PREFIX + remote.path].data
    assert [r[1] for r in gcs.object_requests()] == [None, "bytes=20000-"]
    assert sum(seen) == 40_000


def test_permanently_truncated_file_raises_and_leaves_no_dest(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs, truncate=-1)
    dest = tmp_path / "x.tif"
    with pytest.raises(DownloadError, match=re.escape(remote.url)) as err:
        download_file(remote, dest, retries=2)
    assert str(dest) in str(err.value)
    assert not dest.exists()
    assert len(gcs.object_requests()) == 3  # one try and two retries, each resuming
    assert all(r[1] is not None for r in gcs.object_requests()[1:])


def test_wrong_checksum_raises_and_removes_the_part(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs, wrong_md5=True)
    dest = tmp_path / "x.tif"
    with pytest.raises(ChecksumError) as err:
        download_file(remote, dest)
    actual = hashlib.md5(gcs.objects[PREFIX + remote.path].data).hexdigest()
    assert str(dest) in str(err.value) and remote.md5 in str(err.value) and actual in str(err.value)
    assert not dest.exists() and not (tmp_path / "x.tif.part").exists()


def test_size_mismatch_is_a_checksum_error(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs)
    bad = RemoteFile(remote.path, remote.url, remote.md5, remote.size + 1)
    with pytest.raises(ChecksumError, match="size"):
        download_file(bad, tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "x.tif.part").exists()


def test_existing_part_is_resumed(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs)
    data = gcs.objects[PREFIX + remote.path].data
    (tmp_path / "x.tif.part").write_bytes(data[:1234])
    assert download_file(remote, tmp_path / "x.tif").read_bytes() == data
    assert gcs.object_requests() == [(PREFIX + remote.path, "bytes=1234-")]


def test_stale_part_is_fetched_again_whole(gcs: FakeGCS, tmp_path: Path) -> None:
    """A part left by an earlier run with wrong bytes fails the MD5 once, then the file is fetched whole."""
    remote = one_file(gcs)
    data = gcs.objects[PREFIX + remote.path].data
    (tmp_path / "x.tif.part").write_bytes(bytes(b ^ 1 for b in data[:1234]))
    assert download_file(remote, tmp_path / "x.tif").read_bytes() == data
    assert gcs.object_requests() == [(PREFIX + remote.path, "bytes=1234-"), (PREFIX + remote.path, None)]


def test_server_ignoring_range_still_gives_the_right_file(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs, ignore_range=True)
    (tmp_path / "x.tif.part").write_bytes(b"garbage " * 100)  # must be discarded, not appended to
    assert download_file(remote, tmp_path / "x.tif").read_bytes() == gcs.objects[PREFIX + remote.path].data
    assert gcs.object_requests() == [(PREFIX + remote.path, "bytes=800-")]


def test_range_not_satisfiable_verifies_the_part(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs)
    data = gcs.objects[PREFIX + remote.path].data
    unsized = RemoteFile(remote.path, remote.url, remote.md5, None)
    (tmp_path / "a.tif.part").write_bytes(data)  # complete: the 416 means done
    assert download_file(unsized, tmp_path / "a.tif").read_bytes() == data
    assert gcs.object_requests() == [(PREFIX + remote.path, f"bytes={len(data)}-")]
    (tmp_path / "b.tif.part").write_bytes(bytes(len(data) + 5))  # bad: start again from byte 0
    assert download_file(unsized, tmp_path / "b.tif").read_bytes() == data
    assert [r[1] for r in gcs.object_requests()[1:]] == [f"bytes={len(data) + 5}-", None]


def test_server_errors_are_retried(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs, fail=2)
    assert download_file(remote, tmp_path / "x.tif", retries=3).read_bytes() == gcs.objects[PREFIX + remote.path].data
    assert len(gcs.object_requests()) == 3
    gcs.objects[PREFIX + remote.path].fail = 5
    with pytest.raises(DownloadError, match="500"):
        download_file(remote, tmp_path / "y.tif", retries=1)
    assert not (tmp_path / "y.tif").exists()


def test_missing_object_is_not_retried(gcs: FakeGCS, tmp_path: Path) -> None:
    remote = one_file(gcs)
    del gcs.objects[PREFIX + remote.path]
    with pytest.raises(DownloadError, match="404"):
        download_file(remote, tmp_path / "x.tif", retries=3)
    assert len(gcs.object_requests()) == 1


def test_one_failure_still_writes_the_manifest_of_the_others(gcs: FakeGCS, tmp_path: Path) -> None:
    for i in range(3):
        gcs.add(PREFIX + f"f{i}.tif", payload(4000, i), wrong_md5=i == 1)
    files = list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX)
    with pytest.raises(ChecksumError, match=r"(?s)1 of 3 .*f1\.tif"):
        download_all(files, tmp_path, progress=False)
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())["files"]) == ["f0.tif", "f2.tif"]
    assert not (tmp_path / "f1.tif").exists()
    gcs.objects[PREFIX + "f1.tif"].wrong_md5 = False  # fixed upstream: a rerun fetches only that file
    files = list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX)
    assert sorted(download_all(files, tmp_path, progress=False)) == ["f0.tif", "f1.tif", "f2.tif"]
    assert [r[0] for r in gcs.object_requests()].count(PREFIX + "f1.tif") == 2
    assert len(gcs.object_requests()) == 4


def test_network_failure_in_download_all_is_a_download_error(gcs: FakeGCS, tmp_path: Path) -> None:
    for i in range(2):
        gcs.add(PREFIX + f"f{i}.tif", payload(1000, i), truncate=-1 if i else 0)
    files = list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX)
    with pytest.raises(DownloadError, match=r"f1\.tif"):
        download_all(files, tmp_path, progress=False, retries=1)
    assert list(json.loads((tmp_path / "manifest.json").read_text())["files"]) == ["f0.tif"]
    assert (tmp_path / "f1.tif.part").exists() and not (tmp_path / "f1.tif").exists()  # kept for resuming


def test_unsafe_destination_path_is_refused(tmp_path: Path) -> None:
    for path in ("../evil.tif", "/etc/evil.tif", "a/../../evil.tif"):
        with pytest.raises(ValueError, match="safe"):
            download_all([RemoteFile(path, "http://127.0.0.1:9/x", "0" * 32, 1)], tmp_path / "raw", progress=False)
    assert not (tmp_path / "evil.tif").exists()


def test_verify_manifest_catches_modified_and_missing_files(gcs: FakeGCS, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest.json.*download"):
        verify_manifest(tmp_path)
    for i in range(2):
        gcs.add(PREFIX + f"S1Hand/f{i}.tif", payload(3000, i))
    download_all(list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX), tmp_path, progress=False)
    verify_manifest(tmp_path)
    target = tmp_path / "S1Hand" / "f0.tif"
    data = bytearray(target.read_bytes())
    data[100] ^= 1  # same size, different bytes
    target.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"S1Hand/f0\.tif.*expected"):
        verify_manifest(tmp_path)
    verify_manifest(tmp_path, paths=["S1Hand/f1.tif"])  # only the listed ones are checked
    (tmp_path / "S1Hand" / "f1.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"S1Hand/f1\.tif"):
        verify_manifest(tmp_path, paths=["S1Hand/f1.tif"])


def test_interrupt_stops_at_once_and_keeps_what_is_done(
    gcs: FakeGCS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while files are queued: no further file is fetched, the finished one is in the
    manifest, and the next run fetches only what is missing."""
    for i in range(8):
        # f0 finishes first, well before f1: the interrupt then comes while the second worker is
        # still busy, so exactly one more file (f2) can have started (equal delays made the two
        # workers finish together and race the interrupt to a fourth request)
        gcs.add(PREFIX + f"S2Hand/f{i}.tif", payload(5_000 + i, i), delay=0.05 if i == 0 else 0.3)
    files = list_gcs_objects(BUCKET, PREFIX, api=gcs.api, strip_prefix=PREFIX)
    real = dl.as_completed

    def interrupted_after_first(jobs):
        for job in real(jobs):
            yield job
            raise KeyboardInterrupt

    monkeypatch.setattr(dl, "as_completed", interrupted_after_first)
    with pytest.raises(KeyboardInterrupt):
        download_all(files, tmp_path / "raw", workers=2, progress=False)
    assert len(gcs.object_requests()) <= 3  # the queued files were never requested
    finished = json.loads((tmp_path / "raw" / "manifest.json").read_text())["files"]
    assert len(finished) >= 1
    monkeypatch.setattr(dl, "as_completed", real)
    before = len(gcs.object_requests())
    download_all(files, tmp_path / "raw", workers=2, progress=False)
    again = [name for name, _ in gcs.object_requests()[before:]]
    assert len(again) <= 8 - len(finished) and not any(name.endswith(tuple(finished)) for name in again)
    assert len(json.loads((tmp_path / "raw" / "manifest.json").read_text())["files"]) == 8


def test_verify_manifest_names_a_corrupt_manifest_and_a_truncated_file(tmp_path: Path) -> None:
    data = payload(5000)
    (tmp_path / "a.tif").write_bytes(data[:3000])  # cut short after the download stage verified it
    manifest = tmp_path / "manifest.json"
    good = json.dumps({"files": {"a.tif": {"md5": hashlib.md5(data).hexdigest(), "size": 5000}}})
    manifest.write_text(good)
    cut = hashlib.md5(data[:3000]).hexdigest()
    with pytest.raises(ChecksumError, match=rf"{re.escape(str(tmp_path / 'a.tif'))}: md5 mismatch .*got {cut}"):
        verify_manifest(tmp_path)
    for text, error, pattern in (
        (good[: len(good) // 2], ValueError, "not valid JSON"),
        ("[]", ValueError, "no 'files' mapping"),
        (json.dumps({"files": {"a.tif": {"size": 5000}}}), ValueError, "entry 'a.tif' has no md5"),
    ):
        manifest.write_text(text)
        with pytest.raises(error, match=rf"{re.escape(str(manifest))}: {pattern}"):
            verify_manifest(tmp_path)
