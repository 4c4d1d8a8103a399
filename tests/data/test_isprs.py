"""ISPRS Potsdam and Vaihingen: tiny archives in the official names and formats, the whole
download + prepare stage, decoded labels, band order, voids, train-only statistics, clear errors."""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from tiny import dataset_params, download_and_prepare, write_params

from benchmark import download, prepare
from benchmark.data import PreparedDataset, read_meta
from benchmark.data.download import ChecksumError
from benchmark.data.isprs import COLOURS, HOMEPAGE, Potsdam, Vaihingen, decode_colours
from benchmark.data.raster import ArrayLayer

SIZE = 40  # px per side of every tiny scene
DSM_NODATA = -32768.0  # the float DSM's nodata tag
IGNORE = 255
MAGENTA = (255, 0, 255)  # a colour outside the ISPRS code -> ignore in both label variants
GEOTRANSFORM = Affine(0.05, 0, 370000, 0, -0.05, 5810000)  # 5 cm pixels, UTM-like origin
PUBLISHED_MD5 = {Potsdam: dict(Potsdam.md5s), Vaihingen: dict(Vaihingen.md5s)}
POTSDAM_SPLIT = {"2_10": "train", "2_11": "train", "2_13": "test"}  # 2_10: the member download checks for
VAIHINGEN_SPLIT = {1: "train", 3: "train", 2: "test"}  # area 1: the member download checks for

# the Potsdam nDSM JPEGs carry no geotransform (nor do the tiny ones): rasterio warns when opening them
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(autouse=True)
def no_published_md5(monkeypatch):
    """Tiny archives cannot match the published MD5s: trust on first use instead (one test restores them)."""
    monkeypatch.setattr(Potsdam, "md5s", {})
    monkeypatch.setattr(Vaihingen, "md5s", {})


@dataclass
class Truth:
    """What one tiny scene holds: images as written, and the class maps its labels encode."""

    image: np.ndarray  # uint8 [4, H, W] RGBIR (Potsdam) or [3, H, W] IRRG (Vaihingen)
    ndsm: np.ndarray | None  # float [1, H, W]: the JPEG nDSM as read back (lossy), Potsdam only
    dsm: np.ndarray  # float [1, H, W] in m, NaN at every void
    full: np.ndarray  # uint8 [H, W] class indices of the full reference (255: magenta pixel)
    eroded: np.ndarray  # uint8 [H, W]: ``full`` with class boundaries -> 255 (black in the file)


