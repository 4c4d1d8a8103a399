"""Fault kinds for corrupt inputs: each must end in a clear error naming the file, with nothing lost.

* ``truncated_download``: a local HTTP server cuts the transfer short (the connection drops
  mid-body, or the file itself is cut and served whole); ``download_file`` / ``download_all``
  must raise :class:`DownloadError` / :class:`ChecksumError` naming the destination and leave no
  destination file (a kept ``.part`` holds only a prefix of the right bytes); a download from a
  good server must then succeed, resuming the part.
* ``checksum_mismatch``: the server sends the right number of bytes with one byte flipped (maybe
  after a stale ``.part`` of an earlier run); :class:`ChecksumError` naming the destination and
  both MD5s, no destination, no part; then a good server gives the right file.
* ``archive_escape``: a zip or tar with a member that would land outside its folder (``../``,
  ``a/../../``, an absolute path, ``..\\``, a symbolic or hard link pointing out), among good
  members, extracted by :func:`safe_extract` or by a manual data set's download stage
  (DFC2023's ``track2.zip``); :class:`UnsafeArchiveError` naming the archive and the member,
  and the whole work folder byte-identical to before (nothing extracted, an existing target and
  manifest untouched, no temporary folder).
* ``geotiff_band_count``, ``geotiff_size``, ``nan_pixels``, ``inf_pixels``: small GeoTIFF scenes
  are tiled into a prepared folder with :func:`write_scenes`; then one file is rewritten with a
  wrong band count, a wrong height/width, a NaN outside the nodata mask (the file's nodata tag
  is not NaN and the layer does not declare NaN as nodata) or +-inf (or a float64 value beyond
  float32's range); preparing again must raise a ValueError naming the file (and band and pixel
  for corrupt pixels), leave the earlier prepared folder byte-identical and no temporary folder.
* ``prepared_corrupt``: a prepared data set whose ``.npy`` or ``meta.json`` was cut short;
  :class:`PreparedDataset` must raise an error naming the file.

Every draw (sizes, truncation point, flipped byte, member name and position, corrupt band and
pixel, wrong size) comes from the case's ``rng``; everything happens inside ``workdir``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import stat
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

import benchmark.data.archive as archive_mod
import benchmark.data.download as dl
from benchmark.layout import MANIFEST_FILE, META_FILE
from tools.faults.common import NotSurvived, expect_error

# --- helpers -------------------------------------------------------------------------------------


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise NotSurvived(reason)


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (relative posix path -> file bytes, None for a folder or link)."""
    out: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        out[key] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


def _require_unchanged(folder: Path, before: dict[str, bytes | None], what: str) -> None:
    after = _snapshot(folder)
    if after != before:
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(k for k in set(after) & set(before) if after[k] != before[k])
        raise NotSurvived(f"{what} changed: added {added[:5]}, removed {removed[:5]}, modified {changed[:5]}")


@dataclass
class _Served:
    """What the local server answers for one path: ``body`` with ``Content-Length: length``
    (default: the body's), the connection dropped after ``cut`` body bytes (None: send it all),
    and ``Range`` requests answered with 206 when ``ranges``."""

    body: bytes
    cut: int | None = None
    length: int | None = None
    ranges: bool = False


@contextlib.contextmanager
def _serve(files: dict[str, _Served]) -> Iterator[tuple[str, list[str | None]]]:
    """An HTTP server on 127.0.0.1 (a thread) serving ``files`` {"/path": _Served}; yields its base
    URL and the list of the Range headers it was sent (None: no Range), in order."""
    ranges_seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            served = files.get(self.path)
            if served is None:
                self.send_error(404)
                return
            asked = self.headers.get("Range")
            ranges_seen.append(asked)
            body, status, extra = served.body, 200, {}
            if asked and served.ranges and asked.startswith("bytes=") and asked.endswith("-"):
                start = int(asked[len("bytes=") : -1])
                if start >= len(body):
                    self.send_error(416)
                    return
                status, extra = 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                body = body[start:]
            self.send_response(status)
            length = served.length if served.length is not None and status == 200 else len(body)
            self.send_header("Content-Length", str(length))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body if served.cut is None else body[: served.cut])
            self.wfile.flush()
            if served.cut is not None:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", ranges_seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _remote(name: str, data: bytes, base: str, known_size: bool) -> dl.RemoteFile:
    return dl.RemoteFile(name, f"{base}/{name}", hashlib.md5(data).hexdigest(), len(data) if known_size else None)


