"""benchmark.report.results (loading and checking a results folder) and the checks of
benchmark.report.leaderboard that need several records (family, robustness scales).

Every run folder comes from ``fake_results.write_results``, which returns the ground truth; the
error cases mutate one of its files. numpy is the oracle for means.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from report.fake_results import CLASSES, DATASET, METHODS, MODALITIES, SUBSETS, write_results

from benchmark.io import atomic_write_json
from benchmark.report import leaderboard
from benchmark.report.results import (
    load_confusion,
    load_metrics,
    load_predictions,
    load_train_log,
    num,
    run_folder,
)

FAILURE_PROBS = [0.1]
SCALES = [4, 8, 16]  # robustness strides of the hand-made blocks
TILE = (8, 8)  # predictions.npz tile size, pixels
TEST_TILES = 20  # tiles in the (pretend) test split


@pytest.fixture
def results(tmp_path: Path) -> tuple[Path, dict]:
    """(results root, ground truth {method: {seed: {"confusion", "record"}}})."""
    return tmp_path, write_results(tmp_path)


def _folder(root: Path, method: str, seed: int) -> Path:
    return root / DATASET / method / f"seed{seed}"


def _edit_metrics(root: Path, method: str, seed: int, mutate: Callable[[dict], object]) -> Path:
    """Apply ``mutate`` to a run's metrics.json in place; return its path."""
    path = _folder(root, method, seed) / "metrics.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    mutate(record)
    atomic_write_json(path, record)
    return path


def _record(root: Path, method: str, seed: int) -> dict:
    return next(r for r in load_metrics(root, DATASET) if r["run"] == method and r["seed"] == seed)


def _runs(records: list[dict]) -> list[tuple[str, int]]:
    return [(r["run"], r["seed"]) for r in records]


# --- load_metrics: what it returns -------------------------------------------------------------


def test_all_found_sorted_by_method_then_seed(tmp_path: Path):
    methods = {
        "zeta-complete": METHODS["beta-complete"],
        "alpha-complete": METHODS["alpha-complete"],
    }  # written in unsorted order
    truth = write_results(tmp_path, methods=methods, with_logs=False)
    (tmp_path / DATASET / "notes").mkdir()  # a folder without runs is not a method
    records = load_metrics(tmp_path, DATASET)
    assert _runs(records) == [("alpha-complete", 0), ("alpha-complete", 1), ("zeta-complete", 0), ("zeta-complete", 1)]
    for rec in records:
        assert rec == truth[rec["run"]][rec["seed"]]["record"]


def test_listed_methods_keep_their_order(results):
    root, _ = results
    records = load_metrics(root, DATASET, runs=["sgma-complete", "alpha-complete"])
    assert _runs(records) == [("sgma-complete", 0), ("sgma-complete", 1), ("alpha-complete", 0), ("alpha-complete", 1)]


def test_method_listed_twice(results):
    root, _ = results
    with pytest.raises(ValueError, match="more than once"):
        load_metrics(root, DATASET, runs=["alpha-complete", "beta-complete", "alpha-complete"])


def test_no_results_at_all(tmp_path: Path):
    (tmp_path / DATASET / "alpha-complete").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        load_metrics(tmp_path, DATASET)
    assert str(tmp_path / DATASET) in str(err.value)


def test_seeds_filter(tmp_path: Path):
    family, _, accuracy = METHODS["alpha-complete"]
    write_results(
        tmp_path, methods={"alpha-complete": (family, [0, 1, 2], accuracy), "beta-complete": METHODS["beta-complete"]}
    )
    records = load_metrics(tmp_path, DATASET, seeds=[1, 0])  # seed 2 is no longer in params
    assert _runs(records) == [("alpha-complete", 0), ("alpha-complete", 1), ("beta-complete", 0), ("beta-complete", 1)]
    assert _runs(load_metrics(tmp_path, DATASET, runs=["alpha-complete"], seeds=[2])) == [("alpha-complete", 2)]


def test_seeds_filter_missing_seed_names_the_expected_file(results):
    root, _ = results
    with pytest.raises(FileNotFoundError) as err:
        load_metrics(root, DATASET, seeds=[0, 3])
    assert str(_folder(root, "alpha-complete", 3) / "metrics.json") in str(err.value)


