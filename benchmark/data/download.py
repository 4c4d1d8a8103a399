"""HTTPS download of public files, verified by MD5, resumable and parallel.

Files are listed from a public Google Cloud Storage bucket (:func:`list_gcs_objects`), fetched
into ``<name>.part`` (resumed with an HTTP ``Range`` request after an interruption), checked
against their size and MD5 and only then renamed into place (:func:`download_file`).
:func:`download_all` does this in parallel and records what it verified in ``manifest.json``;
:func:`verify_manifest` re-checks the files on disk against that manifest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError
from urllib.parse import quote, urlencode
from urllib.request import Request, urlopen

from tqdm import tqdm

from benchmark.errors import UserError
from benchmark.io import atomic_write_json, fsync_file, read_json
from benchmark.layout import MANIFEST_FILE

GCS_API = "https://storage.googleapis.com"
CHUNK_BYTES = 1 << 20  # 1 MiB
RETRY_BACKOFF_S = 1.0  # seconds; attempt k waits k * RETRY_BACKOFF_S before retrying
_HEADERS = {"User-Agent": "benchmark-download/1", "Accept-Encoding": "identity"}
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


class DownloadError(UserError, OSError):
    """A network, HTTP or truncated-transfer failure; the message names the URL and the file."""


class ChecksumError(UserError, ValueError):
    """A file whose MD5 (or size) differs from the expected one; the message names both."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: ``path`` (posix, relative to the download folder), ``url``, ``md5``
    (lowercase hex) and ``size`` (bytes, ``None`` when unknown)."""

    path: str
    url: str
    md5: str
    size: int | None = None


def _hash_file(path: str | Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: str | Path) -> str:
    """MD5 of a file as lowercase hex, read in 1 MiB chunks."""
    return _hash_file(path, "md5")


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file as lowercase hex, read in 1 MiB chunks."""
    return _hash_file(path, "sha256")