def _fetch(
    use_all: bool, remote: dl.RemoteFile, root: Path, others: list[dl.RemoteFile], retries: int
) -> Callable[[], Any]:
    """The download to attempt: ``download_file`` of ``remote`` into ``root``, or ``download_all``
    of ``others`` + ``remote``."""
    if use_all:
        return lambda: dl.download_all([*others, remote], root, workers=2, progress=False, timeout=10, retries=retries)
    return lambda: dl.download_file(remote, root / remote.path, timeout=10, retries=retries)


def _check_recovery(
    use_all: bool, data: bytes, remote: dl.RemoteFile, root: Path, others: dict[str, bytes], known_size: bool
) -> None:
    """A good server now: the download must succeed with the right bytes (and, through
    ``download_all``, a manifest listing every file)."""
    files = {f"/{remote.path}": _Served(data, ranges=True)}
    files.update({f"/{name}": _Served(body, ranges=True) for name, body in others.items()})
    with _serve(files) as (base, _):
        good = _remote(remote.path, data, base, known_size)
        good_others = [_remote(name, body, base, True) for name, body in others.items()]
        try:
            _fetch(use_all, good, root, good_others, retries=0)()
        except Exception as err:
            raise NotSurvived(f"download from a good server failed after the fault: {type(err).__name__}: {err}")
    dest = root / remote.path
    _require(dest.is_file() and dest.read_bytes() == data, f"{dest}: wrong or missing after a good download")
    _require(not dest.with_name(dest.name + ".part").exists(), f"{dest}.part left after a good download")
    if use_all:
        listed = json.loads((root / MANIFEST_FILE).read_text()).get("files", {})
        _require(set(listed) == {remote.path, *others}, f"manifest lists {sorted(listed)} after a good download")


# --- downloads -----------------------------------------------------------------------------------


def truncated_download(rng: np.random.Generator, workdir: Path) -> None:
    """A transfer cut short (see the module docstring)."""
    data = rng.bytes(int(rng.integers(2_000, 200_000)))
    cut = int(rng.integers(1, len(data)))  # bytes that arrive
    drop_connection = bool(rng.integers(2))  # else: a cut file served whole, with its own length
    known_size = bool(rng.integers(2))
    use_all = bool(rng.integers(2))
    retries = int(rng.integers(0, 2))
    root = workdir / "downloads"
    name = f"chips/c{int(rng.integers(1000))}.tif"
    others = {"other.bin": rng.bytes(int(rng.integers(1, 5_000)))} if use_all else {}
    dest = root / name
    served = _Served(data, cut=cut) if drop_connection else _Served(data[:cut])
    files = {f"/{name}": served, **{f"/{k}": _Served(v) for k, v in others.items()}}
    with _serve(files) as (base, _):
        remote = _remote(name, data, base, known_size)  # what the listing promised
        error = dl.DownloadError if drop_connection else dl.ChecksumError
        others_remote = [_remote(k, v, base, True) for k, v in others.items()]
        expect_error(_fetch(use_all, remote, root, others_remote, retries), error, [str(dest)])
    _require(not dest.exists(), f"{dest}: exists after a truncated download")
    part = dest.with_name(dest.name + ".part")
    if part.exists():
        kept = part.read_bytes()
        _require(drop_connection, f"{part}: kept after a checksum failure")
        _require(data.startswith(kept), f"{part}: holds bytes that are not a prefix of the file")
    if use_all:
        listed = json.loads((root / MANIFEST_FILE).read_text()).get("files", {})
        _require(set(listed) == set(others), f"manifest lists {sorted(listed)}, expected only {sorted(others)}")
    _check_recovery(use_all, data, remote, root, others, known_size)