def test_listed_method_without_metrics(results):
    root, _ = results
    (root / DATASET / "ghost-complete").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_metrics(root, DATASET, runs=["alpha-complete", "ghost-complete"])
    assert str(root / DATASET / "ghost-complete" / "seed*" / "metrics.json") in str(err.value)


def test_seed_folder_must_be_numbered(results):
    root, _ = results
    folder = root / DATASET / "beta-complete" / "seed_old"
    shutil.copytree(_folder(root, "beta-complete", 0), folder)
    with pytest.raises(ValueError) as err:
        load_metrics(root, DATASET)
    assert str(folder / "metrics.json") in str(err.value)


# --- load_metrics: validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "method", "seed", "key"),
    [
        ("other", "alpha-complete", 0, "'dataset'"),
        (DATASET, "delta-complete", 0, "'run'"),
        (DATASET, "alpha-complete", 7, "'seed'"),
    ],
)
def test_path_disagrees_with_file(results, dataset: str, method: str, seed: int, key: str):
    """alpha/seed0's metrics.json copied to a folder whose path says otherwise."""
    root, _ = results
    folder = root / dataset / method / f"seed{seed}"
    folder.mkdir(parents=True)
    shutil.copy(_folder(root, "alpha-complete", 0) / "metrics.json", folder / "metrics.json")
    with pytest.raises(ValueError) as err:
        load_metrics(root, dataset, runs=[method])
    assert str(folder / "metrics.json") in str(err.value) and key in str(err.value)


def _rename_subset(record: dict, old: str, new: str) -> None:
    record["subsets"] = {new if k == old else k: v for k, v in record["subsets"].items()}


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda r: r.pop("summary"), "'summary'"),
        (lambda r: r.pop("family"), "'family'"),
        (lambda r: r.update(family=3), "'family'"),
        (lambda r: r.update(seed="0"), "'seed'"),
        (lambda r: r.update(seed=True), "'seed'"),  # a bool is not a seed
        (lambda r: r.update(seed=3), "'seed'"),  # the path says seed0
        (lambda r: r.update(classes="road"), "'classes'"),
        (lambda r: r["subsets"]["dsm"].pop("miou"), "subsets.dsm.miou"),
        (lambda r: r["subsets"]["dsm"].update(miou="high"), "subsets.dsm.miou"),
        (lambda r: r["subsets"]["dsm"].update(miou=True), "subsets.dsm.miou"),
        (lambda r: r["subsets"]["dsm"]["iou"].update(road="x"), "subsets.dsm.iou"),
        (lambda r: r["subsets"].update(dsm=[1.0]), "subsets.dsm.miou"),
        (lambda r: _rename_subset(r, "dsm", "nir"), "subsets.nir"),  # not one of the modalities
        (lambda r: r["subsets"].pop("dsm"), "'subsets'"),  # differs from the other files
        (lambda r: r.update(subsets={}), "'subsets'"),
        (lambda r: r.update(subsets=dict(reversed(r["subsets"].items()))), "'subsets'"),  # order differs
        (
            lambda r: r.update(modalities=[*MODALITIES, "nir"]),
            "'subsets'",
        ),  # the file's own subsets no longer cover its modalities
        (lambda r: r.update(classes=[*CLASSES[:-1], "water"]), "'classes'"),
        (lambda r: r["summary"].update(top1="high"), "summary.top1"),
        (lambda r: r["summary"].pop("avg"), "summary.avg"),
        (lambda r: r.update(efficiency=[]), "'efficiency'"),
    ],
)
def test_malformed_files(results, mutate, key: str):
    root, _ = results
    path = _edit_metrics(root, "beta-complete", 0, mutate)  # alpha, read first, stays correct
    with pytest.raises(ValueError) as err:
        load_metrics(root, DATASET)
    assert str(path) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text", ["[]", '{"dataset": "toy",'])
def test_not_a_metrics_object(results, text: str):
    root, _ = results
    path = _folder(root, "beta-complete", 1) / "metrics.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_metrics(root, DATASET)
    assert str(path) in str(err.value)


