"""Scenes -> tiles: the window grid, streamed statistics, and the tiles themselves against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data import PreparedDataset, read_meta
from benchmark.data.prepared import PreparedWriter, RunningStats
from benchmark.data.raster import ArrayLayer, RasterLayer, Scene, WindowLayer, tile_windows, write_scenes


def test_tile_windows_cover_the_scene_and_snap_to_the_edge():
    assert tile_windows(10, 10, 5, 5) == [(0, 0), (0, 5), (5, 0), (5, 5)]
    windows = tile_windows(11, 7, 4, 3)
    rows, cols = sorted({r for r, _ in windows}), sorted({c for _, c in windows})
    assert rows == [0, 3, 6, 7] and cols == [0, 3]  # last row snapped to 11 - 4; 7 - 4 = 3 already on the grid
    covered = np.zeros((11, 7), int)
    for r, c in windows:
        covered[r : r + 4, c : c + 4] += 1
    assert covered.min() >= 1
    with pytest.raises(ValueError, match="smaller than the 8 px tile size"):
        tile_windows(7, 20, 8, 8)
    with pytest.raises(ValueError, match="stride"):
        tile_windows(8, 8, 4, 0)


def test_running_stats_match_numpy_whatever_the_chunking():
    rng = np.random.default_rng(0)
    x = (rng.normal(1000.0, 3.0, (9, 2, 5, 5))).astype(np.float32)  # large mean, small spread: a precision test
    x[rng.random(x.shape) < 0.2] = np.nan
    for chunks in ([9], [1] * 9, [4, 5], [2, 3, 4]):
        stats, start = RunningStats(2), 0
        for n in chunks:
            stats.update(x[start : start + n])
            start += n
        mean, std = stats.result("x")
        np.testing.assert_allclose(mean, np.nanmean(x.astype(np.float64), axis=(0, 2, 3)), rtol=1e-12)
        np.testing.assert_allclose(std, np.nanstd(x.astype(np.float64), axis=(0, 2, 3)), rtol=1e-9)
    empty = RunningStats(1)
    empty.update(np.full((1, 1, 2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="where: channel.*no valid"):
        empty.result("where")


def test_write_scenes_tiles_standardises_with_train_statistics(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.normal(5.0, 2.0, (2, 12, 12)).astype(np.float32)
    a[0, 0, 0] = np.nan  # nodata
    b = rng.normal(-3.0, 1.0, (2, 12, 12)).astype(np.float32)
    label = rng.integers(0, 3, (1, 12, 12)).astype(np.float32)

    def decode(window: np.ndarray, layer) -> np.ndarray:
        return window[0].astype(np.uint8)

    # one scene, split in two disjoint blocks: columns 0-7 train, 8-11 test
    def half(layer, col: int, width: int) -> WindowLayer:
        return WindowLayer(layer, 0, col, 12, width)

    layers = {"a": ArrayLayer("a", a), "b": ArrayLayer("b", b)}
    lab = ArrayLayer("label", label)
    scenes = [
        Scene("left", "train", {m: half(x, 0, 8) for m, x in layers.items()}, half(lab, 0, 8), decode),
        Scene("right", "test", {m: half(x, 8, 4) for m, x in layers.items()}, half(lab, 8, 4), decode),
    ]
    out = write_scenes(
        tmp_path / "d", scenes, tile_size=4, stride=4, dataset="d", classes=["x", "y", "z"], ignore_index=255,
        modalities={"a": 2, "b": 2}, progress=False,
    )  # fmt: skip
    meta = read_meta(out)
    assert meta["splits"] == {"train": 6, "test": 3} and meta["source"]["tile_size"] == 4
    train_a = a[:, :, :8].astype(np.float64)
    np.testing.assert_allclose(meta["normalisation"]["a"]["mean"], np.nanmean(train_a, axis=(1, 2)), rtol=1e-6)
    train = PreparedDataset(out, "train")
    tiles = np.stack([train[i][0]["a"].numpy() for i in range(len(train))])
    assert tiles[0, 0, 0, 0] == 0.0  # nodata -> 0
    mean, std = np.nanmean(train_a, axis=(1, 2)), np.nanstd(train_a, axis=(1, 2))
    expected = (a[:, 4:8, 4:8] - mean[:, None, None]) / std[:, None, None]  # tile (row 4, col 4): 4th train tile
    np.testing.assert_allclose(tiles[3], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(out / "test" / "label.npy")[2], label[0, 8:12, 8:12])


def test_scene_sizes_and_band_counts_are_checked_before_reading(tmp_path):
    good = ArrayLayer("good.tif", np.zeros((1, 8, 8), np.float32))
    small = ArrayLayer("small.tif", np.zeros((1, 8, 6), np.float32))
    scene = Scene("s", "train", {"a": small}, good, lambda w, layer: w[0].astype(np.uint8))
    kwargs = dict(tile_size=4, stride=4, dataset="d", classes=["x"], ignore_index=255, progress=False)
    with pytest.raises(ValueError, match="small.tif: 8x6 px, but the label good.tif is 8x8 px"):
        write_scenes(tmp_path / "d", [scene], modalities={"a": 1}, **kwargs)
    scene = Scene("s", "train", {"a": good}, good, lambda w, layer: w[0].astype(np.uint8))
    with pytest.raises(ValueError, match="good.tif: 1 bands for 'a', expected 3"):
        write_scenes(tmp_path / "d", [scene], modalities={"a": 3}, **kwargs)
    assert not (tmp_path / "d").exists()


def test_writer_refuses_infinite_values_and_wrong_labels_and_leaves_nothing(tmp_path):
    kwargs = dict(
        counts={"train": 1}, modalities={"a": 1}, tile_shape=(2, 2), dataset="d", classes=["x", "y"], ignore_index=255
    )
    with pytest.raises(ValueError, match="d/train/a: infinite"):
        with PreparedWriter(tmp_path / "d", **kwargs) as writer:
            writer.add("train", {"a": np.full((1, 1, 2, 2), np.inf, np.float32)}, np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        with PreparedWriter(tmp_path / "d", **kwargs) as writer:
            writer.add("train", {"a": np.zeros((1, 1, 2, 2), np.float32)}, np.full((1, 2, 2), 7, np.uint8))
    with pytest.raises(ValueError, match="0 tiles written, 1 announced"):
        with PreparedWriter(tmp_path / "d", **kwargs):
            pass
    assert list(tmp_path.iterdir()) == []


def test_test_split_scores_each_pixel_once_and_all_nodata_pixels_are_ignored(tmp_path):
    """Overlapping windows (stride < size, snapped edge): train tiles keep every label, test tiles
    hold each labelled pixel of the scene exactly once; a pixel no modality sees is ignored."""
    label = np.arange(10 * 10, dtype=np.float32).reshape(1, 10, 10) % 3
    a = np.ones((1, 10, 10), np.float32)
    b = np.ones((2, 10, 10), np.float32)
    a[0, 2, 3] = b[1, 2, 3] = np.nan  # both modalities blind here -> ignored
    a[0, 5, 5] = np.nan  # only one blind -> kept

    def scene(split: str) -> Scene:
        inputs = {"a": ArrayLayer("a", a), "b": ArrayLayer("b", b)}
        return Scene(split, split, inputs, ArrayLayer("label", label), lambda w, layer: w[0].astype(np.uint8))

    out = write_scenes(
        tmp_path / "d", [scene("train"), scene("test")], tile_size=4, stride=3, dataset="d",
        classes=["x", "y", "z"], ignore_index=255, modalities={"a": 1, "b": 2}, progress=False,
    )  # fmt: skip
    starts = [0, 3, 6]  # 10 px, tiles of 4 every 3 px: the last at 6 = 10 - 4
    expected = np.where(np.isnan(a[0]) & np.isnan(b[1]), 255, label[0])
    seen = {"train": np.zeros((10, 10), int), "test": np.zeros((10, 10), int)}
    for split in seen:
        tiles = np.load(out / split / "label.npy")
        for tile, (r, c) in zip(tiles, [(r, c) for r in starts for c in starts]):
            keep = tile != 255
            np.testing.assert_array_equal(tile[keep], expected[r : r + 4, c : c + 4][keep])
            seen[split][r : r + 4, c : c + 4] += keep
    assert seen["train"].max() == 4  # overlaps kept for training
    np.testing.assert_array_equal(seen["test"], expected != 255)  # each labelled pixel once


def _tif(path, array: np.ndarray, nodata: float | None = None, tiled: bool = False):
    """A GeoTIFF of ``array`` ``[C, H, W]`` in its own dtype, written with rasterio."""
    import rasterio
    from rasterio.transform import Affine

    count, height, width = array.shape
    extra = {"tiled": True, "blockxsize": 16, "blockysize": 16} if tiled else {}
    with rasterio.open(
        path, "w", driver="GTiff", count=count, height=height, width=width, dtype=array.dtype.name, nodata=nodata,
        transform=Affine(0.5, 0.0, 100.0, 0.0, -0.5, 200.0), **extra,
    ) as dst:  # fmt: skip
        dst.write(array)
    return path


def test_nan_is_nodata_only_where_the_tag_or_the_data_set_says_so(tmp_path):
    x = np.arange(2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7)
    x[1, 4, 2] = np.nan
    x[0, 0, 1] = -9999.0
    untagged = _tif(tmp_path / "untagged.tif", x)
    with pytest.raises(ValueError, match=r"untagged\.tif: NaN in band 2 at pixel row 4, col 2 .*nodata value: none"):
        RasterLayer(untagged).read(0, 0, 6, 7)
    tagged = _tif(tmp_path / "tagged.tif", x, nodata=-9999.0)
    with pytest.raises(ValueError, match=r"tagged\.tif: NaN in band 2 at pixel row 4, col 2 .*nodata value: -9999"):
        RasterLayer(tagged).read(0, 0, 6, 7)
    # a window without the NaN reads, with the tagged value as nodata
    got = RasterLayer(tagged).read(0, 0, 4, 7)
    np.testing.assert_array_equal(np.isnan(got), np.arange(2 * 4 * 7).reshape(2, 4, 7) == 1)
    # band 2 read alone is still named band 2 (the file's numbering); pixel in file coordinates through a window
    with pytest.raises(ValueError, match=r"NaN in band 2 at pixel row 4, col 2 \(1 such px in the 3x3 px window"):
        WindowLayer(RasterLayer(tagged, bands=(2,)), 2, 1, 4, 5).read(1, 0, 3, 3)
    expected = x.copy()
    expected[0, 0, 1] = np.nan
    for layer in (
        RasterLayer(_tif(tmp_path / "nan_tag.tif", np.where(x == -9999.0, np.nan, x), nodata=np.nan)),
        RasterLayer(tagged, nan_nodata=True),  # the data set documents NaN as nodata
        RasterLayer(untagged, nodata=-9999.0, nan_nodata=True),
    ):
        np.testing.assert_array_equal(layer.read(0, 0, 6, 7), expected)
    # a NaN override of the nodata value: NaN is nodata, -9999 an ordinary value
    np.testing.assert_array_equal(RasterLayer(tagged, nodata=np.nan).read(0, 0, 6, 7), x)


def test_infinite_and_out_of_range_pixels_name_the_file_band_and_pixel(tmp_path):
    x = np.ones((3, 5, 5), np.float64)
    x[2, 3, 1] = -np.inf
    for nodata, nan_nodata in ((None, False), (np.nan, False), (-9999.0, True)):  # inf is never NaN's kind of nodata
        path = _tif(tmp_path / "inf.tif", x, nodata=nodata)
        with pytest.raises(ValueError, match=r"inf\.tif: infinite value -inf in band 3 at pixel row 3, col 1"):
            RasterLayer(path, nan_nodata=nan_nodata).read(0, 0, 5, 5)
    x[2, 3, 1] = 1e300  # fits float64, not float32
    path = _tif(tmp_path / "big.tif", x)
    with pytest.raises(
        ValueError, match=r"big\.tif: value 1e\+300 \(beyond float32's range\) in band 3 at pixel row 3"
    ):
        RasterLayer(path).read(0, 0, 5, 5)
    x[2, 3, 1] = -np.inf  # the file's own nodata value: masked, not refused
    path = _tif(tmp_path / "inf_tag.tif", x, nodata=-np.inf)
    assert np.isnan(RasterLayer(path).read(0, 0, 5, 5)).sum() == 1


def test_truncated_geotiff_names_the_file(tmp_path):
    path = _tif(
        tmp_path / "whole.tif", np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32), tiled=True
    )
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])  # the header and first blocks survive, the rest is gone
    layer = RasterLayer(cut, expect_bands=2)
    assert layer.shape == (2, 64, 64)  # the header is intact: the damage shows when pixels are read
    with pytest.raises(ValueError, match=r"cut\.tif: cannot read the 64x64 px window at row 0, col 0 .*truncated"):
        layer.read(0, 0, 64, 64)
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00" + bytes(50))
    with pytest.raises(ValueError, match=r"garbage\.tif: not a readable raster"):
        RasterLayer(tmp_path / "garbage.tif").shape  # noqa: B018


def test_scene_tags_become_tile_indices_per_split(tmp_path):
    """Each scene's tags cover the tiles cut from it, tile indices counted per split in writing order."""

    def scene(name: str, split: str, size: int = 8) -> Scene:
        inputs = {"a": ArrayLayer(name, np.ones((1, size, 8), np.float32))}
        return Scene(
            name,
            split,
            inputs,
            ArrayLayer("label", np.zeros((1, size, 8), np.float32)),
            lambda w, _: w[0].astype(np.uint8),
        )

    scenes = [scene("s1", "train"), scene("t1", "test"), scene("s2", "train", size=4), scene("t2", "test")]
    tags = {"s1": ["fog"], "s2": ["fog", "night"], "t2": ["night"]}
    out = write_scenes(
        tmp_path / "d", scenes, tile_size=4, stride=4, dataset="d", classes=["x"], ignore_index=255,
        modalities={"a": 1}, progress=False, tags=tags,
    )  # fmt: skip
    meta = read_meta(out)
    assert meta["splits"] == {"train": 6, "test": 8}  # s1: 4 tiles, s2: 2; t1, t2: 4 each
    assert meta["tags"] == {"train": {"fog": [0, 1, 2, 3, 4, 5], "night": [4, 5]}, "test": {"night": [4, 5, 6, 7]}}
    assert PreparedDataset(out, "test").tags == {"night": [4, 5, 6, 7]}
    meta_path = out / "meta.json"
    text = meta_path.read_text()
    meta_path.write_text(text.replace('"night": [\n        4,', '"night": [\n        9,', 1))
    with pytest.raises(ValueError, match=r"meta.json: tags: train/night: tile indices must be ints in \[0, 6\)"):
        PreparedDataset(out, "test")
