"""EarthMiss (benchmark.data.earthmiss) on a tiny archive in the released layout, made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import download_and_prepare, repro_on_archive, zip_tree

from benchmark.data import read_meta
from benchmark.data.earthmiss import CITIES, CLASSES, COLOURS, decode_earthmiss_mask

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

SIZE = 16  # px per image side
PAD = 4  # the last PAD columns of every image are padding: optical and SAR all 0
COLOUR_CITIES = {"Nanjing", "Singapore", "America-Pake", "Japan-Hakodate"}  # colour-map masks; the rest index masks
ALL = [(split, city) for split, cities in CITIES.items() for city in cities]
#: configs/metadata/EarthMiss.py of Yi-Heng/EarthMiss (d57c3b3): train_cities, val_cities, test_cities
OFFICIAL = {
    "train": {"America-Eugene", "America-Louisville", "French-Paris", "Morocco-Casablanca", "Nanjing",
              "Netherlands-Rotterdam", "Singapore"},
    "valid": {"Australia-PortHedland", "America-Pake", "Russian-Engels"},
    "test": {"America-NewYork", "Japan-Hakodate", "Peru-Callao"},
}  # fmt: skip


def arrays(index: int) -> dict[str, np.ndarray]:
    """Image ``index``: optical ``[3, S, S]`` and SAR ``[S, S]`` uint8 (never all 0 outside the
    padding), and its classes ``[S, S]`` (every class present, padding columns included)."""
    rng = np.random.default_rng(index)
    optical = rng.integers(1, 256, (3, SIZE, SIZE), dtype=np.uint8)
    sar = rng.integers(1, 256, (SIZE, SIZE), dtype=np.uint8)
    optical[:, :, -PAD:], sar[:, -PAD:] = 0, 0
    classes = rng.integers(0, len(CLASSES), (SIZE, SIZE))
    classes[0, : len(CLASSES)] = np.arange(len(CLASSES))
    return {"optical": optical, "sar": sar, "classes": classes}


def mask_image(index: int, city: str) -> np.ndarray:
    """The mask as written: an index mask (class + 1, one no-label pixel 0) or a colour map whose
    padding is coloured as Background, as the repository's issue 3 describes."""
    classes = arrays(index)["classes"]
    if city not in COLOUR_CITIES:
        mask = (classes + 1).astype(np.uint8)
        mask[1, 0] = 0
        return mask
    classes = classes.copy()
    classes[:, -PAD:] = 0  # padding coloured as Background
    return np.array(COLOURS, np.uint8)[classes]


def expected_label(index: int, city: str) -> np.ndarray:
    classes = arrays(index)["classes"].astype(np.uint8)
    if city not in COLOUR_CITIES:
        classes = classes.copy()
        classes[1, 0] = 255
        return classes  # the loader's mask - 1: no padding rule
    label = classes.copy()
    label[:, -PAD:] = 255
    return label


def build_archive(raw: Path, skip: tuple[str, ...] = (), three_band_sar: bool = False, top: str = "EarthMiss") -> Path:
    """``raw/EarthMiss.zip``: one image ``0001`` per city (PNG, the masks of the first city TIFF);
    ``skip``: member paths ending so are left out; ``three_band_sar``: the first city's SAR as RGB."""
    stage = raw.parent / "stage"
    for index, (_, city) in enumerate(ALL):
        data = arrays(index)
        folder = stage / top / city
        sar = np.stack([data["sar"]] * 3, axis=-1) if three_band_sar and index == 0 else data["sar"]
        suffix = ".tif" if index == 0 else ".png"
        for path, image in [
            (folder / "images" / "RGB" / "0001.png", np.moveaxis(data["optical"], 0, -1)),
            (folder / "images" / "SAR" / "0001_SAR.png", sar),
            (folder / "masks" / f"0001_mask{suffix}", mask_image(index, city)),
        ]:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
    return zip_tree(stage, raw / "EarthMiss.zip", skip)


def run(tmp_path: Path, **section) -> Path:
    """download + prepare (one tile per image unless ``section`` says otherwise); the prepared folder."""
    return download_and_prepare(tmp_path, "earthmiss", {"tile_size": SIZE, "stride": SIZE, **section})