def test_extra_keys_are_ignored(results):
    root, truth = results
    _edit_metrics(root, "beta-complete", 0, lambda r: r.update(extra_key_from_some_method={"ignored": True}))
    rec = _record(root, "beta-complete", 0)
    assert rec["subsets"] == truth["beta-complete"][0]["record"]["subsets"]


def test_seeds_of_one_method_must_agree_on_its_family(results):
    root, _ = results
    _edit_metrics(root, "beta-complete", 1, lambda r: r.update(family="contrastive"))
    records = load_metrics(root, DATASET)  # each file is fine on its own
    with pytest.raises(ValueError, match=r"'beta-complete'.*family.*contrastive.*joint"):
        leaderboard.leaderboard_table(records, FAILURE_PROBS)


def test_null_miou_is_nan(results):
    root, truth = results
    _edit_metrics(root, "beta-complete", 0, lambda r: r["subsets"]["dsm"].update(miou=None))
    records = load_metrics(root, DATASET)
    rec = next(r for r in records if r["run"] == "beta-complete" and r["seed"] == 0)
    assert rec["subsets"]["dsm"]["miou"] is None and math.isnan(num(rec["subsets"]["dsm"]["miou"]))
    row = next(r for r in leaderboard.leaderboard_table(records, FAILURE_PROBS).rows if r["run"] == "beta-complete")
    assert math.isnan(row["dsm"]) and math.isnan(row["dsm_std"])
    rgb = np.array([truth["beta-complete"][s]["record"]["subsets"]["rgb"]["miou"] for s in (0, 1)])
    assert row["rgb"] == pytest.approx(rgb.mean()) and row["rgb_std"] == pytest.approx(rgb.std(ddof=1))
    # the image scores still hold the subset's matrix: metrics.json and image_scores.npz disagree
    with pytest.raises(ValueError, match="'dsm'"):
        load_confusion(root, rec)


# --- robustness blocks -------------------------------------------------------------------------


def _robustness(seed: int) -> np.ndarray:
    """float64[S, M, L] mean robustness weights in [0, 1]; exactly 0 for a modality not in the subset."""
    rng = np.random.default_rng(50 + seed)
    present = np.array([[m in s.split("+") for m in MODALITIES] for s in SUBSETS], dtype=float)
    return rng.uniform(0.0, 1.0, (len(SUBSETS), len(MODALITIES), len(SCALES))) * present[:, :, None]


def _block(values: np.ndarray) -> dict:
    return {
        "scales": list(SCALES),
        "subsets": {s: {m: values[i, j].tolist() for j, m in enumerate(MODALITIES)} for i, s in enumerate(SUBSETS)},
    }