def checksum_mismatch(rng: np.random.Generator, workdir: Path) -> None:
    """One flipped byte in the served file (see the module docstring)."""
    data = rng.bytes(int(rng.integers(100, 100_000)))
    flipped = bytearray(data)
    at = int(rng.integers(len(data)))
    flipped[at] ^= int(rng.integers(1, 256))
    use_all = bool(rng.integers(2))
    known_size = bool(rng.integers(2))
    root = workdir / "downloads"
    name = f"S1Hand/x{int(rng.integers(1000))}_S1Hand.tif"
    dest = root / name
    part = dest.with_name(dest.name + ".part")
    if at > 0 and rng.integers(2):  # a part left by an earlier run (a good prefix, short of the flipped byte)
        part.parent.mkdir(parents=True, exist_ok=True)  # resumed, found wrong, then fetched again whole
        part.write_bytes(data[: int(rng.integers(1, at + 1))])
    others = {"splits/flood_test_data.csv": b"a,b\n"} if use_all else {}
    files = {f"/{name}": _Served(bytes(flipped), ranges=True), **{f"/{k}": _Served(v) for k, v in others.items()}}
    with _serve(files) as (base, _):
        remote = _remote(name, data, base, known_size)
        others_remote = [_remote(k, v, base, True) for k, v in others.items()]
        got = hashlib.md5(bytes(flipped)).hexdigest()
        must = [str(dest), remote.md5, got]
        expect_error(_fetch(use_all, remote, root, others_remote, 0), dl.ChecksumError, must)
    _require(not dest.exists(), f"{dest}: exists after a checksum mismatch")
    _require(not part.exists(), f"{part}: kept after a checksum mismatch")
    _check_recovery(use_all, data, remote, root, others, known_size)


# --- archives ------------------------------------------------------------------------------------


def _good_members(rng: np.random.Generator, top: str) -> dict[str, bytes]:
    names = [f"{top}/train/rgb/img{i}.tif" for i in range(int(rng.integers(1, 4)))]
    names.append(f"{top}/buildings_only_train.json")
    return {n: rng.bytes(int(rng.integers(0, 3000))) for n in names}


def _bad_member(rng: np.random.Generator, workdir: Path, kind: str) -> tuple[str, str]:
    """(way, member name): a member that would write outside the extraction folder. Absolute
    paths point inside ``workdir``, so even a naive extraction stays in the sandbox."""
    ways = ["dotdot", "nested", "absolute", "backslash", "symlink"] + (["hardlink"] if kind != "zip" else [])
    way = ways[int(rng.integers(len(ways)))]
    leaf = f"evil{int(rng.integers(1000))}.txt"
    name = {
        "dotdot": f"../{leaf}",
        "nested": f"track2/a/{'../' * int(rng.integers(3, 5))}{leaf}",
        "absolute": (workdir / leaf).as_posix(),
        "backslash": f"..\\..\\{leaf}",
        "symlink": f"track2/link{int(rng.integers(100))}",
        "hardlink": f"track2/hard{int(rng.integers(100))}",
    }[way]
    return way, name


