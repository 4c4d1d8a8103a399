"""Sen1Floods11 on real bytes: the reader on the shared sample chip, the sample benchmark, and the
whole download + prepare stage against a local copy of the bucket's layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fake_gcs import serve_fake_gcs
from tiny import dataset_params, write_params

from benchmark import download, prepare
from benchmark.data import PreparedDataset, read_meta
from benchmark.data import download as dl
from benchmark.data.download import ChecksumError
from benchmark.data.raster import RasterLayer
from benchmark.data.sen1floods11 import S2_BANDS, chip_layers, decode_water_label

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sen1floods11_sample"
CHIP = "Spain_7370579"
needs_sample = pytest.mark.skipif(
    not (SAMPLE / "S1Hand" / f"{CHIP}_S1Hand.tif").is_file(),
    reason=f"real Sen1Floods11 sample not found at {SAMPLE} (it sits beside the checkout in this project's CI)",
)


def raw(layer: str) -> np.ndarray:
    """The sample's layer as stored: rasterio, no reader of ours involved."""
    with rasterio.open(SAMPLE / layer / f"{CHIP}_{layer}.tif") as src:
        return src.read()


@needs_sample
def test_reader_shapes_dtypes_nodata_and_band_order():
    inputs, label = chip_layers(SAMPLE, CHIP)
    s1, s2 = (inputs[m].read(0, 0, 512, 512) for m in ("s1", "s2"))
    lab = label.read(0, 0, 512, 512)
    assert s1.shape == (2, 512, 512) and s2.shape == (13, 512, 512) and lab.shape == (1, 512, 512)
    assert s1.dtype == s2.dtype == np.float32
    raw_s1, raw_s2, raw_label = raw("S1Hand"), raw("S2Hand"), raw("LabelHand")
    assert raw_s1.dtype == np.float32 and raw_s2.dtype == np.int16 and raw_label.dtype == np.int16
    # S1: NaN is its nodata, kept as NaN; dB values pass through unchanged, VV then VH
    np.testing.assert_array_equal(np.isnan(s1), np.isnan(raw_s1))
    np.testing.assert_array_equal(s1, raw_s1)
    # S2: 0 is the file's nodata tag -> NaN; the rest are the int16 values, in band order B1..B12
    np.testing.assert_array_equal(np.isnan(s2), raw_s2 == 0)
    np.testing.assert_array_equal(np.nan_to_num(s2, nan=0).astype(np.int16), raw_s2)
    with rasterio.open(SAMPLE / "S2Hand" / f"{CHIP}_S2Hand.tif") as src:
        assert src.descriptions == S2_BANDS
    # label: -1 -> ignore, 0 / 1 kept; counts from the sample's README
    decoded = decode_water_label(lab, label)
    assert decoded.dtype == np.uint8
    assert [(decoded == v).sum() for v in (0, 1, 255)] == [192_010, 70_035, 99]
    np.testing.assert_array_equal(decoded == 255, raw_label[0] == -1)


@needs_sample
def test_water_has_lower_vh_backscatter():
    """Calm water reflects the radar pulse away from the sensor: far lower VH (dB) than land."""
    inputs, label = chip_layers(SAMPLE, CHIP)
    vh = inputs["s1"].read(0, 0, 512, 512)[1]
    water = decode_water_label(label.read(0, 0, 512, 512), label)
    valid = ~np.isnan(vh)
    water_vh, land_vh = np.median(vh[(water == 1) & valid]), np.median(vh[(water == 0) & valid])
    assert water_vh < land_vh - 3.0, (water_vh, land_vh)


@needs_sample
def test_reader_refuses_bands_in_another_order(tmp_path):
    with rasterio.open(SAMPLE / "S1Hand" / f"{CHIP}_S1Hand.tif") as src:
        profile, data = src.profile, src.read()
    swapped = tmp_path / "S1Hand" / f"{CHIP}_S1Hand.tif"
    swapped.parent.mkdir()
    with rasterio.open(swapped, "w", **profile) as dst:
        dst.write(data[::-1])
        dst.descriptions = ("VH", "VV")
    with pytest.raises(ValueError, match=r"S1Hand.tif: bands \['VH', 'VV'\], expected \['VV', 'VH'\]"):
        chip_layers(tmp_path, CHIP)[0]["s1"].read(0, 0, 8, 8)
    with pytest.raises(ValueError, match="S1Hand.tif: 2 bands, expected 13"):
        RasterLayer(swapped, expect_bands=13).shape


def _write_s1(path: Path, array: np.ndarray, nodata: float | None) -> None:
    from rasterio.transform import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", count=2, height=array.shape[1], width=array.shape[2], dtype="float32")
    with rasterio.open(path, "w", **profile, nodata=nodata, transform=Affine(1e-4, 0, -3.0, 0, -1e-4, 40.0)) as dst:
        dst.write(array)
        dst.descriptions = ("VV", "VH")