def test_cities_modalities_and_both_mask_forms(tmp_path):
    build_archive(tmp_path / "raw")
    out = run(tmp_path)
    meta = read_meta(out)
    assert meta["splits"] == {"train": 7, "valid": 3, "test": 3}  # split by city, validation apart from test
    assert {split: set(tags) for split, tags in meta["tags"].items()} == OFFICIAL
    assert list(meta["modalities"].items()) == [("optical", 3), ("sar", 1)]
    assert meta["classes"] == list(CLASSES) and meta["ignore_index"] == 255
    assert {m: s["dtype"] for m, s in meta["storage"].items()} == {"optical": "uint8", "sar": "uint8"}
    for split, cities in CITIES.items():
        assert meta["tags"][split] == {city: [tile] for tile, city in enumerate(cities)}
        stored = {name: np.load(out / split / f"{name}.npy") for name in ("optical", "sar", "label")}
        for tile, city in enumerate(cities):
            index = ALL.index((split, city))
            data = arrays(index)
            np.testing.assert_array_equal(stored["optical"][tile], data["optical"], err_msg=city)
            np.testing.assert_array_equal(stored["sar"][tile, 0], data["sar"], err_msg=city)
            np.testing.assert_array_equal(stored["label"][tile], expected_label(index, city), err_msg=city)
    # the normalisation is the training cities' alone
    train = np.stack([arrays(ALL.index(("train", c)))["optical"] for c in CITIES["train"]]).astype(np.float64)
    np.testing.assert_allclose(meta["normalisation"]["optical"]["mean"], train.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_the_decoder_reads_indices_colours_and_padding():
    class Named:
        name = "x_mask.png"

    white, red = COLOURS[0], COLOURS[1]
    index = np.array([[[0, 1, 8, 3]]], np.float32)
    padding = np.zeros((1, 1, 4), np.float32)
    np.testing.assert_array_equal(decode_earthmiss_mask(np.concatenate([index, padding]), Named()), [[255, 0, 7, 2]])
    colour = np.array([white, red, white, (5, 5, 5)], np.float32).T[:, None, :]  # [3, 1, 4]
    flags = np.array([[[0, 0, 1, 0]]], np.float32)  # the third pixel is padding
    np.testing.assert_array_equal(decode_earthmiss_mask(np.concatenate([colour, flags]), Named()), [[0, 1, 255, 4]])
    with pytest.raises(ValueError, match=r"x_mask.png: mask value 9 at row 0, col 1"):
        decode_earthmiss_mask(np.array([[[1, 9]], [[0, 0]]], np.float32), Named())
    unknown = np.array([red, (1, 2, 3)], np.float32).T[:, None, :]
    with pytest.raises(ValueError, match=r"x_mask.png: mask value \[1, 2, 3\] at row 0, col 1 .*palette"):
        decode_earthmiss_mask(np.concatenate([unknown, np.zeros((1, 1, 2), np.float32)]), Named())


def test_sar_alone_keeps_the_optical_padding_rule(tmp_path):
    """``modalities: [sar]``: the prepared copy holds SAR alone, and a colour mask's padding is
    still found from both images."""
    build_archive(tmp_path / "raw")
    out = run(tmp_path, modalities=["sar"])
    meta = read_meta(out)
    assert list(meta["modalities"]) == ["sar"] and not (out / "test" / "optical.npy").exists()
    tile = CITIES["test"].index("Japan-Hakodate")  # a colour-mask city
    label = np.load(out / "test" / "label.npy")[tile]
    np.testing.assert_array_equal(label, expected_label(ALL.index(("test", "Japan-Hakodate")), "Japan-Hakodate"))


def test_max_images_and_a_nested_top_folder(tmp_path):
    build_archive(tmp_path / "raw", top="data/EarthMiss")
    out = run(tmp_path, tile_size=SIZE // 2, stride=SIZE // 2, max_images=1)
    assert read_meta(out)["splits"] == {"train": 28, "valid": 12, "test": 12}  # 4 tiles per image


def test_missing_files_and_cities_are_listed(tmp_path):
    build_archive(tmp_path / "raw", skip=("Peru-Callao/masks/0001_mask.png", "Nanjing/images/SAR/0001_SAR.png"))
    with pytest.raises(FileNotFoundError) as err:
        run(tmp_path)
    message = str(err.value)
    assert "2 file(s) missing" in message and "zenodo.org/records/17231107" in message
    assert "Peru-Callao/masks/0001_mask.tif" in message and "Nanjing/images/SAR/0001_SAR.tif" in message
    other = tmp_path / "other"
    build_archive(other / "raw", skip=("Russian-Engels/images/RGB/0001.png", "Singapore/images/RGB/0001.png"))
    with pytest.raises(FileNotFoundError, match=r"(?s)2 of the 13 cities have no optical image.*Russian-Engels"):
        run(other)


def test_a_wrong_image_or_archive_is_named(tmp_path):
    build_archive(tmp_path / "raw", three_band_sar=True)
    with pytest.raises(ValueError, match=r"0001_SAR.png: 3 bands, expected 1"):
        run(tmp_path)
    other = tmp_path / "other"
    build_archive(other / "raw", skip=("America-NewYork/masks/0001_mask.png",))
    with pytest.raises(ValueError, match=r"EarthMiss.zip: holds no file 'America-NewYork/masks/'.*not the official"):
        run(other)
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)EarthMiss.zip.*zenodo.org/records/17231107"):
        run(tmp_path / "none")


@pytest.mark.slow
def test_the_pipeline_runs_on_earthmiss_with_a_table_per_city(tmp_path):
    """``datasets: [earthmiss]`` on a test-made archive: download (verify, extract) -> prepare ->
    train -> evaluate -> report, each test city a row group of the conditions table."""
    archive = build_archive(tmp_path / "made" / "raw")
    section = {"tile_size": SIZE, "stride": SIZE}
    project, output = repro_on_archive(tmp_path, "earthmiss", archive, ["muss-complete"], section)
    assert "Running stage 'report'" in output
    metrics = json.loads((project / "results/runs/earthmiss/muss-complete/seed0/metrics.json").read_text())
    assert set(metrics["tags"]) == set(CITIES["test"]) and metrics["modalities"] == ["optical", "sar"]
    assert "America-NewYork: all" in (project / "results" / "report" / "earthmiss" / "conditions.md").read_text()