def _write_archive(path: Path, kind: str, members: list[tuple[str, bytes]], bad: tuple[str, str, Path]) -> None:
    """``members`` in order, with the bad member ``(way, name, workdir)`` among them (inserted by the caller)."""
    way, bad_name, workdir = bad
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name)
                if name == bad_name and way == "symlink":
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                    data = str(workdir / "outside").encode()
                zf.writestr(info, data)
        return
    with tarfile.open(path, "w:gz" if kind == "tar.gz" else "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if name == bad_name and way in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if way == "symlink" else tarfile.LNKTYPE
                info.linkname = "../../outside" if way == "symlink" else "../../../etc/hosts"
                tf.addfile(info)
                continue
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def archive_escape(rng: np.random.Generator, workdir: Path) -> None:
    """An archive member escaping its folder (see the module docstring)."""
    from benchmark.data.dfc2023 import DFC2023

    via_manual = bool(rng.integers(2))  # DFC2023's download stage (track2.zip) or safe_extract itself
    kind = "zip" if via_manual else ["zip", "tar", "tar.gz"][int(rng.integers(3))]
    raw = workdir / "raw"
    raw.mkdir(parents=True)
    members = list(_good_members(rng, "track2").items())
    way, bad_name = _bad_member(rng, workdir, kind)
    members.insert(int(rng.integers(len(members) + 1)), (bad_name, b"escaped"))
    archive = raw / ("track2.zip" if via_manual else f"data.{kind}")
    _write_archive(archive, kind, members, (way, bad_name, workdir))
    target = raw / "extracted" / "track2"
    if rng.integers(2):  # an earlier, good extraction that must survive
        (target / "track2").mkdir(parents=True)
        (target / "track2" / "keep.txt").write_bytes(rng.bytes(64))
    before = _snapshot(workdir)
    must = [str(archive), repr(bad_name) if "\\" in bad_name else bad_name]  # errors quote names with repr()
    if via_manual:
        source = DFC2023({}, raw_dir=raw)
        expect_error(source.download, archive_mod.UnsafeArchiveError, must)
    else:
        expect_error(lambda: archive_mod.safe_extract(archive, target), archive_mod.UnsafeArchiveError, must)
    _require_unchanged(workdir, before, f"{workdir} (after refusing {way} member {bad_name!r})")


# --- GeoTIFF scenes ------------------------------------------------------------------------------


def _write_tif(path: Path, array: np.ndarray, nodata: float | None) -> None:
    import rasterio
    from rasterio.transform import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = array.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=count,
        height=height,
        width=width,
        dtype=array.dtype.name,
        nodata=nodata,
        transform=Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0),
    ) as dst:
        dst.write(array)


@dataclass
class _Layout:
    """A tiny two-scene data set of GeoTIFFs: modality -> channels, each file's array and nodata tag."""

    size: tuple[int, int]  # (height, width) px of every scene
    tile: int
    modalities: dict[str, int]
    arrays: dict[tuple[str, str], np.ndarray]  # (scene, modality or "label") -> [C, H, W]
    nodata: dict[tuple[str, str], float | None]
    expect_bands: bool  # layers built with expect_bands (else only write_scenes checks the count)
    nan_nodata: dict[str, bool]  # modality -> the data set declares NaN as its nodata

    def path(self, root: Path, scene: str, layer: str) -> Path:
        return root / scene / f"{scene}_{layer}.tif"


SCENES = {"scene_a": "train", "scene_b": "test"}


def _layout(rng: np.random.Generator) -> _Layout:
    height, width = (int(v) for v in rng.integers(12, 33, 2))
    tile = int(rng.choice([4, 8]))
    modalities = {m: int(rng.integers(1, 4)) for m in ("opt", "sar")}
    arrays, nodata = {}, {}
    for scene in SCENES:
        for m, channels in modalities.items():
            dtype = np.float32 if m == "sar" or rng.integers(2) else np.float64
            x = rng.normal(10.0, 3.0, (channels, height, width)).astype(dtype)
            tag = [None, -9999.0, float("nan")][int(rng.integers(3))]
            if tag is not None:  # a few nodata pixels, marked with the tag's value
                x[:, int(rng.integers(height)), int(rng.integers(width))] = tag
            arrays[scene, m], nodata[scene, m] = x, tag
        arrays[scene, "label"] = rng.integers(0, 3, (1, height, width)).astype(np.uint8)
        nodata[scene, "label"] = None
    nan_nodata = {m: bool(rng.integers(2)) for m in modalities}
    return _Layout((height, width), tile, modalities, arrays, nodata, bool(rng.integers(2)), nan_nodata)


def _write_layout(layout: _Layout, root: Path) -> None:
    for (scene, layer), array in layout.arrays.items():
        _write_tif(layout.path(root, scene, layer), array, layout.nodata[scene, layer])


