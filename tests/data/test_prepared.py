"""The prepared format: deterministic, standardised, nodata filled, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny import TINY_PARAMS, write_params

from benchmark import prepare
from benchmark.data import PreparedDataset, get_dataset, read_meta, write_prepared
from benchmark.data.prepared import Storage, common_storage


def test_prepare_is_deterministic_bytes(tmp_path, tiny_prepared):
    params = write_params(tmp_path / "params.yaml", TINY_PARAMS)
    again = tmp_path / "again"
    prepare.main(["--dataset", "synthetic", "--params", str(params), "--out", str(again)])
    assert (tiny_prepared / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for path in sorted(tiny_prepared.rglob("*.npy")) + [tiny_prepared / "meta.json", tiny_prepared / "preview.png"]:
        assert path.read_bytes() == (again / path.relative_to(tiny_prepared)).read_bytes(), path.name


def test_train_split_is_standardised_and_nodata_zero(tiny_prepared):
    meta = read_meta(tiny_prepared)
    assert meta["modalities"] == {"rgb": 3, "dsm": 1, "nir": 1}
    assert meta["splits"] == {"train": 16, "test": 6}
    data = PreparedDataset(tiny_prepared, "train")
    for name in meta["modalities"]:
        x = np.stack([data[i][0][name].numpy() for i in range(len(data))])
        assert x.dtype == np.float32 and np.isfinite(x).all()
        if name != "dsm":  # the dsm's voids are 0 after standardising, which moves its mean slightly
            np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-4)
            np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-3)


def test_train_and_test_tiles_differ(tiny_prepared):
    train = np.load(tiny_prepared / "train" / "rgb.npy")
    test = np.load(tiny_prepared / "test" / "rgb.npy")
    assert not any(np.array_equal(t, s) for t in test for s in train[:6])


def test_dataset_items_and_sar_option(tmp_path):
    params = {**TINY_PARAMS["synthetic"], "with_sar": True, "num_train": 4, "num_test": 2}
    source = get_dataset("synthetic")(params)
    assert list(source.modalities) == ["rgb", "dsm", "nir", "sar"]
    out = source.prepare(tmp_path / "sar")
    ds = PreparedDataset(out, "test")
    inputs, label = ds[1]
    assert list(inputs) == ["rgb", "dsm", "nir", "sar"] and inputs["sar"].shape == (1, 32, 32)
    assert label.dtype.is_floating_point is False and label.shape == (32, 32)


def test_errors_name_the_file_and_key(tmp_path, tiny_prepared):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        PreparedDataset(tmp_path / "nothing", "train")
    with pytest.raises(ValueError, match="split 'val'"):
        PreparedDataset(tiny_prepared, "val")
    with pytest.raises(KeyError, match="synthetic.*tile_sise"):
        get_dataset("synthetic")({"tile_sise": 32})
    with pytest.raises(KeyError, match="unknown data set 'potsdam2'"):
        get_dataset("potsdam2")
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((tiny_prepared / "meta.json").read_text())
    del meta["classes"]
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="meta.json.*'classes'"):
        PreparedDataset(broken, "train")


def test_interrupted_write_keeps_previous_data(tmp_path):
    good = {"train": ({"a": np.ones((2, 1, 4, 4), np.float32)}, np.zeros((2, 4, 4), np.uint8))}
    root = write_prepared(tmp_path / "d", good, dataset="d", classes=["x"], ignore_index=255)
    before = (root / "meta.json").read_bytes()
    bad = {"train": ({"a": np.ones((2, 1, 4, 4), np.float32)}, np.zeros((3, 4, 4), np.uint8))}
    with pytest.raises(ValueError, match="shape"):
        write_prepared(root, bad, dataset="d", classes=["x"], ignore_index=255)
    assert (root / "meta.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folder left behind


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("keep", [0, 50, 0.5, -1])
def test_truncated_npy_names_the_file(tmp_path, tiny_prepared, keep):
    """A .npy cut anywhere (in its header, or in its data) is an error naming it, never a numpy traceback."""
    root = _copy(tiny_prepared, tmp_path / "p")
    path = root / "train" / "dsm.npy"
    data = path.read_bytes()
    end = {0: 0, 50: 50, 0.5: len(data) // 2, -1: len(data) - 1}[keep]
    path.write_bytes(data[:end])
    with pytest.raises(ValueError, match=rf"{path}: not a readable \.npy file .*truncated or corrupt"):
        PreparedDataset(root, "train")
    assert PreparedDataset(tiny_prepared, "train")[0][0]["dsm"].shape == (1, 32, 32)  # the original is fine


def test_corrupt_prepared_files_name_the_file(tmp_path, tiny_prepared):
    root = _copy(tiny_prepared, tmp_path / "p")
    meta_path = root / "meta.json"
    good_meta = meta_path.read_text()
    for text, pattern in (
        (good_meta[: len(good_meta) // 2], "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (good_meta.replace('"dsm"', '"../dsm"', 1), r"modalities entry '\.\./dsm'"),
        (good_meta.replace('"train": 16', '"train": -16', 1), r"splits entry 'train': -16"),
    ):
        meta_path.write_text(text)
        with pytest.raises(ValueError, match=rf"{meta_path}: {pattern}"):
            PreparedDataset(root, "train")
    meta_path.write_text(good_meta)
    label = root / "train" / "label.npy"
    np.save(label, np.load(label)[:-1])  # one tile short of meta.json's count
    with pytest.raises(ValueError, match=rf"{label}: 15 tiles, but meta.json announces 16"):
        PreparedDataset(root, "train")
    np.save(label, np.load(tiny_prepared / "train" / "label.npy").astype(np.float32))  # a float "label"
    with pytest.raises(ValueError, match=rf"{label}: float32 array .*kind 'iu'"):
        PreparedDataset(root, "train")
    (root / "train" / "label.npy").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{label}: file not found"):
        PreparedDataset(root, "train")
    _copy(tiny_prepared / "train", root / "t2")
    rgb = root / "t2" / "rgb.npy"
    np.save(rgb, np.load(rgb)[:, :2])  # a channel lost
    meta = json.loads(good_meta)
    meta["splits"]["t2"] = meta["splits"]["train"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{rgb}: shape \(16, 2, 32, 32\), but meta.json and label.npy give"):
        PreparedDataset(root, "t2")


def test_storage_keeps_the_source_dtype_and_its_nodata_value():
    assert Storage.of(np.uint8) == Storage("uint8")
    assert Storage.of("int16", 0.0) == Storage("int16", 0)  # Sen1Floods11's S2: int16, nodata 0
    assert Storage.of("uint8", -9999.0) == Storage("uint8")  # a tag no pixel can equal: no sentinel
    assert Storage.of("float32", float("nan")) == Storage("float32")
    assert Storage.of("float64") == Storage.of("int32") == Storage("float32")  # what the readers give
    assert common_storage([Storage("uint8"), Storage("uint8")]) == Storage("uint8")
    assert common_storage([Storage("uint8"), Storage("uint16")]) == Storage("uint16")
    assert common_storage([Storage("int16", 0), Storage("int16", 0)]) == Storage("int16", 0)
    assert common_storage([Storage("int16", 0), Storage("int16")]) == Storage("float32")  # 0 is valid in one
    assert common_storage([Storage("int16"), Storage("uint16")]) == Storage("float32")  # int32 is not kept
    with pytest.raises(ValueError, match="storage dtype 'int64'"):
        Storage("int64")
    with pytest.raises(ValueError, match="uint8: nodata sentinel 300"):
        Storage("uint8", 300)
    with pytest.raises(ValueError, match="float dtype marks nodata with NaN"):
        Storage("float32", 0)


def _integer_split(rng, n: int) -> np.ndarray:
    """uint16-valued float32 [n, 2, 4, 4] with some NaN (nodata)."""
    x = rng.integers(1, 60000, (n, 2, 4, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def test_integer_storage_is_lossless_and_loads_standardised_like_numpy(tmp_path):
    rng = np.random.default_rng(3)
    train, test = _integer_split(rng, 5), _integer_split(rng, 3)
    labels = {"train": np.zeros((5, 4, 4), np.uint8), "test": np.ones((3, 4, 4), np.uint8)}
    root = write_prepared(
        tmp_path / "d", {"train": ({"a": train}, labels["train"]), "test": ({"a": test}, labels["test"])},
        dataset="d", classes=["x", "y"], ignore_index=255, storage={"a": Storage("uint16", 0)},
    )  # fmt: skip
    stored = np.load(root / "test" / "a.npy")
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, np.nan_to_num(test, nan=0).astype(np.uint16))  # NaN -> sentinel 0
    assert read_meta(root)["storage"] == {"a": {"dtype": "uint16", "nodata": 0}}
    mean = np.nanmean(train.astype(np.float64), axis=(0, 2, 3))[None, :, None, None]
    std = np.nanstd(train.astype(np.float64), axis=(0, 2, 3))[None, :, None, None]
    data = PreparedDataset(root, "test")
    items = torch.stack([data[i][0]["a"] for i in range(len(data))])
    np.testing.assert_allclose(items.numpy(), np.nan_to_num((test - mean) / std, nan=0.0), atol=1e-5)
    raw = PreparedDataset(root, "test", standardised=False)
    batch = torch.stack([raw[i][0]["a"] for i in range(len(raw))])
    assert batch.dtype == torch.uint16
    assert torch.equal(raw.standardise({"a": batch})["a"], items)  # a batch standardises as its tiles do


@pytest.mark.parametrize(
    ("storage", "value", "pattern"),
    [
        (Storage("uint8"), 256.0, "value 256.0 cannot be kept as uint8"),
        (Storage("uint8"), 1.5, "value 1.5 cannot be kept as uint8"),
        (Storage("int16", 0), 0.0, r"value 0.0 cannot be kept as int16 \(its nodata sentinel is 0\)"),
        (Storage("float16"), 0.1, r"value 0.1\d* cannot be kept as float16 without loss"),
        (Storage("uint8"), np.nan, "nodata .NaN. in a uint8 modality with no nodata value"),
    ],
)
def test_storage_refuses_a_lossy_value_and_leaves_nothing(tmp_path, storage, value, pattern):
    x = np.ones((1, 1, 2, 2), np.float32)
    x[0, 0, 1, 1] = value
    with pytest.raises(ValueError, match=rf"d/train/a: {pattern}"):
        write_prepared(
            tmp_path / "d", {"train": ({"a": x}, np.zeros((1, 2, 2), np.uint8))}, dataset="d", classes=["x"],
            ignore_index=255, storage={"a": storage},
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_an_older_or_inconsistent_prepared_folder_is_refused(tmp_path, tiny_prepared):
    root = _copy(tiny_prepared, tmp_path / "p")
    meta_path = root / "meta.json"
    meta = json.loads(meta_path.read_text())
    for change, pattern in (
        (lambda m: m.pop("storage"), "key 'storage' missing .*older version.*prepare the data set again"),
        (lambda m: m["storage"].update(rgb={"dtype": "int64"}), r"storage entry 'rgb': .*'int64'"),
        (lambda m: m["normalisation"]["rgb"].update(std=[1.0]), r"normalisation entry 'rgb'.*3 finite numbers"),
        (lambda m: m["storage"].update(rgb={"dtype": "uint8", "nodata": None}), r"rgb.npy: float32 array .*uint8"),
    ):
        changed = json.loads(json.dumps(meta))
        change(changed)
        meta_path.write_text(json.dumps(changed))
        with pytest.raises(ValueError, match=pattern):
            PreparedDataset(root, "train")