@pytest.fixture
def robust_results(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """A results folder with robustness blocks in sgma's files, three seeds (so that no other
    statistic than the mean agrees by chance): (root, {seed: float64[S, M, L]})."""
    family, _, accuracy = METHODS["sgma-complete"]
    root, seeds = tmp_path, [0, 1, 2]
    write_results(root, methods={**METHODS, "sgma-complete": (family, seeds, accuracy)}, with_logs=False)
    values = {seed: _robustness(seed) for seed in seeds}
    for seed, v in values.items():
        _edit_metrics(root, "sgma-complete", seed, lambda r, v=v: r.update(robustness=_block(v)))
    return root, values


def test_robustness_means_over_seeds(robust_results):
    root, values = robust_results
    table = leaderboard.robustness_means(load_metrics(root, DATASET))
    assert list(table) == ["sgma-complete"]  # alpha and beta carry no robustness
    assert list(table["sgma-complete"]) == SUBSETS
    expected = np.mean(np.stack(list(values.values())), axis=0)  # [S, M, L]
    for i, subset in enumerate(SUBSETS):
        assert list(table["sgma-complete"][subset]) == MODALITIES
        for j, modality in enumerate(MODALITIES):
            assert table["sgma-complete"][subset][modality] == pytest.approx(
                expected[i, j].tolist(), rel=1e-12, abs=1e-15
            )
    assert table["sgma-complete"]["rgb"]["dsm"] == [0.0] * len(SCALES)


def test_robustness_seeds_must_agree_on_scales(robust_results):
    root, _ = robust_results
    _edit_metrics(root, "sgma-complete", 1, lambda r: r["robustness"].update(scales=[8, 16, 32]))
    records = load_metrics(root, DATASET)  # each file is fine on its own
    with pytest.raises(ValueError, match=r"'sgma-complete'.*robustness\.scales"):
        leaderboard.robustness_means(records)


def _set(block: dict, subset: str, modality: str, values: object) -> None:
    block["subsets"][subset][modality] = values


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda b: b.clear(), "'robustness.scales'"),
        (lambda b: b.update(scales=[]), "'robustness.scales'"),
        (lambda b: b.update(scales=[4, "8", 16]), "'robustness.scales'"),
        (lambda b: b.update(scales=[4, 0, 16]), "'robustness.scales'"),
        (lambda b: b.update(scales=[4, True, 16]), "'robustness.scales'"),
        (lambda b: b.update(scales=[4, 8]), "'robustness.subsets.rgb.rgb'"),  # 3 values, 2 scales
        (lambda b: b.pop("subsets"), "'robustness.subsets'"),
        (lambda b: b["subsets"].pop("dsm"), "'robustness.subsets'"),
        (lambda b: b["subsets"]["rgb+dsm"].pop("dsm"), "'robustness.subsets.rgb+dsm'"),
        (lambda b: b["subsets"]["rgb+dsm"].update(nir=[0.0] * 3), "'robustness.subsets.rgb+dsm'"),
        (lambda b: _set(b, "dsm", "dsm", [1.0]), "'robustness.subsets.dsm.dsm'"),
        (lambda b: _set(b, "dsm", "dsm", 1.0), "'robustness.subsets.dsm.dsm'"),
        (lambda b: _set(b, "dsm", "dsm", [1.0, 100.0, 1.0]), "'robustness.subsets.dsm.dsm'"),
        (lambda b: _set(b, "dsm", "dsm", [1.0, -0.5, 1.0]), "'robustness.subsets.dsm.dsm'"),
        (lambda b: _set(b, "dsm", "dsm", [1.0, "x", 1.0]), "'robustness.subsets.dsm.dsm'"),
    ],
)
def test_malformed_robustness(robust_results, mutate, key: str):
    root, _ = robust_results
    path = _edit_metrics(root, "sgma-complete", 0, lambda r: mutate(r["robustness"]))
    with pytest.raises(ValueError) as err:
        load_metrics(root, DATASET)
    assert str(path) in str(err.value) and key in str(err.value)


def test_robustness_not_a_dict(robust_results):
    root, _ = robust_results
    path = _edit_metrics(root, "sgma-complete", 0, lambda r: r.update(robustness=[]))
    with pytest.raises(ValueError) as err:
        load_metrics(root, DATASET)
    assert str(path) in str(err.value) and "'robustness'" in str(err.value)


# --- load_confusion ----------------------------------------------------------------------------


def _scores_path(root: Path, method: str, seed: int) -> Path:
    return _folder(root, method, seed) / "image_scores.npz"


def _rewrite_scores(root: Path, method: str, seed: int, mutate: Callable[[dict], object]) -> Path:
    path = _scores_path(root, method, seed)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    mutate(arrays)
    np.savez(path, **arrays)
    return path


def test_load_confusion_returns_what_was_written(results):
    root, truth = results
    records = load_metrics(root, DATASET)
    assert len(records) == sum(len(seeds) for seeds in truth.values())
    for rec in records:
        confusion = load_confusion(root, rec)
        written = truth[rec["run"]][rec["seed"]]["confusion"]
        assert confusion.dtype == np.int64
        assert confusion.shape == (len(SUBSETS), written.shape[1], len(CLASSES), len(CLASSES))
        np.testing.assert_array_equal(confusion, written)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16])
def test_load_confusion_other_integer_dtypes_become_int64(results, dtype):
    root, truth = results
    _rewrite_scores(root, "beta-complete", 1, lambda a: a.update(confusion=a["confusion"].astype(dtype)))
    confusion = load_confusion(root, _record(root, "beta-complete", 1))
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, truth["beta-complete"][1]["confusion"])