@pytest.mark.parametrize("nodata", [float("nan"), None, -9999.0])
def test_s1_nan_is_nodata_whatever_the_tag_but_inf_is_refused(tmp_path, nodata):
    """Sen1Floods11 marks S1 no data with NaN (the released chips tag it): NaN is nodata in s1 even
    in a chip tagged otherwise or not at all; an infinite backscatter is a corrupt pixel."""
    s1 = np.random.default_rng(0).normal(-15.0, 4.0, (2, 16, 16)).astype(np.float32)
    s1[1, 3:5, 7] = np.nan
    path = tmp_path / "S1Hand" / "Ev_1_S1Hand.tif"
    _write_s1(path, s1, nodata)
    got = chip_layers(tmp_path, "Ev_1")[0]["s1"].read(0, 0, 16, 16)
    np.testing.assert_array_equal(got, s1)  # NaN kept as nodata, every other value as stored
    s1[0, 9, 2] = -np.inf
    _write_s1(path, s1, nodata)
    with pytest.raises(ValueError, match=r"Ev_1_S1Hand\.tif: infinite value -inf in band 1 at pixel row 9, col 2"):
        chip_layers(tmp_path, "Ev_1")[0]["s1"].read(0, 0, 16, 16)


@needs_sample
def test_sample_benchmark_tiles_are_disjoint_and_cover_the_chip(tmp_path):
    params = write_params(tmp_path / "params.yaml", dataset_params("sen1floods11-sample", {"source_dir": str(SAMPLE)}))
    args = ["--dataset", "sen1floods11-sample", "--params", str(params), "--raw-dir", str(tmp_path / "raw")]
    download.main(args)
    out = tmp_path / "prepared"
    prepare.main([*args, "--out", str(out)])
    meta = read_meta(out)
    assert meta["splits"] == {"train": 48, "test": 16} and meta["modalities"] == {"s1": 2, "s2": 13}
    blocks = meta["source"]["blocks"]
    assert sorted(name for name, split in blocks.items() if split == "test") == [
        f"{CHIP}_block00",
        f"{CHIP}_block13",
        f"{CHIP}_block22",
        f"{CHIP}_block31",
    ]
    # 64 tiles of 64 px partition the chip: every labelled pixel lands in exactly one tile
    labels = np.concatenate([np.load(out / split / "label.npy") for split in ("train", "test")])
    assert [(labels == v).sum() for v in (0, 1, 255)] == [192_010, 70_035, 99]
    # statistics come from the train blocks only: recompute them from the raw chip
    train_mask = np.zeros((512, 512), bool)
    for name, split in blocks.items():
        r, c = int(name[-2]), int(name[-1])
        train_mask[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128] = split == "train"
    s1 = raw("S1Hand")
    expected = [np.nanmean(s1[b][train_mask]) for b in range(2)]
    np.testing.assert_allclose(meta["normalisation"]["s1"]["mean"], expected, rtol=1e-6)
    s2 = raw("S2Hand").astype(np.float64)
    expected = [s2[b][train_mask & (s2[b] != 0)].std() for b in range(13)]
    np.testing.assert_allclose(meta["normalisation"]["s2"]["std"], expected, rtol=1e-6)
    inputs, label = PreparedDataset(out, "test")[0]
    assert inputs["s2"].shape == (13, 64, 64) and label.shape == (64, 64)
    assert (out / "preview.png").is_file()
    # kept as the chip holds them: S2 int16 with its nodata tag 0, S1 float32 with NaN; every tile exact
    assert meta["storage"] == {"s1": {"dtype": "float32", "nodata": None}, "s2": {"dtype": "int16", "nodata": 0}}
    tiles = {
        m: np.concatenate([np.load(out / split / f"{m}.npy") for split in ("train", "test")]) for m in ("s1", "s2")
    }
    assert tiles["s2"].dtype == np.int16 and tiles["s1"].dtype == np.float32
    chip = {"s1": s1, "s2": raw("S2Hand")}
    order = [name for split in ("train", "test") for name, s in blocks.items() if s == split]
    for m, stored in tiles.items():
        for k, name in enumerate(order):  # each 128 px block is 2 x 2 tiles of 64 px, row-major
            r, c = int(name[-2]) * 128, int(name[-1]) * 128
            for i, (dr, dc) in enumerate([(0, 0), (0, 64), (64, 0), (64, 64)]):
                window = chip[m][:, r + dr : r + dr + 64, c + dc : c + dc + 64]
                np.testing.assert_array_equal(stored[4 * k + i], window, err_msg=f"{m} {name} {i}")


@needs_sample
def test_sample_download_refuses_a_changed_file(tmp_path):
    copy = tmp_path / "sample"
    shutil.copytree(SAMPLE, copy)
    label = copy / "LabelHand" / f"{CHIP}_LabelHand.tif"
    label.write_bytes(label.read_bytes()[:-10] + b"0123456789")
    params = write_params(tmp_path / "params.yaml", dataset_params("sen1floods11-sample", {"source_dir": str(copy)}))
    with pytest.raises(ChecksumError, match="LabelHand.tif: SHA-256"):
        download.main(["--dataset", "sen1floods11-sample", "--params", str(params), "--raw-dir", str(tmp_path)])


