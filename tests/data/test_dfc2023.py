"""DFC2023 track 2 (benchmark.data.dfc2023) on a tiny archive in the official layout.

``track2.zip`` holds ``track2/buildings_only_train.json`` (COCO, polygons, a multi-polygon,
uncompressed and compressed RLE), ``track2/train/{rgb,sar,dsm}/<name>.tif`` (5 images of 32 x 32
px: rgb 3-band uint8, sar 1-band float32, dsm float32 with a NaN void in a file whose nodata tag
is NaN and a -9999 void in files tagged -9999)
and ``track2/val/{rgb,sar}/`` (no reference, as released). The whole download + prepare stage
runs; labels are checked against an independent rasterisation (matplotlib's point-in-path on
pixel centres) and the hand-built RLE masks.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from matplotlib.path import Path as MplPath
from tiny import dataset_params, download_and_prepare, write_params

from benchmark import download
from benchmark.data import PreparedDataset, read_meta
from benchmark.data.dfc2023 import (
    DFC2023,
    HOMEPAGE,
    fill_polygon,
    rle_counts_from_string,
    split_images,
)
from benchmark.data.download import ChecksumError
from benchmark.data.raster import tile_windows

SIZE, TILE = 32, 16
NAMES = [  # official-style names: <sensor>_<city>_<lat>_<lon>
    "GF2_Brasilia_-15.8652_-47.9381",
    "SV_Copenhagen_55.6770_12.5319",
    "SV_NewYork_40.7388_-74.0108",
    "SV_SanDiego_32.7275_-117.2434",
    "SV_Brasilia_-15.8466_-47.8966",
]
IMAGE_IDS = {name: 100 + 7 * i for i, name in enumerate(NAMES)}  # COCO ids need not be 1..n
RECT = [2, 2, 10, 2, 10, 8, 2, 8]  # cols 2..9, rows 2..7
L_SHAPE = [4, 16, 12, 16, 12, 20, 8, 20, 8, 28, 4, 28]  # non-convex
TRIANGLE = [16, 3, 24, 3, 16, 8]  # hypotenuse 5x + 8y = 144 passes through no pixel centre
MULTI = [[20, 20, 24, 20, 24, 24, 20, 24], [26, 25, 30, 25, 30, 31, 26, 31]]  # one building, two parts
BORDER = [28, -2, 40, -2, 40, 6, 28, 6]  # reaches outside the image: clipped


def write_tif(path: Path, array: np.ndarray, nodata: float | None = None) -> None:
    """A GeoTIFF of ``array`` ``[C, H, W]`` in its own dtype."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", count=array.shape[0], height=array.shape[1], width=array.shape[2])
    profile.update(dtype=array.dtype.name, transform=Affine(0.5, 0.0, 0.0, 0.0, -0.5, 0.0), nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def rle_runs(mask: np.ndarray) -> list[int]:
    """COCO run lengths of a bool mask: column-major, starting with a (maybe empty) run of 0s."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + runs


def rle_string(runs: list[int]) -> str:
    """pycocotools' ``rleToString`` (the encoder, written independently of the decoder under test)."""
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def box_mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[rows, cols] = True
    return mask


RLE_PLAIN = box_mask(slice(10, 15), slice(3, 7))  # uncompressed counts, iscrowd 1
RLE_PACKED = box_mask(slice(0, 6), slice(0, 32)) | box_mask(slice(20, 32), slice(25, 28))  # compressed string


def annotations() -> list[dict[str, Any]]:
    def ann(i: int, name: str, seg: Any, crowd: int = 0) -> dict[str, Any]:
        return {"id": i, "image_id": IMAGE_IDS[name], "category_id": 1, "iscrowd": crowd, "segmentation": seg}

    a, b, c, d = NAMES[:4]
    return [
        ann(1, a, [RECT]),
        ann(2, a, MULTI),
        ann(3, b, [TRIANGLE]),
        ann(4, b, [L_SHAPE]),
        ann(5, c, {"size": [SIZE, SIZE], "counts": rle_runs(RLE_PLAIN)}, crowd=1),
        ann(6, d, {"size": [SIZE, SIZE], "counts": rle_string(rle_runs(RLE_PACKED))}, crowd=1),
        ann(7, d, [BORDER]),
    ]  # NAMES[4]: no building


def expected_label(name: str) -> np.ndarray:
    """Independent rasterisation: matplotlib point-in-path on pixel centres, union of the parts."""
    centres = np.stack(np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5), -1).reshape(-1, 2)  # (x, y)
    mask = np.zeros(SIZE * SIZE, bool)
    for ann in annotations():
        if ann["image_id"] != IMAGE_IDS[name]:
            continue
        seg = ann["segmentation"]
        if isinstance(seg, dict):
            mask |= (RLE_PLAIN if isinstance(seg["counts"], list) else RLE_PACKED).reshape(-1)
            continue
        for poly in seg:
            mask |= MplPath(np.reshape(poly, (-1, 2))).contains_points(centres)
    return mask.reshape(SIZE, SIZE).astype(np.uint8)