def _negative(confusion: np.ndarray) -> np.ndarray:
    out = confusion.copy()
    out[1, 0, 0, 1] = -1
    return out


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda a: a.update(subsets=a["subsets"][::-1]), "'subsets'"),
        (lambda a: a.update(subsets=a["subsets"][:2]), "'subsets'"),
        (lambda a: a.pop("subsets"), "'subsets'"),
        (lambda a: a.update(classes=np.array([*CLASSES[:-1], "water"])), "'classes'"),
        (lambda a: a.pop("classes"), "'classes'"),
        (lambda a: a.pop("confusion"), "'confusion'"),
        (lambda a: a.update(confusion=a["confusion"][:2]), "'confusion'"),  # S = 2, 3 subsets
        (lambda a: a.update(confusion=a["confusion"].sum(axis=1)), "'confusion'"),  # no image axis
        (lambda a: a.update(confusion=a["confusion"][..., :2, :2]), "'confusion'"),  # K = 2, 3 classes
        (lambda a: a.update(confusion=_negative(a["confusion"])), "'confusion'"),
        (lambda a: a.update(confusion=a["confusion"].astype(np.float64)), "'confusion'"),
        (lambda a: a.update(confusion=a["confusion"] > 0), "'confusion'"),  # bool is no count
    ],
)
def test_load_confusion_malformed(results, mutate, key: str):
    root, _ = results
    path = _rewrite_scores(root, "beta-complete", 1, mutate)
    with pytest.raises(ValueError) as err:
        load_confusion(root, _record(root, "beta-complete", 1))
    assert str(path) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("subset", SUBSETS)
def test_load_confusion_miou_disagrees_with_image_scores(results, subset: str):
    root, truth = results
    i = SUBSETS.index(subset)

    def move_one_pixel(arrays: dict) -> None:  # a right pixel of one image becomes a wrong one
        confusion = arrays["confusion"].copy()
        n, k = np.argwhere(np.einsum("nkk->nk", confusion[i]) > 0)[0]
        confusion[i, n, k, k] -= 1
        confusion[i, n, k, (k + 1) % len(CLASSES)] += 1
        arrays["confusion"] = confusion

    path = _rewrite_scores(root, "alpha-complete", 0, move_one_pixel)
    with pytest.raises(ValueError) as err:
        load_confusion(root, _record(root, "alpha-complete", 0))
    assert str(path) in str(err.value) and repr(subset) in str(err.value)
    others = [repr(s) for s in SUBSETS if s != subset]
    assert not any(o in str(err.value) for o in others)


def test_load_confusion_metrics_miou_edited(results):
    root, _ = results
    _edit_metrics(
        root, "sgma-complete", 1, lambda r: r["subsets"]["rgb+dsm"].update(miou=r["subsets"]["rgb+dsm"]["miou"] + 0.5)
    )
    with pytest.raises(ValueError) as err:
        load_confusion(root, _record(root, "sgma-complete", 1))
    assert str(_scores_path(root, "sgma-complete", 1)) in str(err.value) and "'rgb+dsm'" in str(err.value)


def test_load_confusion_missing_file(results):
    root, _ = results
    path = _scores_path(root, "beta-complete", 0)
    path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_confusion(root, _record(root, "beta-complete", 0))
    assert str(path) in str(err.value)


def test_load_confusion_not_an_npz(results):
    root, _ = results
    path = _scores_path(root, "beta-complete", 0)
    path.write_bytes(b"not an npz file\n" * 8)
    with pytest.raises(ValueError) as err:
        load_confusion(root, _record(root, "beta-complete", 0))
    assert str(path) in str(err.value)