def _prepare(layout: _Layout, root: Path, out: Path) -> Path:
    from benchmark.data.raster import RasterLayer, Scene, write_scenes

    def decode(window: np.ndarray, layer: Any) -> np.ndarray:
        return window[0].astype(np.uint8)

    scenes = []
    for scene, split in SCENES.items():
        inputs = {
            m: RasterLayer(
                layout.path(root, scene, m),
                expect_bands=c if layout.expect_bands else None,
                nan_nodata=layout.nan_nodata[m],
            )
            for m, c in layout.modalities.items()
        }
        label = RasterLayer(layout.path(root, scene, "label"), expect_bands=1)
        scenes.append(Scene(scene, split, inputs, label, decode))
    return write_scenes(
        out,
        scenes,
        tile_size=layout.tile,
        stride=layout.tile,
        dataset="faults",
        classes=["a", "b", "c"],
        ignore_index=255,
        modalities=layout.modalities,
        progress=False,
    )


def _geotiff_case(
    rng: np.random.Generator,
    workdir: Path,
    corrupt: Callable[[np.random.Generator, _Layout], tuple[str, str, list[str]]],
) -> None:
    """Prepare a good layout, corrupt one file (``corrupt`` edits ``layout`` and returns the
    scene, layer and the strings the error must hold besides the path), prepare again into the
    same folder: a ValueError naming the file, the earlier prepared folder intact."""
    layout = _layout(rng)
    raw, out = workdir / "raw", workdir / "prepared" / "faults"
    _write_layout(layout, raw)
    try:
        _prepare(layout, raw, out)
    except Exception as err:
        raise NotSurvived(f"the good layout does not prepare: {type(err).__name__}: {err}") from err
    before = _snapshot(out.parent)
    scene, layer, must = corrupt(rng, layout)
    path = layout.path(raw, scene, layer)
    _write_tif(path, layout.arrays[scene, layer], layout.nodata[scene, layer])
    expect_error(lambda: _prepare(layout, raw, out), ValueError, [str(path), *must])
    _require_unchanged(out.parent, before, f"{out.parent} (the prepared folder and its siblings)")


def _pick_input(rng: np.random.Generator, layout: _Layout, label: bool = False) -> tuple[str, str]:
    """A random scene and one of its modality files (or, one time in three with ``label``, its label file)."""
    scene, layer = list(SCENES)[int(rng.integers(len(SCENES)))], list(layout.modalities)[int(rng.integers(2))]
    if label and rng.integers(3) == 0:
        layer = "label"
    return scene, layer


def geotiff_band_count(rng: np.random.Generator, workdir: Path) -> None:
    """One GeoTIFF (a modality or the label) with more or fewer bands than expected."""

    def corrupt(rng: np.random.Generator, layout: _Layout) -> tuple[str, str, list[str]]:
        scene, layer = _pick_input(rng, layout, label=True)
        x = layout.arrays[scene, layer]
        expected = x.shape[0]
        bands = int(rng.choice([b for b in range(1, expected + 3) if b != expected]))
        layout.arrays[scene, layer] = np.resize(x, (bands, *x.shape[1:])).astype(x.dtype)
        return scene, layer, [f"{bands} bands", f"expected {expected}"]

    _geotiff_case(rng, workdir, corrupt)


def geotiff_size(rng: np.random.Generator, workdir: Path) -> None:
    """One GeoTIFF (a modality or the label) of another height and/or width than the scene's."""

    def corrupt(rng: np.random.Generator, layout: _Layout) -> tuple[str, str, list[str]]:
        scene, layer = _pick_input(rng, layout, label=True)
        x = layout.arrays[scene, layer]
        height, width = x.shape[1:]
        while (height, width) == x.shape[1:]:
            which = int(rng.integers(3))  # height, width or both
            dh, dw = (int(v) for v in rng.integers(-3, 4, 2))
            height = max(layout.tile, x.shape[1] + dh) if which != 1 else x.shape[1]
            width = max(layout.tile, x.shape[2] + dw) if which != 0 else x.shape[2]
        grown = np.resize(x, (x.shape[0], height, width)).astype(x.dtype)
        layout.arrays[scene, layer] = grown
        return scene, layer, [f"{height}x{width} px"]

    _geotiff_case(rng, workdir, corrupt)