def list_gcs_objects(
    bucket: str, prefix: str, *, api: str = GCS_API, strip_prefix: str = "", timeout: float = 60
) -> list[RemoteFile]:
    """Every object of a public GCS bucket under ``prefix`` (all pages), as :class:`RemoteFile`\\ s
    whose ``path`` is the object name without ``strip_prefix``. ``timeout`` is in seconds."""
    files: list[RemoteFile] = []
    token: str | None = None
    while True:
        query = {"prefix": prefix} | ({"pageToken": token} if token else {})
        url = f"{api}/storage/v1/b/{quote(bucket, safe='')}/o?{urlencode(query)}"
        try:
            with urlopen(Request(url, headers=_HEADERS), timeout=timeout) as resp:
                page = json.loads(resp.read())
            for item in page.get("items", []):
                name = item["name"]
                if name.endswith("/"):  # a "folder" placeholder
                    continue
                digest = base64.b64decode(item["md5Hash"], validate=True)
                if len(digest) != 16:
                    raise ValueError(f"md5Hash of {name!r} is not 16 bytes")
                path = name[len(strip_prefix) :] if strip_prefix and name.startswith(strip_prefix) else name
                size = int(item["size"]) if item.get("size") is not None else None
                files.append(RemoteFile(path, f"{api}/{bucket}/{quote(name)}", digest.hex(), size))
            token = page.get("nextPageToken")
        except (*_NETWORK_ERRORS, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
            raise DownloadError(f"{url}: listing failed ({type(err).__name__}: {err})") from err
        if not token:
            return files


class _Cancelled(Exception):
    """Raised inside a transfer when :func:`download_all` is interrupted."""


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return int(match.group(1)) if match else None


def _part_is_complete(remote: RemoteFile, part: Path) -> bool:
    return (remote.size is None or part.stat().st_size == remote.size) and md5_file(part) == remote.md5


def _transfer(remote: RemoteFile, part: Path, timeout: float, progress: Callable[[int], None] | None) -> None:
    """One request: append the missing bytes to ``part`` (or rewrite it); raise if cut short."""
    offset = part.stat().st_size if part.exists() else 0
    if offset and remote.size is not None and offset >= remote.size:  # nothing left to ask for
        if _part_is_complete(remote, part):
            return
        part.unlink()
        offset = 0
    headers = _HEADERS | ({"Range": f"bytes={offset}-"} if offset else {})
    try:
        resp = urlopen(Request(remote.url, headers=headers), timeout=timeout)
    except HTTPError as err:
        err.close()
        if err.code != 416 or not offset:
            raise
        if _part_is_complete(remote, part):  # range not satisfiable: the part already holds it all
            return
        part.unlink()  # a bad part: start again (without a Range header, so no second 416)
        return _transfer(remote, part, timeout, progress)
    with resp:
        if resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(f"{remote.url}: asked for bytes {offset}-, got {resp.headers.get('Content-Range')}")
            mode = "ab"
        else:  # 200: the whole file (the server ignored or was not sent a Range)
            mode = "wb"
            if offset and progress is not None:
                progress(-offset)  # the bytes counted as resumed are fetched again
        length = resp.headers.get("Content-Length")
        got = 0
        with open(part, mode) as out:
            while chunk := resp.read(CHUNK_BYTES):
                out.write(chunk)
                got += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        if length is not None and got < int(length):
            raise DownloadError(f"{remote.url}: transfer cut short after {got} of {length} bytes")


def download_file(
    remote: RemoteFile,
    dest: str | Path,
    *,
    timeout: float = 60,
    progress: Callable[[int], None] | None = None,
    retries: int = 3,
) -> Path:
    """Fetch ``remote`` to ``dest`` through ``dest.part`` (resumed if present), retrying a failed or
    cut-short transfer ``retries`` times; ``dest`` appears only once its size and MD5 match.
    ``timeout`` is in seconds; ``progress(nbytes)`` is called with each chunk's byte count."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    resumed = part.is_file()  # a part left by an earlier run may be stale: one fresh try if it fails
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _transfer(remote, part, timeout, progress)
            break
        except HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 429):  # won't get better by retrying
                raise DownloadError(f"{remote.url} -> {dest}: HTTP {err.code} {err.reason}") from err
            last = err
        except _NETWORK_ERRORS as err:
            last = err
        if attempt < retries:
            time.sleep(RETRY_BACKOFF_S * (attempt + 1))
    else:
        raise DownloadError(f"{remote.url} -> {dest}: failed after {retries + 1} attempt(s) ({last})") from last
    size = part.stat().st_size
    got = md5_file(part) if remote.size in (None, size) else None
    if got != remote.md5.lower():
        part.unlink()
        if resumed:  # the old part was bad, not the server's bytes: fetch the whole file once more
            return download_file(remote, dest, timeout=timeout, progress=progress, retries=retries)
        if got is None:
            raise ChecksumError(f"{dest}: size mismatch for {remote.url} (expected {remote.size} bytes, got {size})")
        raise ChecksumError(f"{dest}: md5 mismatch for {remote.url} (expected {remote.md5}, got {got})")
    fsync_file(part)  # the bytes reach the disk before the name does
    os.replace(part, dest)
    return dest


def _destination(root: Path, path: str) -> Path:
    """``root/path``, refusing a ``path`` that would land outside ``root``."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith(("/", "\\")) or "\\" in path or ".." in parts or re.match(r"[A-Za-z]:", path):
        raise ValueError(f"{path!r}: not a safe relative download path")
    return root.joinpath(*parts)


def _fetch(remote: RemoteFile, dest: Path, **kwargs) -> Path:
    """:func:`download_file`, unless ``dest`` already holds the right bytes (a lost manifest)."""
    if dest.is_file() and remote.size in (None, dest.stat().st_size) and md5_file(dest) == remote.md5:
        kwargs["progress"](dest.stat().st_size)
        return dest
    return download_file(remote, dest, **kwargs)


def _read_manifest_files(path: Path) -> dict[str, dict]:
    try:
        files = read_json(path).get("files", {})
    except (FileNotFoundError, ValueError, AttributeError):  # absent or unreadable: download again
        return {}
    return files if isinstance(files, dict) else {}


def download_all(
    files: Sequence[RemoteFile],
    root: str | Path,
    *,
    workers: int = 8,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
) -> dict[str, dict]:
    """Fetch ``files`` into ``root`` with ``workers`` threads, skipping those the existing manifest
    already records; write ``root/manifest.json`` and return its ``files`` mapping
    (``{path: {"md5": hex, "size": bytes}}``). On failures the manifest of the files that succeeded
    is still written, then one error lists every failed file."""
    root = Path(root)
    manifest_path = root / MANIFEST_FILE
    previous = _read_manifest_files(manifest_path)
    if len({f.path for f in files}) != len(files):
        raise ValueError("download_all: duplicate destination paths in files")
    done: dict[str, dict] = {}
    todo: list[tuple[RemoteFile, Path]] = []
    for remote in files:
        dest = _destination(root, remote.path)
        entry = previous.get(remote.path)
        if isinstance(entry, dict) and entry.get("md5") == remote.md5 and dest.is_file():
            size = dest.stat().st_size
            if entry.get("size") == size and remote.size in (None, size):  # cheap check; md5: verify_manifest
                done[remote.path] = {"md5": remote.md5, "size": size}
                continue
        todo.append((remote, dest))
    failures: dict[str, Exception] = {}
    lock = threading.Lock()
    parts = [d.with_name(d.name + ".part") for _, d in todo]
    resumed = sum(p.stat().st_size for p in parts if p.is_file())
    total = sum(r.size or 0 for r, _ in todo)
    with tqdm(total=total, initial=min(resumed, total), unit="B", unit_scale=True, disable=not progress) as bar:

        def update(nbytes: int) -> None:
            if stop.is_set():  # interrupted: running transfers end at their next chunk, parts kept
                raise _Cancelled
            with lock:
                bar.update(nbytes)

        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            jobs = {
                pool.submit(_fetch, r, d, timeout=timeout, progress=update, retries=retries): (r, d) for r, d in todo
            }
            for job in as_completed(jobs):
                remote, dest = jobs[job]
                try:
                    job.result()
                except Exception as err:  # collected, re-raised below once the manifest is written
                    failures[remote.path] = err
                else:
                    done[remote.path] = {"md5": remote.md5, "size": dest.stat().st_size}
        except BaseException:  # Ctrl-C: stop now, keep what is done (and the parts) for the next run
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            atomic_write_json(manifest_path, {"files": dict(sorted(done.items()))})
            raise
        pool.shutdown()
    files_map = dict(sorted(done.items()))
    atomic_write_json(manifest_path, {"files": files_map})
    if failures:
        lines = "\n".join(f"  {path}: {err}" for path, err in sorted(failures.items()))
        kind = ChecksumError if any(isinstance(e, ChecksumError) for e in failures.values()) else DownloadError
        first = next(iter(failures.values()))
        raise kind(f"{len(failures)} of {len(files)} file(s) failed to download into {root}:\n{lines}") from first
    return files_map


def verify_manifest(root: str | Path, *, paths: Iterable[str] | None = None) -> None:
    """Recompute the MD5 of every file ``root/manifest.json`` lists (or only ``paths``) and raise
    :class:`ChecksumError` / :class:`FileNotFoundError` naming the first file that does not match."""
    root = Path(root)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no download manifest; run the download stage first")
    manifest = read_json(manifest_path)  # a truncated or garbled manifest: ValueError naming it
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(
            f"{manifest_path}: no 'files' mapping (corrupt manifest); delete it and run the download stage"
        )
    for path in entries if paths is None else paths:
        if path not in entries:
            raise FileNotFoundError(f"{path}: not listed in {manifest_path}; run the download stage")
        file = _destination(root, path)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: listed in {manifest_path} but missing; run the download stage again")
        expected = entries[path].get("md5") if isinstance(entries[path], dict) else None
        if not isinstance(expected, str):
            raise ValueError(f"{manifest_path}: entry {path!r} has no md5 (corrupt manifest); run the download stage")
        got = md5_file(file)
        if got != expected:
            raise ChecksumError(f"{file}: md5 mismatch (expected {expected}, got {got}); delete it and download again")