def test_load_confusion_truncated_npz(results):
    root, _ = results
    path = _scores_path(root, "beta-complete", 0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        load_confusion(root, _record(root, "beta-complete", 0))
    assert str(path) in str(err.value)


# --- load_predictions --------------------------------------------------------------------------


def _predictions(tiles: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "indices": np.sort(rng.choice(TEST_TILES, tiles, replace=False)).astype(np.int64),
        "subsets": np.array(SUBSETS),
        "pred": rng.integers(0, len(CLASSES), (len(SUBSETS), tiles, *TILE)).astype(np.uint8),
    }


def _write_predictions(root: Path, arrays: dict[str, np.ndarray], method: str = "beta-complete", seed: int = 0) -> Path:
    path = _folder(root, method, seed) / "predictions.npz"
    np.savez(path, **arrays)
    return path


def test_load_predictions_absent(results):
    root, _ = results
    assert load_predictions(root, _record(root, "beta-complete", 0)) is None


def test_load_predictions_returns_what_was_written(results):
    root, _ = results
    arrays = _predictions(tiles=3)
    rng = np.random.default_rng(1)
    arrays |= {
        "modalities": np.array(MODALITIES),
        "scales": np.array(SCALES, dtype=np.int64),
        "robustness_4": rng.uniform(0, 1, (len(SUBSETS), 3, len(MODALITIES), 2, 2)).astype(np.float16),
    }
    _write_predictions(root, arrays)
    loaded = load_predictions(root, _record(root, "beta-complete", 0))
    assert loaded is not None and set(loaded) == set(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)


def test_load_predictions_without_tiles(results):
    root, _ = results
    arrays = {
        "indices": np.zeros(0, dtype=np.int64),
        "subsets": np.array(SUBSETS),
        "pred": np.zeros((len(SUBSETS), 0, *TILE), dtype=np.uint8),
    }
    _write_predictions(root, arrays)
    assert load_predictions(root, _record(root, "beta-complete", 0)) is None


def _out_of_range(pred: np.ndarray) -> np.ndarray:
    out = pred.copy()
    out[2, 1, 3, 4] = len(CLASSES)
    return out


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda a: a.update(pred=a["pred"][:2]), "'pred'"),  # S = 2, 3 subsets
        (lambda a: a.update(pred=a["pred"][:, :1]), "'pred'"),  # 1 tile, 2 indices
        (lambda a: a.update(pred=a["pred"][:, :, 0]), "'pred'"),  # no row axis
        (lambda a: a.pop("pred"), "'pred'"),
        (lambda a: a.update(pred=_out_of_range(a["pred"])), "'pred'"),
        (lambda a: a.update(subsets=a["subsets"][::-1]), "'subsets'"),
        (lambda a: a.pop("indices"), "'indices'"),
    ],
)
def test_load_predictions_malformed(results, mutate, key: str):
    root, _ = results
    arrays = _predictions()
    mutate(arrays)
    path = _write_predictions(root, arrays)
    with pytest.raises(ValueError) as err:
        load_predictions(root, _record(root, "beta-complete", 0))
    assert str(path) in str(err.value) and key in str(err.value)


def test_load_predictions_negative_class(results):
    root, _ = results
    arrays = _predictions()
    pred = arrays["pred"].astype(np.int16)
    pred[0, 0, 0, 0] = -1
    path = _write_predictions(root, arrays | {"pred": pred})
    with pytest.raises(ValueError) as err:
        load_predictions(root, _record(root, "beta-complete", 0))
    assert str(path) in str(err.value) and "'pred'" in str(err.value)


# --- load_train_log ----------------------------------------------------------------------------


def _log_lines(steps: int = 7) -> tuple[list[str], dict[str, np.ndarray]]:
    """JSON lines of a training log with extra keys, and the columns they hold."""
    rng = np.random.default_rng(3)
    columns = {
        "step": np.arange(steps, dtype=float) * 5,
        "loss": rng.uniform(0.1, 3.0, steps),
        "images_per_s": rng.uniform(10.0, 90.0, steps),
    }
    lines = [
        json.dumps(
            {
                "step": int(columns["step"][i]),
                "loss": float(columns["loss"][i]),
                "ce": 0.5,
                "lr": 0.01,
                "images_per_s": float(columns["images_per_s"][i]),
            }
        )
        for i in range(steps)
    ]
    return lines, columns


def _log_path(root: Path, method: str = "alpha-complete", seed: int = 1) -> Path:
    return _folder(root, method, seed) / "train_log.jsonl"


def test_load_train_log_columns(results):
    root, _ = results
    lines, columns = _log_lines()
    _log_path(root).write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = load_train_log(root, _record(root, "alpha-complete", 1))
    assert log is not None and set(log) == set(columns)
    for key, values in columns.items():
        np.testing.assert_array_equal(log[key], values)