def _write_tif(path: Path, array: np.ndarray, nodata: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = array.shape
    with rasterio.open(
        path, "w", driver="GTiff", height=height, width=width, count=count, dtype=array.dtype,
        transform=GEOTRANSFORM, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(array)


def _write_jpeg(path: Path, array: np.ndarray) -> np.ndarray:
    """An 8-bit single-band JPEG (as the Potsdam nDSMs); returns the (lossy) values read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="JPEG", height=SIZE, width=SIZE, count=1, dtype="uint8") as dst:
            dst.write(array)
        with rasterio.open(path) as src:
            return src.read().astype(np.float64)


def _colour_label(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ISPRS colour image uint8 [3, H, W] of ``classes`` (255 -> black), with off-colour noise like (250, 3, 2)."""
    palette = np.array([*COLOURS, *[(0, 0, 0)] * (256 - len(COLOURS))], np.int32)
    rgb = palette[classes].transpose(2, 0, 1)
    rgb[:, 0, 0] = MAGENTA
    noise = rng.integers(0, 40, rgb.shape)
    return np.where(rgb > 0, rgb - noise, rgb + noise).astype(np.uint8)


def _class_maps(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blocky class map with every class (full) and the same with boundaries -> 255 (eroded)."""
    blocks = rng.permutation(np.arange(25) % 6).reshape(5, 5)
    full = np.kron(blocks, np.ones((SIZE // 5, SIZE // 5), np.int64)).astype(np.uint8)
    boundary = np.zeros(full.shape, bool)
    boundary[:, 1:] |= full[:, 1:] != full[:, :-1]
    boundary[1:, :] |= full[1:, :] != full[:-1, :]
    eroded = np.where(boundary, 255, full).astype(np.uint8)
    full[0, 0] = eroded[0, 0] = 255  # the magenta pixel
    return full, eroded


def _zip(path: Path, members: dict[str, Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, src in members.items():
            zf.write(src, name)


def write_isprs_archives(
    raw: Path,
    dataset: str,
    split: dict,
    *,
    label_size: dict | None = None,
    image_bands: int | None = None,
    nan_dsm: str | None = None,
) -> dict:
    """Write every official archive of ``dataset`` ("potsdam" or "vaihingen") for the tiles in
    ``split`` ({tile: "train" | "test"}) into ``raw``; return {tile: :class:`Truth`}.

    Test tiles are brighter than training tiles (so statistics that include them would differ).
    ``label_size`` ({tile: (h, w)}) writes a wrongly sized label; ``image_bands`` a wrong band count;
    ``nan_dsm`` (a tile) puts a NaN at row 3, col 7 of that tile's float DSM, which its nodata tag
    does not declare (ISPRS documents no NaN voids: a corrupt pixel).
    """
    staging, truths = raw.parent / f"{raw.name}_staging", {}
    members: dict[str, dict[str, Path]] = {}

    def add(archive: str, member: str) -> Path:
        path = staging / archive / member
        members.setdefault(archive, {})[member] = path
        return path

    for i, (tile, part) in enumerate(split.items()):
        rng = np.random.default_rng(i)
        low = 0 if part == "train" else 150
        bands = image_bands or (4 if dataset == "potsdam" else 3)
        image = rng.integers(low, low + 100, (bands, SIZE, SIZE)).astype(np.uint8)
        dsm = rng.uniform(30 + low, 60 + low, (1, SIZE, SIZE)).astype(np.float32)
        dsm[0, 1, :5] = DSM_NODATA  # voids: the nodata tag and an untagged -9999
        dsm[0, 2, 3:6] = -9999.0
        if tile == nan_dsm:
            dsm[0, 3, 7] = np.nan
        full, eroded = _class_maps(rng)
        h, w = (label_size or {}).get(tile, (SIZE, SIZE))
        colours = {v: _colour_label(m, rng)[:, :h, :w] for v, m in (("full", full), ("eroded", eroded))}
        truth_dsm = np.where(dsm <= -9999, np.nan, dsm).astype(np.float64)
        if dataset == "potsdam":
            padded = "_".join(f"{int(n):02d}" for n in tile.split("_"))
            _write_tif(add("4_Ortho_RGBIR.zip", f"4_Ortho_RGBIR/top_potsdam_{tile}_RGBIR.tif"), image)
            ndsm = rng.integers(low, low + 100, (1, SIZE, SIZE)).astype(np.uint8)
            member = f"1_DSM_normalisation/dsm_potsdam_{padded}_normalized_lastools.jpg"
            ndsm_read = _write_jpeg(add("1_DSM_normalisation.zip", member), ndsm)
            _write_tif(add("1_DSM.zip", f"1_DSM/dsm_potsdam_{padded}.tif"), dsm, nodata=DSM_NODATA)
            member = f"top_potsdam_{tile}_label_noBoundary.tif"
            _write_tif(add("5_Labels_all_noBoundary.zip", member), colours["eroded"])
            _write_tif(add("5_Labels_all.zip", f"top_potsdam_{tile}_label.tif"), colours["full"])
        else:
            ndsm_read = None
            main = "ISPRS_semantic_labeling_Vaihingen.zip"
            _write_tif(add(main, f"top/top_mosaic_09cm_area{tile}.tif"), image)
            _write_tif(add(main, f"dsm/dsm_09cm_matching_area{tile}.tif"), dsm, nodata=DSM_NODATA)
            # training labels for participants: the same file name as the image in top/ (a decoy)
            _write_tif(add(main, f"gts_for_participants/top_mosaic_09cm_area{tile}.tif"), colours["full"])
            eroded_zip = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip"
            _write_tif(add(eroded_zip, f"top_mosaic_09cm_area{tile}_noBoundary.tif"), colours["eroded"])
            full_zip = "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip"
            _write_tif(add(full_zip, f"top_mosaic_09cm_area{tile}.tif"), colours["full"])
        truths[tile] = Truth(image, ndsm_read, truth_dsm, full, eroded)
    for archive, files in members.items():
        _zip(raw / archive, files)
    return truths


def windows(starts: list[int]) -> list[tuple[int, int]]:
    return [(r, c) for r in starts for c in starts]


def stacked(arrays: list[np.ndarray], size: int, starts: list[int]) -> np.ndarray:
    """Every window of every array, float64 [N, C, size, size], in the prepared tile order."""
    return np.stack([a[:, r : r + size, c : c + size] for a in arrays for r, c in windows(starts)]).astype(np.float64)


def check_modality(
    out: Path, meta: dict, name: str, train: list[np.ndarray], test: list[np.ndarray], size, starts, dtype: str
):
    """Statistics from the train tiles only (NaN excluded); every tile loads as (raw - mean) / std,
    NaN -> 0, and is stored exactly as the source holds it, in the source file's ``dtype``."""
    x_train, x_test = stacked(train, size, starts), stacked(test, size, starts)
    mean, std = np.nanmean(x_train, axis=(0, 2, 3)), np.nanstd(x_train, axis=(0, 2, 3))
    np.testing.assert_allclose(meta["normalisation"][name]["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(meta["normalisation"][name]["std"], std, rtol=1e-5)
    with_test = np.nanmean(np.concatenate([x_train, x_test]), axis=(0, 2, 3))
    assert np.all(np.abs(with_test - mean) > 1), "the test tiles must be distinguishable in the statistics"
    for split, x in (("train", x_train), ("test", x_test)):
        data = PreparedDataset(out, split)
        got = np.stack([data[i][0][name].numpy() for i in range(len(data))])
        expected = np.nan_to_num((x - mean[None, :, None, None]) / std[None, :, None, None], nan=0.0)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"{split}/{name}")
        assert (got[np.isnan(x)] == 0).all()
        stored = np.load(out / split / f"{name}.npy")
        assert stored.dtype == dtype, (name, stored.dtype)
        np.testing.assert_array_equal(stored[~np.isnan(x)], x[~np.isnan(x)])


def check_labels(out: Path, maps: dict[str, list[np.ndarray]], size: int, starts: list[int]) -> None:
    """Train tiles keep overlapping labels; test tiles score every pixel of a scene exactly once."""
    for split, arrays in maps.items():
        expected = stacked([m[None] for m in arrays], size, starts)[:, 0]
        got = np.load(out / split / "label.npy")
        if split == "test":
            tiles_per_scene = len(windows(starts))
            for k, label in enumerate(arrays):
                seen = np.zeros(label.shape, int)
                for i, (r, c) in enumerate(windows(starts)):
                    tile = got[k * tiles_per_scene + i]
                    seen[r : r + size, c : c + size] += tile != IGNORE
                    keep = tile != IGNORE
                    np.testing.assert_array_equal(tile[keep], expected[k * tiles_per_scene + i][keep])
                np.testing.assert_array_equal(seen, label != IGNORE, err_msg="each labelled test pixel once")
        else:
            np.testing.assert_array_equal(got, expected, err_msg=split)


def test_potsdam_ndsm_eroded_labels(tmp_path):
    raw = tmp_path / "raw"
    truth = write_isprs_archives(raw, "potsdam", POTSDAM_SPLIT)
    params = {"tile_size": 16, "stride": 12, "train_tiles": ["2_10", "2_11"], "test_tiles": ["2_13"]}
    out = download_and_prepare(tmp_path, "potsdam", params, raw, "out")
    starts = [0, 12, 24]  # 40 px, tiles of 16 every 12 px: 0, 12, 24 (= 40 - 16) per axis
    meta = read_meta(out)
    assert meta["splits"] == {"train": 2 * 9, "test": 9}
    assert meta["modalities"] == {"rgb": 3, "nir": 1, "dsm": 1}
    assert meta["classes"] == ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"]
    assert meta["ignore_index"] == 255
    src = meta["source"]
    assert (src["labels"], src["dsm"], src["train_tiles"], src["test_tiles"]) == (
        "eroded",
        "ndsm",
        ["2_10", "2_11"],
        ["2_13"],
    )
    assert (src["tile_size"], src["stride"]) == (16, 12)
    manifest = json.loads((raw / "manifest.json").read_text())["files"]
    assert src["archives"] == {name: manifest[name]["md5"] for name in manifest}
    assert list(src["archives"]) == ["4_Ortho_RGBIR.zip", "1_DSM_normalisation.zip", "5_Labels_all_noBoundary.zip"]
    train, test = [truth["2_10"], truth["2_11"]], [truth["2_13"]]
    check_modality(out, meta, "rgb", [t.image[:3] for t in train], [t.image[:3] for t in test], 16, starts, "uint8")
    check_modality(out, meta, "nir", [t.image[3:] for t in train], [t.image[3:] for t in test], 16, starts, "uint8")
    check_modality(out, meta, "dsm", [t.ndsm for t in train], [t.ndsm for t in test], 16, starts, "uint8")
    check_labels(out, {"train": [t.eroded for t in train], "test": [t.eroded for t in test]}, 16, starts)
    labels = np.load(out / "train" / "label.npy")
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5, 255}  # every class, and the black boundaries ignored
    assert (out / "preview.png").is_file()


def test_potsdam_float_dsm_voids_and_full_labels(tmp_path):
    raw = tmp_path / "raw"
    truth = write_isprs_archives(raw, "potsdam", POTSDAM_SPLIT)
    params = {"tile_size": 20, "stride": 20, "labels": "full", "dsm": "dsm", "train_tiles": ["2_10", "2_11"]}
    params["test_tiles"] = ["2_13"]
    out = download_and_prepare(tmp_path, "potsdam", params, raw, "out")
    starts = [0, 20]
    meta = read_meta(out)
    assert meta["splits"] == {"train": 8, "test": 4}
    assert sorted(p.name for p in (raw / "extracted").iterdir()) == ["1_DSM", "4_Ortho_RGBIR", "5_Labels_all"]
    train, test = [truth["2_10"], truth["2_11"]], [truth["2_13"]]
    assert np.isnan(train[0].dsm).sum() == 5 + 3  # tagged nodata and <= -9999 voids
    check_modality(out, meta, "dsm", [t.dsm for t in train], [t.dsm for t in test], 20, starts, "float32")
    check_modality(out, meta, "nir", [t.image[3:] for t in train], [t.image[3:] for t in test], 20, starts, "uint8")
    check_labels(out, {"train": [t.full for t in train], "test": [t.full for t in test]}, 20, starts)
    assert (np.load(out / "train" / "label.npy") == 255).sum() == 2  # only the magenta pixel of each scene


def test_vaihingen_irrg_dsm_and_label_variants(tmp_path):
    raw = tmp_path / "raw"
    truth = write_isprs_archives(raw, "vaihingen", VAIHINGEN_SPLIT)
    params = {"tile_size": 16, "stride": 12, "train_tiles": [1, 3], "test_tiles": [2]}
    out = download_and_prepare(tmp_path, "vaihingen", params, raw, "out")
    starts = [0, 12, 24]
    meta = read_meta(out)
    assert meta["splits"] == {"train": 18, "test": 9}
    assert meta["modalities"] == {"irrg": 3, "dsm": 1}
    assert meta["source"]["train_tiles"] == [1, 3] and meta["source"]["labels"] == "eroded"
    train, test = [truth[1], truth[3]], [truth[2]]
    # irrg comes from top/, not from the label of the same name in gts_for_participants/
    check_modality(out, meta, "irrg", [t.image for t in train], [t.image for t in test], 16, starts, "uint8")
    check_modality(out, meta, "dsm", [t.dsm for t in train], [t.dsm for t in test], 16, starts, "float32")
    check_labels(out, {"train": [t.eroded for t in train], "test": [t.eroded for t in test]}, 16, starts)
    out = download_and_prepare(tmp_path, "vaihingen", {**params, "labels": "full"}, raw, "full")
    check_labels(out, {"train": [t.full for t in train], "test": [t.full for t in test]}, 16, starts)


def test_decode_colours_thresholds_and_ignores():
    colours = [(250, 3, 2), (255, 255, 255), (200, 200, 130), (0, 0, 255), (5, 140, 250), (0, 255, 0), (255, 250, 9)]
    colours += [(0, 0, 0), MAGENTA, (127, 127, 127), (np.nan, 255, 255)]
    window = np.array(colours, np.float32).T[:, None, :]  # [3, 1, 11]
    got = decode_colours(window, ArrayLayer("x", window))[0].tolist()
    assert got == [5, 0, 0, 1, 2, 3, 4, 255, 255, 255, 255]
    with pytest.raises(ValueError, match="lbl: 1 bands, expected 3"):
        decode_colours(window[:1], ArrayLayer("lbl", window[:1]))


def _params(tmp_path: Path, dataset: str = "potsdam", **extra) -> list[str]:
    values = {"tile_size": 16, "stride": 16, "train_tiles": ["2_10", "2_11"], "test_tiles": ["2_13"], **extra}
    path = write_params(tmp_path / "params.yaml", dataset_params(dataset, values))
    return ["--dataset", dataset, "--params", str(path), "--raw-dir", str(tmp_path / "raw")]


def test_missing_archive_names_it_and_the_homepage(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        download.main(_params(tmp_path))
    message = str(err.value)
    for name in ("4_Ortho_RGBIR.zip", "1_DSM_normalisation.zip", "5_Labels_all_noBoundary.zip", HOMEPAGE):
        assert name in message
    assert "1_DSM.zip" not in message and "5_Labels_all.zip" not in message  # not needed by these params


def test_wrong_archive_and_changed_checksum(tmp_path):
    raw = tmp_path / "raw"
    write_isprs_archives(raw, "potsdam", POTSDAM_SPLIT)
    args = _params(tmp_path)
    labels = raw / "5_Labels_all_noBoundary.zip"
    good = labels.read_bytes()
    _zip(labels, {"readme.txt": Path(__file__)})
    with pytest.raises(ValueError, match=r"5_Labels_all_noBoundary\.zip: holds no file 'top_potsdam_2_10_label"):
        download.main(args)
    labels.write_bytes(good)
    assert download.main(args) == 0  # the MD5 is recorded on first use
    labels.write_bytes(good + b"\0")
    with pytest.raises(ChecksumError, match=r"5_Labels_all_noBoundary\.zip: MD5 .*recorded"):
        download.main(args)


def test_published_checksum_is_enforced(tmp_path, monkeypatch):
    monkeypatch.setattr(Potsdam, "md5s", PUBLISHED_MD5[Potsdam])
    write_isprs_archives(tmp_path / "raw", "potsdam", POTSDAM_SPLIT)
    with pytest.raises(ChecksumError, match=r"4_Ortho_RGBIR\.zip: MD5 .*c4a8f7d8c7196dd4eba4addd0aae10c1 \(published"):
        download.main(_params(tmp_path))


def test_wrong_label_size_and_band_count_name_the_file(tmp_path):
    write_isprs_archives(tmp_path / "raw", "potsdam", POTSDAM_SPLIT, label_size={"2_11": (40, 36)})
    args = _params(tmp_path)
    download.main(args)
    with pytest.raises(ValueError, match=r"but the label \S*top_potsdam_2_11_label_noBoundary\.tif is 40x36 px"):
        prepare.main([*args, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    args = _params(tmp_path)
    args[args.index("--raw-dir") + 1] = str(tmp_path / "raw3")
    write_isprs_archives(tmp_path / "raw3", "potsdam", POTSDAM_SPLIT, image_bands=3)
    download.main(args)
    with pytest.raises(ValueError, match=r"top_potsdam_2_10_RGBIR\.tif: 3 bands, expected 4"):
        prepare.main([*args, "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("dataset", ["potsdam", "vaihingen"])
def test_undeclared_nan_in_the_float_dsm_names_the_file_band_and_pixel(tmp_path, dataset):
    """ISPRS documents no NaN voids: a NaN the file's nodata tag (-32768 here) does not declare is corrupt."""
    split = POTSDAM_SPLIT if dataset == "potsdam" else VAIHINGEN_SPLIT
    tile = next(t for t, part in split.items() if part == "test")
    write_isprs_archives(tmp_path / "raw", dataset, split, nan_dsm=tile)
    extra = {"dsm": "dsm"} if dataset == "potsdam" else {}
    train = [t for t, part in split.items() if part == "train"]
    args = _params(tmp_path, dataset, train_tiles=train, test_tiles=[tile], **extra)
    download.main(args)
    padded = "_".join(f"{int(n):02d}" for n in str(tile).split("_"))
    name = f"dsm_potsdam_{padded}.tif" if dataset == "potsdam" else f"dsm_09cm_matching_area{tile}.tif"
    pattern = rf"{re.escape(name)}: NaN in band 1 at pixel row 3, col 7 .*nodata value: -32768"
    with pytest.raises(ValueError, match=pattern):
        prepare.main([*args, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary folder left beside it


def test_missing_tile_and_prepare_before_download(tmp_path):
    write_isprs_archives(tmp_path / "raw", "vaihingen", VAIHINGEN_SPLIT)
    args = _params(tmp_path, "vaihingen", train_tiles=[1, 5], test_tiles=[2])
    with pytest.raises(FileNotFoundError, match=r"ISPRS_semantic_labeling_Vaihingen\.zip.*not verified"):
        prepare.main([*args, "--out", str(tmp_path / "out")])
    download.main(args)
    pattern = r"top_mosaic_09cm_area5\.tif: not found in \S*extracted/ISPRS_semantic_labeling_Vaihingen \(extracted"
    with pytest.raises(FileNotFoundError, match=pattern + r" from \S*ISPRS_semantic_labeling_Vaihingen\.zip\)"):
        prepare.main([*args, "--out", str(tmp_path / "out")])


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"tile_sise": 16}, KeyError, "potsdam: unknown key.*tile_sise"),
        ({"labels": "boundary"}, ValueError, "potsdam.labels: 'boundary'"),
        ({"dsm": "lidar"}, ValueError, "potsdam.dsm: 'lidar'"),
        ({"stride": 0}, ValueError, re.escape("potsdam.stride: 0 is not allowed; must be an int >= 1")),
        ({"train_tiles": ["2_10", "9_9"]}, ValueError, r"potsdam.train_tiles: .* holds unknown tile\(s\) \['9_9'\]"),
        ({"train_tiles": ["2_13"]}, ValueError, r"potsdam.test_tiles: .* shares \['2_13'\]"),
        ({"test_tiles": []}, ValueError, re.escape("potsdam.test_tiles: [] is empty or repeats a tile")),
        ({"train_tiles": [2, 10]}, TypeError, "potsdam.train_tiles"),
    ],
)
def test_params_are_validated(params, error, match):
    with pytest.raises(error, match=match):
        Potsdam(params)


def test_defaults_are_the_official_split():
    potsdam, vaihingen = Potsdam({}), Vaihingen({})
    assert len(potsdam.config.train) == 24 and len(potsdam.config.test) == 14
    assert len(vaihingen.config.train) == 16 and len(vaihingen.config.test) == 17
    assert (potsdam.config.tile_size, potsdam.config.stride, potsdam.config.labels) == (512, 512, "eroded")
    assert [a.filename for a in Potsdam({"dsm": "dsm", "labels": "full"}).archives()] == [
        "4_Ortho_RGBIR.zip",
        "1_DSM.zip",
        "5_Labels_all.zip",
    ]
    with pytest.raises(ValueError, match=re.escape("vaihingen.train_tiles: [9] holds unknown tile(s) [9]")):
        Vaihingen({"train_tiles": [9]})


def test_rerun_does_not_rehash_unchanged_archives_and_keeps_other_variants(tmp_path, monkeypatch):
    """A second download stage hashes nothing whose size and mtime are recorded; switching the
    label variant keeps the first variant's recorded checksum."""
    from benchmark.data import manual

    write_isprs_archives(tmp_path / "raw", "potsdam", POTSDAM_SPLIT)
    assert download.main(_params(tmp_path)) == 0
    hashed, real_md5 = [], manual.md5_file
    monkeypatch.setattr(manual, "md5_file", lambda path: hashed.append(path.name) or real_md5(path))
    assert download.main(_params(tmp_path)) == 0
    assert hashed == []
    assert download.main(_params(tmp_path, labels="full")) == 0
    assert hashed == ["5_Labels_all.zip"]  # only the archive not verified before
    files = json.loads((tmp_path / "raw" / "manifest.json").read_text())["files"]
    assert {"5_Labels_all.zip", "5_Labels_all_noBoundary.zip"} <= set(files)
    eroded = tmp_path / "raw" / "5_Labels_all_noBoundary.zip"
    data = eroded.read_bytes()
    eroded.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # changed: size same, mtime new -> hashed, refused
    with pytest.raises(ChecksumError, match=r"5_Labels_all_noBoundary.zip: MD5 .* \(recorded checksum\)"):
        download.main(_params(tmp_path))


def npy_data_bytes(path: Path) -> int:
    """Bytes of a ``.npy`` file after its header: what its values take on disk."""
    with path.open("rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read_header(f)  # moves to the first value
        return path.stat().st_size - f.tell()


@pytest.mark.parametrize(("dsm", "dsm_bytes"), [("ndsm", 1), ("dsm", 4)])
def test_potsdam_prepared_bytes_per_pixel_and_channel(tmp_path, dsm, dsm_bytes):
    """The prepared copy keeps Potsdam's 8-bit imagery (and nDSM) at one byte per pixel and channel
    and the DSM in metres at four: 6 (or 9) bytes per pixel with the label, against 21 as
    standardised float32. docs/datasets.md's size table is these figures times each data set's pixels."""
    raw = tmp_path / "raw"
    write_isprs_archives(raw, "potsdam", POTSDAM_SPLIT)
    params = {"tile_size": 20, "stride": 20, "dsm": dsm, "train_tiles": ["2_10", "2_11"], "test_tiles": ["2_13"]}
    out = download_and_prepare(tmp_path, "potsdam", params, raw, "out")
    meta = read_meta(out)
    expected = {"rgb": 1, "nir": 1, "dsm": dsm_bytes, "label": 1}
    total = 0
    for split, tiles in meta["splits"].items():
        for name, channels in [*meta["modalities"].items(), ("label", 1)]:
            values = tiles * 20 * 20 * channels
            stored = npy_data_bytes(out / split / f"{name}.npy")
            assert stored == values * expected[name], (split, name)
            total += stored
    assert total / (sum(meta["splits"].values()) * 20 * 20) == 5 + dsm_bytes