def _corrupt_pixel(rng: np.random.Generator, layout: _Layout, value: float) -> tuple[str, str, list[str]]:
    """Put ``value`` at one pixel of one band of one input file, outside its nodata mask."""
    scene, layer = _pick_input(rng, layout)
    x = layout.arrays[scene, layer]
    if np.isnan(value):  # NaN is only corrupt where neither the tag nor the data set make it nodata
        layout.nan_nodata[layer] = False
        if layout.nodata[scene, layer] is not None and np.isnan(layout.nodata[scene, layer]):
            layout.nodata[scene, layer] = -9999.0 if rng.integers(2) else None
            x[np.isnan(x)] = -9999.0 if layout.nodata[scene, layer] is not None else 1.0
    if np.isfinite(value) and abs(value) > float(np.finfo(np.float32).max):
        x = layout.arrays[scene, layer] = x.astype(np.float64)  # only a float64 file can hold it
    band, row, col = int(rng.integers(x.shape[0])), int(rng.integers(x.shape[1])), int(rng.integers(x.shape[2]))
    x[band, row, col] = value
    return scene, layer, [f"band {band + 1}", f"pixel row {row}, col {col}"]


def nan_pixels(rng: np.random.Generator, workdir: Path) -> None:
    """A NaN where NaN is not nodata (other files may hold NaN where it is)."""
    _geotiff_case(rng, workdir, lambda rng, layout: _corrupt_pixel(rng, layout, float("nan")))


def inf_pixels(rng: np.random.Generator, workdir: Path) -> None:
    """+inf, -inf, or (in a float64 file) a value beyond float32's range, in any file."""
    sign = 1.0 if rng.integers(2) else -1.0
    value = sign * (float("inf") if rng.integers(3) else float(rng.uniform(1e39, 1e300)))
    _geotiff_case(rng, workdir, lambda rng, layout: _corrupt_pixel(rng, layout, value))


# --- prepared files ------------------------------------------------------------------------------


def _npy_header_bytes(data: bytes) -> int:
    """Bytes before the pixels of a ``.npy`` file (magic, version, header length, header)."""
    if data[:6] != b"\x93NUMPY":
        return 1
    if data[6] == 1:
        return 10 + int.from_bytes(data[8:10], "little")
    return 12 + int.from_bytes(data[8:12], "little")


def prepared_corrupt(rng: np.random.Generator, workdir: Path) -> None:
    """A prepared ``.npy`` or ``meta.json`` cut short: the loader names the file."""
    from benchmark.data.prepared import PreparedDataset, write_prepared

    tile = int(rng.integers(2, 9))
    modalities = {m: int(rng.integers(1, 4)) for m in ("a", "b")}
    splits = {}
    for split in ("train", "test"):
        n = int(rng.integers(1, 4))
        inputs = {m: rng.normal(size=(n, c, tile, tile)).astype(np.float32) for m, c in modalities.items()}
        splits[split] = (inputs, rng.integers(0, 2, (n, tile, tile)).astype(np.uint8))
    root = write_prepared(workdir / "prepared", splits, dataset="d", classes=["x", "y"], ignore_index=255)
    split = ["train", "test"][int(rng.integers(2))]
    files = [root / META_FILE, root / split / "label.npy", *(root / split / f"{m}.npy" for m in modalities)]
    path = files[int(rng.integers(len(files)))]
    data = path.read_bytes()
    if path.suffix == ".json":  # a JSON object cut anywhere before its closing brace is invalid
        cut = int(rng.integers(0, len(data.rstrip())))
    else:  # in the header (magic, dtype, shape) or in the pixels
        header = _npy_header_bytes(data)
        in_header = rng.integers(2) or header >= len(data)
        cut = int(rng.integers(0, header)) if in_header else int(rng.integers(header, len(data)))
    path.write_bytes(data[:cut])
    expect_error(lambda: PreparedDataset(root, split), ValueError, [str(path)])


CASES: dict[str, Callable[[np.random.Generator, Path], None]] = {
    "truncated_download": truncated_download,
    "checksum_mismatch": checksum_mismatch,
    "archive_escape": archive_escape,
    "geotiff_band_count": geotiff_band_count,
    "geotiff_size": geotiff_size,
    "nan_pixels": nan_pixels,
    "inf_pixels": inf_pixels,
    "prepared_corrupt": prepared_corrupt,
}