def test_a_fitted_floors_log_has_no_curve(results):
    """A floor's one ``fit`` line (benchmark.train.fit_once) is no step: no curve, no error."""
    root, _ = results
    _log_path(root).write_text(json.dumps({"fit": {"threshold": -17.5}, "seconds": 0.2, "tiles": 16}) + "\n")
    assert load_train_log(root, _record(root, "alpha-complete", 1)) is None


def test_load_train_log_of_fake_results(results):
    """The log fake_results wrote, read back line by line with json."""
    root, _ = results
    entries = [
        json.loads(line) for line in _log_path(root, "sgma-complete", 0).read_text(encoding="utf-8").splitlines()
    ]
    log = load_train_log(root, _record(root, "sgma-complete", 0))
    assert log is not None
    for key in ("step", "loss", "images_per_s"):
        np.testing.assert_array_equal(log[key], [float(e[key]) for e in entries])


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        '{"step": 2, "images_per_s": 1.0}',  # no loss
        '{"step": 2, "loss": "low", "images_per_s": 1.0}',
        '{"step": 2, "loss": null, "images_per_s": 1.0}',
        "[1, 2, 3]",
        "",
    ],
)
def test_load_train_log_bad_line(results, bad: str):
    root, _ = results
    lines, _ = _log_lines()
    lines[2] = bad
    path = _log_path(root)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_train_log(root, _record(root, "alpha-complete", 1))
    assert str(path) in str(err.value) and "line 3" in str(err.value)


def test_load_train_log_absent_or_empty(results):
    root, _ = results
    path = _log_path(root)
    path.unlink()
    assert load_train_log(root, _record(root, "alpha-complete", 1)) is None
    path.write_text("", encoding="utf-8")
    assert load_train_log(root, _record(root, "alpha-complete", 1)) is None


def test_run_folder(tmp_path: Path):
    assert run_folder(tmp_path, DATASET, "alpha-complete", 3) == tmp_path / DATASET / "alpha-complete" / "seed3"


def test_seeds_of_one_run_must_share_its_protocol(results):
    """A protocol redefined between two seeds' trainings: the report refuses to pool them."""
    root, _ = results
    path = _folder(root, "beta-complete", 1) / "metrics.json"
    record = json.loads(path.read_text())
    record["protocol"] = {"name": "complete", "kind": "uniform"}
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError) as err:
        load_metrics(root, DATASET)
    assert str(path) in str(err.value) and "'protocol'" in str(err.value) and "redefined" in str(err.value)


def test_folders_that_are_not_runs_are_not_found(tmp_path: Path):
    write_results(tmp_path, with_logs=False)
    old = tmp_path / DATASET / "muss" / "seed0"  # the layout before protocols: a method folder
    shutil.copytree(_folder(tmp_path, "alpha-complete", 0), old)
    assert {r["run"] for r in load_metrics(tmp_path, DATASET)} == set(METHODS)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda t: t.update(fog=[]), "tags.fog"),
        (lambda t: t["fog"].update(tiles=0), "tags.fog.tiles"),
        (lambda t: t["fog"].update(tiles=True), "tags.fog.tiles"),
        (lambda t: t["fog"]["miou"].pop("dsm"), "tags.fog.miou"),
        (lambda t: t["fog"]["miou"].update(dsm="x"), "tags.fog.miou.dsm"),
        (lambda t: t["fog"].update(summary={"avg": 1.0}), "tags.fog.summary"),
    ],
)
def test_malformed_tags(tmp_path, mutate, key: str):
    write_results(tmp_path, tags={"fog": [0, 1], "night": [2]})
    path = _edit_metrics(tmp_path, "beta-complete", 0, lambda r: mutate(r["tags"]))
    with pytest.raises(ValueError) as err:
        load_metrics(tmp_path, DATASET)
    assert str(path) in str(err.value) and key in str(err.value)
    _edit_metrics(
        tmp_path,
        "beta-complete",
        0,
        lambda r: r["tags"].update(fog={"tiles": 2, "miou": dict.fromkeys(SUBSETS), "summary": None}),
    )
    load_metrics(tmp_path, DATASET)  # null scores and no summary: a tag where nothing was scored