def test_sample_missing_names_the_folder(tmp_path):
    params = write_params(
        tmp_path / "params.yaml", dataset_params("sen1floods11-sample", {"source_dir": str(tmp_path / "nope")})
    )
    with pytest.raises(FileNotFoundError, match="nope/S1Hand/Spain_7370579_S1Hand.tif: Sen1Floods11 sample not found"):
        download.main(["--dataset", "sen1floods11-sample", "--params", str(params), "--raw-dir", str(tmp_path)])


@needs_sample
def test_download_and_prepare_from_a_local_copy_of_the_bucket(tmp_path, monkeypatch):
    """The whole stage on real bytes: the v1.1 layout served on 127.0.0.1, four chips (the sample
    under four names), one transfer cut short and resumed, then the official splits prepared."""
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)
    chips = {"train": ["Spain_7370579", "Spain_1"], "valid": ["Ghana_2"], "test": ["Bolivia_3"]}
    hand = "v1.1/data/flood_events/HandLabeled"
    raw_dir, out = tmp_path / "raw", tmp_path / "prepared"
    with serve_fake_gcs() as gcs:
        for split, names in chips.items():
            for chip in names:
                for layer in ("S1Hand", "S2Hand", "LabelHand"):
                    gcs.add(f"{hand}/{layer}/{chip}_{layer}.tif", (SAMPLE / layer / f"{CHIP}_{layer}.tif").read_bytes())
            rows = "".join(f"{chip}_S1Hand.tif,{chip}_LabelHand.tif\n" for chip in names)
            gcs.add(f"v1.1/splits/flood_handlabeled/flood_{split}_data.csv", rows.encode())
        gcs.add(f"{hand}/JRCWaterHand/Spain_1_JRCWaterHand.tif", b"a layer the suite does not use")
        gcs.objects[f"{hand}/S2Hand/Spain_1_S2Hand.tif"].truncate = 1  # first reply cut in half
        section = {"api": gcs.api, "tile_size": 256, "stride": 256, "workers": 4}
        params = write_params(tmp_path / "params.yaml", dataset_params("sen1floods11", section))
        args = ["--dataset", "sen1floods11", "--params", str(params), "--raw-dir", str(raw_dir)]
        download.main(args)
        ranges = [r for name, r in gcs.object_requests() if name.endswith("Spain_1_S2Hand.tif")]
    assert ranges[0] is None and ranges[1].startswith("bytes=")  # resumed, not restarted
    assert download.main(args) == 0  # the server is gone: a finished download needs no network again
    files = json.loads((raw_dir / "manifest.json").read_text())["files"]
    assert len(files) == 4 * 3 + 3 and not any("JRCWaterHand" in path for path in files)
    assert "splits/flood_handlabeled/flood_test_data.csv" in files
    tif = raw_dir / "data/flood_events/HandLabeled/S2Hand/Spain_1_S2Hand.tif"
    assert tif.read_bytes() == (SAMPLE / "S2Hand" / f"{CHIP}_S2Hand.tif").read_bytes()

    prepare.main([*args, "--out", str(out)])
    meta = read_meta(out)
    assert meta["splits"] == {"train": 8, "valid": 4, "test": 4}
    test_labels = np.load(out / "test" / "label.npy")
    assert [(test_labels == v).sum() for v in (0, 1, 255)] == [192_010, 70_035, 99]

    data = tif.read_bytes()
    tif.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # changed after the download verified it
    with pytest.raises(ChecksumError, match="Spain_1_S2Hand.tif"):
        prepare.main([*args, "--out", str(out)])


@needs_sample
def test_sample_with_a_modality_selection_keeps_the_same_s1_tiles(tmp_path):
    """``modalities: [s1]`` through the scene path (write_scenes): only s1 is written, with the same
    tiles and statistics as with both modalities."""
    prepared = {}
    for name, selection in (("both", None), ("s1", ["s1"])):
        section = {"source_dir": str(SAMPLE), "modalities": selection}
        params = write_params(tmp_path / f"{name}.yaml", dataset_params("sen1floods11-sample", section))
        args = ["--dataset", "sen1floods11-sample", "--params", str(params), "--raw-dir", str(tmp_path / "raw")]
        download.main(args)
        prepare.main([*args, "--out", str(tmp_path / name)])
        prepared[name] = tmp_path / name
    meta = read_meta(prepared["s1"])
    assert meta["modalities"] == {"s1": 2} and not (prepared["s1"] / "train" / "s2.npy").exists()
    assert meta["normalisation"]["s1"] == read_meta(prepared["both"])["normalisation"]["s1"]
    for split in ("train", "test"):
        for array in ("s1.npy", "label.npy"):
            np.testing.assert_array_equal(
                np.load(prepared["s1"] / split / array), np.load(prepared["both"] / split / array)
            )