def raw_images(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """``{name: {modality: raw float32 [C, H, W] with NaN where nodata}}`` and what is written."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(NAMES):
        rgb = np.stack([rng.integers(lo, lo + 50, (SIZE, SIZE)) for lo in (0, 100, 200)]).astype(np.uint8)
        sar = rng.gamma(2.0, 0.05 * (i + 1), (1, SIZE, SIZE)).astype(np.float32)
        dsm = (rng.normal(3 + i, 2.0, (1, SIZE, SIZE))).astype(np.float32)
        out[name] = {"rgb": rgb, "sar": sar, "dsm": dsm}
    out[NAMES[1]]["dsm"][0, 5:9, 5:12] = np.nan  # a void as NaN (its file's nodata tag is NaN)
    out[NAMES[2]]["dsm"][0, 0:3, :] = -9999.0  # a void as the file's nodata tag
    return out


def build_archive(
    raw: Path,
    *,
    json_path: str = "track2/buildings_only_train.json",
    skip: tuple[str, ...] = (),
    images: dict[str, dict[str, np.ndarray]] | None = None,
    extra_annotations: list[dict[str, Any]] = (),
) -> Path:
    """``raw/track2.zip`` in the official layout (``skip``: member folders to leave out)."""
    stage = raw.parent / "stage"
    images = raw_images() if images is None else images
    for name, layers in images.items():
        for modality, array in layers.items():
            nodata = (np.nan if name == NAMES[1] else -9999.0) if modality == "dsm" else None
            write_tif(stage / "track2" / "train" / modality / f"{name}.tif", array, nodata)
    write_tif(stage / "track2" / "val" / "rgb" / "P_0001.tif", np.zeros((3, SIZE, SIZE), np.uint8))
    write_tif(stage / "track2" / "val" / "sar" / "P_0001.tif", np.zeros((1, SIZE, SIZE), np.float32))
    coco = {
        "images": [{"id": IMAGE_IDS[n], "file_name": f"{n}.tif", "height": SIZE, "width": SIZE} for n in NAMES],
        "annotations": annotations() + list(extra_annotations),
        "categories": [{"id": 1, "name": "building"}],
    }
    (stage / json_path).parent.mkdir(parents=True, exist_ok=True)
    (stage / json_path).write_text(json.dumps(coco))
    raw.mkdir(parents=True, exist_ok=True)
    archive = raw / "track2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(stage.rglob("*")):
            member = path.relative_to(stage).as_posix()
            if path.is_file() and not any(member.startswith(s) for s in skip):
                zf.write(path, member)
    return archive


def run(tmp_path: Path, params: dict[str, Any] | None = None) -> Path:
    """download + prepare with tile 16 / stride 16; the prepared folder."""
    section = {"tile_size": TILE, "stride": TILE, "test_fraction": 0.4, "split_seed": 0, **(params or {})}
    return download_and_prepare(tmp_path, "dfc2023", section)


def expected_split(seed: int, fraction: float, max_images: int | None = None) -> dict[str, list[str]]:
    """The documented rule, written out: permute the sorted names, cut, the first round(f * n) are test."""
    ordered = sorted(NAMES)
    perm = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))][:max_images]
    n_test = round(fraction * len(perm))
    return {"train": sorted(perm[n_test:]), "test": sorted(perm[:n_test])}


def test_prepare_tiles_labels_stats_and_split(tmp_path: Path) -> None:
    build_archive(tmp_path / "raw")
    out = run(tmp_path)
    meta = read_meta(out)
    split = expected_split(0, 0.4)
    assert len(split["test"]) == 2 and len(split["train"]) == 3
    per_image = len(tile_windows(SIZE, SIZE, TILE, TILE))
    assert per_image == 4
    assert meta["splits"] == {"train": 3 * per_image, "test": 2 * per_image}
    assert meta["modalities"] == {"rgb": 3, "sar": 1, "dsm": 1}
    assert meta["classes"] == ["background", "building"] and meta["ignore_index"] == 255
    assert meta["source"]["test_images"] == split["test"]
    assert meta["source"]["images"] == {"train": 3, "test": 2}
    assert meta["source"]["annotations"] == "track2/buildings_only_train.json"
    assert meta["source"]["folders"]["dsm"] == "track2/train/dsm"
    assert (out / "preview.png").is_file()

    images = raw_images()
    for name in images:  # -9999 is the dsm files' nodata tag
        dsm = images[name]["dsm"]
        dsm[dsm == -9999.0] = np.nan
    norm = meta["normalisation"]
    for m in ("rgb", "sar", "dsm"):  # statistics from the train images only, nodata left out
        stack = np.stack([images[n][m].astype(np.float64) for n in split["train"]])
        assert np.allclose(norm[m]["mean"], np.nanmean(stack, axis=(0, 2, 3)), rtol=1e-5), m
        assert np.allclose(norm[m]["std"], np.nanstd(stack, axis=(0, 2, 3)), rtol=1e-4), m
    assert norm["rgb"]["mean"][0] < 50 < norm["rgb"]["mean"][1] < 150 < norm["rgb"]["mean"][2]  # R, G, B order

    windows = tile_windows(SIZE, SIZE, TILE, TILE)
    for part in ("train", "test"):
        data = PreparedDataset(out, part)
        for i in range(len(data)):
            inputs, label = data[i]
            name, (r, c) = split[part][i // per_image], windows[i % per_image]
            win = (slice(r, r + TILE), slice(c, c + TILE))
            assert np.array_equal(label.numpy(), expected_label(name)[win]), (part, name, r, c)
            for m in ("rgb", "sar", "dsm"):
                x = inputs[m].numpy()
                raw = images[name][m][(slice(None), *win)].astype(np.float32)
                mean = np.reshape(norm[m]["mean"], (-1, 1, 1))
                std = np.reshape(norm[m]["std"], (-1, 1, 1))
                void = np.isnan(raw)
                assert np.all(x[void] == 0), (m, name)  # nodata -> 0 after standardising
                assert np.allclose(x[~void], ((raw - mean) / std)[~void], atol=1e-4), (m, name)
    assert sum(int(PreparedDataset(out, s).labels.sum() > 0) for s in ("train", "test")) >= 1  # buildings present


def test_labels_cover_every_segmentation_kind() -> None:
    """The hand-built expectations themselves: each kind of segmentation puts buildings where meant."""
    a, b, c, d, e = NAMES
    assert expected_label(a)[2:8, 2:10].all() and expected_label(a)[25:31, 26:30].all()
    assert expected_label(a).sum() == 6 * 8 + 16 + 24  # the rectangle and both parts of the multi-polygon
    assert expected_label(b)[16:20, 4:12].all() and not expected_label(b)[20:28, 8:12].any()  # the L's notch
    assert expected_label(c).sum() == RLE_PLAIN.sum()
    assert expected_label(d)[0:6, 28:32].all() and expected_label(e).sum() == 0


def test_fill_polygon_agrees_with_matplotlib_on_windows() -> None:
    """The rasteriser on offset windows vs. matplotlib on pixel centres (no centre on an edge)."""
    rng = np.random.default_rng(1)
    centres = np.stack(np.meshgrid(np.arange(40) + 0.5, np.arange(40) + 0.5), -1).reshape(-1, 2)
    for _ in range(20):  # random (maybe self-intersecting) polygons: no centre lies exactly on an edge
        xy = rng.uniform(-3.0, 43.0, (int(rng.integers(3, 9)), 2))
        want = MplPath(xy).contains_points(centres).reshape(40, 40)
        for row, col in ((0, 0), (7, 13)):
            got = np.zeros((20, 25), bool)
            fill_polygon(got, xy, row, col)
            assert np.array_equal(got, want[row : row + 20, col : col + 25]), xy.tolist()


def test_rle_string_decoder_round_trips() -> None:
    rng = np.random.default_rng(2)
    for _ in range(5):
        runs = rle_runs(rng.random((17, 23)) < 0.3)
        assert rle_counts_from_string(rle_string(runs)) == runs
    assert rle_counts_from_string(rle_string([0, 5, 1000, 3, 2])) == [0, 5, 1000, 3, 2]


def test_split_is_deterministic_and_max_images(tmp_path: Path) -> None:
    assert split_images(NAMES, 0.4, 0, None) == expected_split(0, 0.4)
    assert split_images(list(reversed(NAMES)), 0.4, 0, None) == expected_split(0, 0.4)  # order of listing is moot
    assert any(split_images(NAMES, 0.4, s, None) != split_images(NAMES, 0.4, 0, None) for s in range(1, 6))
    assert split_images(NAMES, 0.01, 0, None)["test"] and split_images(NAMES, 0.99, 0, None)["train"]
    build_archive(tmp_path / "raw")
    out = run(tmp_path, {"max_images": 3, "split_seed": 5})
    meta = read_meta(out)
    split = expected_split(5, 0.4, 3)
    assert meta["source"]["test_images"] == split["test"] and len(split["test"]) == 1
    assert meta["splits"] == {"train": 8, "test": 4}


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        DFC2023({"test_fraction": 1.0})
    with pytest.raises(KeyError, match="tilesize"):
        DFC2023({"tilesize": 16})
    with pytest.raises(TypeError, match="max_images"):
        DFC2023({"max_images": "all"})


def test_missing_archive_names_file_and_homepage(tmp_path: Path) -> None:
    p = write_params(tmp_path / "params.yaml", dataset_params("dfc2023", {}))
    with pytest.raises(FileNotFoundError) as err:
        download.main(["--dataset", "dfc2023", "--params", str(p), "--raw-dir", str(tmp_path / "raw")])
    assert "track2.zip" in str(err.value) and HOMEPAGE in str(err.value)


def test_archive_without_annotations_is_rejected(tmp_path: Path) -> None:
    build_archive(tmp_path / "raw", skip=("track2/buildings_only_train.json",))
    p = write_params(tmp_path / "params.yaml", dataset_params("dfc2023", {}))
    with pytest.raises(ValueError, match="buildings_only_train.json"):
        download.main(["--dataset", "dfc2023", "--params", str(p), "--raw-dir", str(tmp_path / "raw")])


def test_archive_without_a_modality_folder_names_it(tmp_path: Path) -> None:
    build_archive(tmp_path / "raw", skip=("track2/train/sar/",))
    with pytest.raises(FileNotFoundError, match=r"sar/"):
        run(tmp_path)


def test_annotations_in_another_folder_and_height_folder_are_found(tmp_path: Path) -> None:
    """The baseline README's layout: annotations/buildings_only_train.json, train/height/."""
    build_archive(tmp_path / "raw", json_path="DFC_Track_2/annotations/buildings_only_train.json")
    with zipfile.ZipFile(tmp_path / "raw" / "track2.zip") as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(tmp_path / "raw" / "track2.zip", "w") as zf:
        for name, data in members.items():
            zf.writestr(name.replace("train/dsm/", "train/height/"), data)
    meta = read_meta(run(tmp_path))
    assert meta["source"]["annotations"] == "DFC_Track_2/annotations/buildings_only_train.json"
    assert meta["source"]["folders"]["dsm"] == "track2/train/height"


def test_checksum_change_after_first_use(tmp_path: Path) -> None:
    build_archive(tmp_path / "raw")
    run(tmp_path)
    with zipfile.ZipFile(tmp_path / "raw" / "track2.zip", "a") as zf:
        zf.writestr("track2/extra.txt", "changed")
    p = tmp_path / "params_prepared.yaml"  # what download_and_prepare wrote
    with pytest.raises(ChecksumError, match="track2.zip"):
        download.main(["--dataset", "dfc2023", "--params", str(p), "--raw-dir", str(tmp_path / "raw")])


def test_image_of_wrong_size_names_the_file(tmp_path: Path) -> None:
    images = raw_images()
    images[NAMES[3]]["sar"] = images[NAMES[3]]["sar"][:, :, :30]
    build_archive(tmp_path / "raw", images=images)
    with pytest.raises(ValueError, match=rf"sar/{NAMES[3]}\.tif: 32x30 px"):
        run(tmp_path)


def test_rgb_with_wrong_band_count_names_the_file(tmp_path: Path) -> None:
    images = raw_images()
    images[NAMES[0]]["rgb"] = np.concatenate([images[NAMES[0]]["rgb"]] * 2)[:4]
    build_archive(tmp_path / "raw", images=images)
    with pytest.raises(ValueError, match=rf"rgb/{NAMES[0]}\.tif: 4 bands, expected 3"):
        run(tmp_path)


def test_annotation_of_unknown_image_is_named(tmp_path: Path) -> None:
    stray = {"id": 99, "image_id": 4242, "category_id": 1, "iscrowd": 0, "segmentation": [RECT]}
    build_archive(tmp_path / "raw", extra_annotations=[stray])
    with pytest.raises(ValueError, match="annotation 99 refers to image_id 4242"):
        run(tmp_path)


def test_annotated_image_without_files_is_named(tmp_path: Path) -> None:
    images = raw_images()
    del images[NAMES[2]]["dsm"]
    build_archive(tmp_path / "raw", images=images)
    with pytest.raises(FileNotFoundError, match=rf"dsm/{NAMES[2]}\.tif"):
        run(tmp_path)


def test_nan_the_nodata_tag_does_not_declare_names_the_file_band_and_pixel(tmp_path: Path) -> None:
    """The release documents no nodata value: a NaN in a dsm tagged -9999 is a corrupt pixel."""
    images = raw_images()
    images[NAMES[3]]["dsm"][0, 20, 9] = np.nan
    build_archive(tmp_path / "raw", images=images)
    pattern = rf"dsm/{re.escape(NAMES[3])}\.tif: NaN in band 1 at pixel row 20, col 9 .*nodata value: -9999"
    with pytest.raises(ValueError, match=pattern):
        run(tmp_path)
    assert not (tmp_path / "prepared").exists() and not list(tmp_path.glob(".prepared*"))


def test_infinite_sar_pixel_names_the_file_band_and_pixel(tmp_path: Path) -> None:
    images = raw_images()
    images[NAMES[0]]["sar"][0, 31, 0] = -np.inf
    build_archive(tmp_path / "raw", images=images)
    with pytest.raises(
        ValueError, match=rf"sar/{re.escape(NAMES[0])}\.tif: infinite value -inf in band 1 at pixel row 31, col 0"
    ):
        run(tmp_path)


def test_truncated_archive_names_it_before_and_after_its_checksum_is_recorded(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "raw")
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])  # an interrupted copy, placed before the first download
    p = write_params(tmp_path / "params.yaml", dataset_params("dfc2023", {}))
    args = ["--dataset", "dfc2023", "--params", str(p), "--raw-dir", str(tmp_path / "raw")]
    with pytest.raises(ValueError, match=rf"{re.escape(str(archive))}: not a readable zip archive .*obtain track2"):
        download.main(args)
    assert sorted(x.name for x in (tmp_path / "raw").iterdir()) == ["track2.zip"]  # no manifest, nothing extracted
    archive.write_bytes(whole)
    assert download.main(args) == 0  # the MD5 is recorded now
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ChecksumError, match=rf"{re.escape(str(archive))}: MD5 .*recorded checksum.*truncated"):
        download.main(args)
