"""DELIVER (benchmark.data.deliver) on a tiny archive in the official layout, made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import download_and_prepare, repro_on_archive, zip_tree

from benchmark.data import PreparedDataset, read_meta
from benchmark.data.deliver import CLASSES, CONTAINS, decode_deliver_label, nearest_index

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

SIZE = 32  # px per frame side (the real frames: 1042)
#: (weather, official split, sequence, frame): the sequence names carry the sensor failures
FRAMES = [
    ("cloud", "train", "MAP_1_point1", "000001"),
    ("sun", "train", "MAP_2_motionblur", "000002"),
    ("fog", "val", "MAP_3_point3", "000003"),
    ("night", "test", "MAP_4_lidarjitter", "000004"),
    ("rain", "test", "MAP_5_point5", "000005"),
]


def frame_arrays(index: int) -> dict[str, np.ndarray]:
    """Channels-first uint8 images of frame ``index`` as written: rgb RGBA (cut to 3 on reading),
    hha 3 channels, lidar 1 (repeated to 3), event at half size (resized to 16 px), semantic
    RGB whose channel 0 is the raw label (every raw value 0..25 and 255)."""
    rng = np.random.default_rng(index)
    raw = np.concatenate([np.arange(26), [255]])
    return {
        "img": rng.integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8),
        "hha": rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8),
        "depth": np.zeros((3, SIZE, SIZE), np.uint8),  # not read: depth comes from hha/
        "lidar": rng.integers(0, 256, (1, SIZE, SIZE), dtype=np.uint8),
        "event": rng.integers(0, 256, (3, SIZE // 2, SIZE // 2), dtype=np.uint8),
        "semantic": np.stack([rng.choice(raw, (SIZE, SIZE)).astype(np.uint8), *np.zeros((2, SIZE, SIZE), np.uint8)]),
    }


KINDS = {"img": "rgb", "hha": "depth", "depth": "depth", "lidar": "lidar", "event": "event", "semantic": "semantic"}


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    Image.fromarray(image).save(path)


def build_archive(
    raw: Path, skip: tuple[str, ...] = (), label_fix: dict[int, int] | None = None, two_band_lidar: bool = False
) -> Path:
    """``raw/DELIVER.zip`` in the official layout; ``skip``: member paths left out; ``label_fix``:
    {frame: raw value of its label's first pixel}; ``two_band_lidar``: frame 0's lidar as a
    grey + alpha PNG (2 bands, which no DELIVER image has)."""
    stage = raw.parent / "stage" / "DELIVER"
    for i, (weather, split, sequence, frame) in enumerate(FRAMES):
        for folder, array in frame_arrays(i).items():
            if folder == "semantic" and label_fix and i in label_fix:
                array = array.copy()
                array[0, 0, 0] = label_fix[i]
            if folder == "lidar" and two_band_lidar and i == 0:
                array = np.concatenate([array, array])
            write_png(stage / folder / weather / split / sequence / f"{frame}_{KINDS[folder]}_front.png", array)
    write_png(stage.parent / CONTAINS, np.zeros((3, 4, 4), np.uint8))  # the file the README draws
    return zip_tree(stage.parent, raw / "DELIVER.zip", skip)


def run(tmp_path: Path, **section) -> Path:
    """download + prepare (one tile per frame unless ``section`` says otherwise); the prepared folder."""
    return download_and_prepare(tmp_path, "deliver", {"tile_size": SIZE, "stride": SIZE, **section})


def expected_label(raw: np.ndarray) -> np.ndarray:
    """The loader's rule written out per value: 1..25 -> 0..24, 0 and 255 -> 255."""
    return np.vectorize(lambda v: 255 if v in (0, 255) else v - 1)(raw.astype(int)).astype(np.uint8)


def test_frames_modalities_labels_and_conditions(tmp_path):
    build_archive(tmp_path / "raw")
    out = run(tmp_path)
    meta = read_meta(out)
    assert meta["splits"] == {"train": 2, "valid": 1, "test": 2}
    assert meta["modalities"] == {"rgb": 3, "depth": 3, "event": 3, "lidar": 3}
    assert meta["classes"] == list(CLASSES) and len(CLASSES) == 25 and meta["ignore_index"] == 255
    assert meta["tags"] == {
        "train": {"cloud": [0], "motionblur": [1], "sun": [1]},
        "valid": {"fog": [0]},
        "test": {"lidarjitter": [0], "night": [0], "rain": [1]},
    }
    assert {m: s["dtype"] for m, s in meta["storage"].items()} == dict.fromkeys(meta["modalities"], "uint8")
    order = {"train": [0, 1], "valid": [2], "test": [3, 4]}
    for split, frames in order.items():
        stored = {m: np.load(out / split / f"{m}.npy") for m in (*meta["modalities"], "label")}
        for tile, i in enumerate(frames):
            arrays = frame_arrays(i)
            event = torch.nn.functional.interpolate(torch.from_numpy(arrays["event"])[None].float(), (SIZE, SIZE))
            expected = {
                "rgb": arrays["img"][:3],
                "depth": arrays["hha"],
                "lidar": np.repeat(arrays["lidar"], 3, axis=0),
                "event": event[0].numpy().astype(np.uint8),
                "label": expected_label(arrays["semantic"][0]),
            }
            for name, array in expected.items():
                np.testing.assert_array_equal(stored[name][tile], array, err_msg=f"{split} frame {i} {name}")
    assert PreparedDataset(out, "test").tags == {"lidarjitter": [0], "night": [0], "rain": [1]}


def test_tiles_of_a_frame_share_its_conditions_and_max_frames_cuts(tmp_path):
    build_archive(tmp_path / "raw")
    out = run(tmp_path, tile_size=SIZE // 2, stride=SIZE // 2, max_frames=1)
    meta = read_meta(out)
    event = torch.nn.functional.interpolate(torch.from_numpy(frame_arrays(0)["event"])[None].float(), (SIZE, SIZE))
    half = SIZE // 2
    for tile, (r, c) in enumerate([(0, 0), (0, half), (half, 0), (half, half)]):  # each window resized alone
        expected = event[0, :, r : r + half, c : c + half].numpy().astype(np.uint8)
        np.testing.assert_array_equal(np.load(out / "train" / "event.npy")[tile], expected)
    assert meta["splits"] == {"train": 4, "valid": 4, "test": 4}  # the first frame of each split, 4 tiles each
    assert meta["tags"]["train"] == {"cloud": [0, 1, 2, 3]} and meta["tags"]["test"] == {
        "lidarjitter": [0, 1, 2, 3],
        "night": [0, 1, 2, 3],
    }


def test_nearest_index_matches_torch():
    for size_in, size_out in [(8, 16), (7, 16), (521, 1042), (1042, 1042), (5, 3)]:
        x = torch.arange(size_in, dtype=torch.float32)[None, None]
        expected = torch.nn.functional.interpolate(x, size=size_out, mode="nearest")[0, 0].long().numpy()
        np.testing.assert_array_equal(nearest_index(size_in, size_out), expected, err_msg=f"{size_in}->{size_out}")


def test_label_decoding_refuses_values_beyond_the_classes():
    class Named:
        name = "x_semantic_front.png"

    raw = np.array([[[0, 1, 25, 255]]], np.float32)
    np.testing.assert_array_equal(decode_deliver_label(raw, Named()), [[255, 0, 24, 255]])
    with pytest.raises(ValueError, match=r"x_semantic_front.png: label value 26 at row 0, col 1"):
        decode_deliver_label(np.array([[[3, 26]]], np.float32), Named())


def test_a_missing_partner_file_or_a_bad_label_is_named(tmp_path):
    build_archive(tmp_path / "raw", skip=("000004_lidar_front.png", "000001_semantic_front.png"))
    with pytest.raises(FileNotFoundError) as err:
        run(tmp_path)
    message = str(err.value)
    assert "2 file(s) of the frames missing" in message and "Google Drive" in message
    assert "semantic/cloud/train/MAP_1_point1/000001_semantic_front.png" in message
    assert "lidar/night/test/MAP_4_lidarjitter/000004_lidar_front.png" in message
    other = tmp_path / "other"
    build_archive(other / "raw", label_fix={2: 77})
    with pytest.raises(ValueError, match=r"000003_semantic_front.png: label value 77"):
        run(other)


def test_a_missing_archive_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)DELIVER.zip.*Google Drive.*github.com/jamycheung/DELIVER"):
        run(tmp_path)


@pytest.mark.slow
def test_the_pipeline_runs_on_deliver_and_reports_each_condition(tmp_path):
    """``datasets: [deliver]`` on a test-made archive: download (verify, extract) -> prepare -> train
    -> evaluate -> report, with the conditions table in the report and the HTML page."""
    archive = build_archive(tmp_path / "made" / "raw")
    section = {"tile_size": SIZE, "stride": SIZE}
    project, output = repro_on_archive(tmp_path, "deliver", archive, ["muss-complete", "sgma-complete"], section)
    assert "Running stage 'report'" in output
    metrics = json.loads((project / "results/runs/deliver/sgma-complete/seed0/metrics.json").read_text())
    assert {tag: entry["tiles"] for tag, entry in metrics["tags"].items()} == {"lidarjitter": 1, "night": 1, "rain": 1}
    report = project / "results" / "report" / "deliver"
    table = (report / "conditions.md").read_text()
    assert "night: all" in table and "| sgma-complete |" in table and "| muss-complete |" in table
    assert "night: all" in (project / "results" / "report" / "report.html").read_text()


def test_a_wrong_image_or_archive_is_named(tmp_path):
    build_archive(tmp_path / "raw", two_band_lidar=True)
    with pytest.raises(ValueError, match=r"000001_lidar_front.png: 2 bands; DELIVER's images have 1, 3 or 4"):
        run(tmp_path)
    other = tmp_path / "other"
    build_archive(other / "raw", skip=(CONTAINS,))
    with pytest.raises(ValueError, match=r"DELIVER.zip: holds no file '045050_depth_front.png'.*not the official"):
        run(other)
