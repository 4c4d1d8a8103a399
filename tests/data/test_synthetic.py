"""Tests of the embedded synthetic data set (benchmark.data.synthetic).

The design test trains a per-pixel random forest (pixel values + 5x5 local means) on each
single modality and on all of them, and checks that the fusion wins and that every modality
shows its documented blind spot. ``pytest tests/data/test_synthetic.py -s`` prints the table.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import confusion_matrix

from benchmark.data.synthetic import (
    BUILDING,
    CAR,
    CLASSES,
    CLUTTER,
    IMPERVIOUS,
    LOW_VEGETATION,
    MODALITIES,
    SAR_CHANNELS,
    TREE,
    SyntheticConfig,
    generate_tiles,
)

SUBSETS: dict[str, tuple[str, ...]] = {
    "rgb": ("rgb",),
    "dsm": ("dsm",),
    "nir": ("nir",),
    "sar": ("sar",),
    "rgb+dsm+nir": ("rgb", "dsm", "nir"),
    "all4": ("rgb", "dsm", "nir", "sar"),
}
SINGLE = ("rgb", "dsm", "nir", "sar")


def test_determinism() -> None:
    cfg = SyntheticConfig(with_sar=True)
    a, la = generate_tiles(cfg, 6, seed=3)
    b, lb = generate_tiles(cfg, 6, seed=3)
    c, lc = generate_tiles(cfg, 6, seed=4)
    assert list(a) == list(b) and np.array_equal(la, lb)
    for name in a:  # bit-identical, NaN included
        assert a[name].tobytes() == b[name].tobytes(), name
        assert not np.array_equal(a[name], c[name], equal_nan=True), name
    assert not np.array_equal(la, lc)
    plain, lp = generate_tiles(cfg.model_copy(update={"with_sar": False}), 6, seed=3)
    assert np.array_equal(lp, la)  # sar is drawn last: the other modalities do not change
    for name in plain:
        assert plain[name].tobytes() == a[name].tobytes(), name


@pytest.mark.parametrize("tile_size", [64, 128])
def test_shapes_dtypes_ranges(tile_size: int) -> None:
    cfg = SyntheticConfig(tile_size=tile_size, with_sar=True, dsm_void_fraction=0.08)
    n = 10 if tile_size == 64 else 4
    data, label = generate_tiles(cfg, n, seed=0)
    assert list(data) == [*MODALITIES, "sar"]
    channels = {**MODALITIES, "sar": SAR_CHANNELS}
    for name, array in data.items():
        assert array.dtype == np.float32 and array.shape == (n, channels[name], tile_size, tile_size)
        if name != "dsm":
            assert np.isfinite(array).all(), name
    assert label.dtype == np.uint8 and label.shape == (n, tile_size, tile_size)
    assert label.max() < len(CLASSES)
    assert data["rgb"].min() >= 0 and data["rgb"].max() <= 1
    assert data["nir"].min() >= 0 and data["nir"].max() <= 1
    assert data["sar"].min() >= -40 and data["sar"].max() < 30  # dB
    dsm = data["dsm"][:, 0]
    void = np.isnan(dsm)
    assert not np.isinf(dsm).any()
    assert abs(void.mean() - 0.08) < 0.01  # every tile has about the configured void fraction
    assert np.all(np.abs(void.mean(axis=(1, 2)) - 0.08) < 0.02)
    valid = ~void
    ground = np.isin(label, [IMPERVIOUS, LOW_VEGETATION]) & valid
    assert abs(np.median(dsm[ground])) < 0.2  # nDSM: ground at about 0 m
    assert 6 <= np.median(dsm[(label == BUILDING) & valid]) <= 20
    assert 1.0 <= np.median(dsm[(label == CAR) & valid]) <= 2.0
    no_sar, _ = generate_tiles(cfg.model_copy(update={"with_sar": False}), 2, seed=0)
    assert list(no_sar) == list(MODALITIES)
    no_void, _ = generate_tiles(cfg.model_copy(update={"dsm_void_fraction": 0.0}), 2, seed=0)
    assert not np.isnan(no_void["dsm"]).any()


def test_all_classes_present_and_balance() -> None:
    t0 = time.perf_counter()
    _, label = generate_tiles(SyntheticConfig(), 200, seed=0)
    elapsed = time.perf_counter() - t0
    print(f"\ngenerate_tiles(200 x 64x64): {elapsed:.2f} s")
    assert elapsed < 4.0  # budget 2 s on a quiet machine; slack for a loaded CI runner
    first = label[:32]
    assert all((first == c).any() for c in range(len(CLASSES)))
    share = np.bincount(label.ravel(), minlength=len(CLASSES)) / label.size
    print("class shares:", {name: round(float(s), 3) for name, s in zip(CLASSES, share)})
    assert share[CAR] > 0.005 and share[-1] > 0.005  # rare but present
    assert np.all(share[:4] > 0.08)  # the four large classes are not marginal
    present = np.stack([(label == c).any(axis=(1, 2)) for c in range(len(CLASSES))])
    assert np.all(present.mean(axis=1) > 0.8)  # each class appears in most tiles


def _local_mean(x: np.ndarray, radius: int = 2) -> np.ndarray:
    """Box mean over (2 radius + 1)^2 pixels of float [N, C, H, W] (edge padded)."""
    k = 2 * radius + 1
    p = np.pad(x, ((0, 0), (0, 0), (radius + 1, radius), (radius + 1, radius)), mode="edge")
    p[:, :, 0, :] = 0
    p[:, :, :, 0] = 0
    c = p.cumsum(2).cumsum(3)
    h, w = x.shape[2:]
    return (c[:, :, k:, k:] - c[:, :, :h, k:] - c[:, :, k:, :w] + c[:, :, :h, :w]) / k**2


def _features(data: dict[str, np.ndarray], stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per modality: standardised pixels + 5x5 means, NaN -> 0 (as the prepare step) -> [N, H, W, 2C]."""
    out = {}
    for name, array in data.items():
        mean, std = stats[name]
        z = np.nan_to_num((array - mean[:, None, None]) / std[:, None, None], nan=0.0)
        out[name] = np.concatenate([z, _local_mean(z)], axis=1).transpose(0, 2, 3, 1)
    return out


def _pair_confusion(cm: np.ndarray, a: int, b: int) -> float:
    """Share of the pixels of classes a and b that are predicted as the other one of the pair."""
    return float((cm[a, b] + cm[b, a]) / (cm[a, a] + cm[a, b] + cm[b, a] + cm[b, b]))


def _group_confusion(cm: np.ndarray, group_a: list[int], group_b: list[int]) -> float:
    """Share of the pixels of both groups that are predicted in the other group."""
    cross = cm[np.ix_(group_a, group_b)].sum() + cm[np.ix_(group_b, group_a)].sum()
    return float(cross / cm[np.ix_(group_a + group_b, group_a + group_b)].sum())


def _evaluate(cfg: SyntheticConfig, subsets: dict[str, tuple[str, ...]]) -> dict[str, dict[str, object]]:
    """Random forest per modality subset: {subset: {"miou", "iou" [6], "cm" [6, 6]}}.

    Train on 20k pixels sampled from 64 tiles (seed 0), test on 20k pixels of 32 tiles (seed 1).
    """
    train, y_train = generate_tiles(cfg, 64, seed=0)
    test, y_test = generate_tiles(cfg, 32, seed=1)
    stats = {k: (np.nanmean(v, axis=(0, 2, 3)), np.nanstd(v, axis=(0, 2, 3))) for k, v in train.items()}
    f_train, f_test = _features(train, stats), _features(test, stats)
    rng = np.random.default_rng(0)
    i_train = rng.choice(y_train.size, 20000, replace=False)
    i_test = rng.choice(y_test.size, 20000, replace=False)
    result: dict[str, dict[str, object]] = {}
    for name, subset in subsets.items():
        x_train = np.concatenate([f_train[m].reshape(y_train.size, -1)[i_train] for m in subset], axis=1)
        x_test = np.concatenate([f_test[m].reshape(y_test.size, -1)[i_test] for m in subset], axis=1)
        clf = RandomForestClassifier(n_estimators=40, min_samples_leaf=3, n_jobs=2, random_state=0)
        clf.fit(x_train, y_train.ravel()[i_train])
        cm = confusion_matrix(y_test.ravel()[i_test], clf.predict(x_test), labels=range(len(CLASSES)))
        tp = np.diag(cm).astype(float)
        iou = tp / (cm.sum(0) + cm.sum(1) - tp)
        result[name] = {"miou": float(iou.mean()), "iou": iou, "cm": cm}
    return result


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, object]]:
    """:func:`_evaluate` on the default config with SAR, every subset of :data:`SUBSETS`; prints tables."""
    result = _evaluate(SyntheticConfig(with_sar=True), SUBSETS)
    short = ["imp", "bld", "lowveg", "tree", "car", "clut"]
    print("\nper-pixel random forest, IoU % on 20k test pixels (train 20k pixels of 64 tiles)")
    print(f"{'subset':<12} {'mIoU':>6} " + " ".join(f"{s:>6}" for s in short))
    for name, r in result.items():
        print(f"{name:<12} {100 * r['miou']:6.1f} " + " ".join(f"{100 * v:6.1f}" for v in r["iou"]))
    pairs = {
        "imp/lowveg": lambda cm: _pair_confusion(cm, IMPERVIOUS, LOW_VEGETATION),
        "bld/imp": lambda cm: _pair_confusion(cm, BUILDING, IMPERVIOUS),
        "tree/lowveg": lambda cm: _pair_confusion(cm, TREE, LOW_VEGETATION),
        "bld/tree": lambda cm: _pair_confusion(cm, BUILDING, TREE),
        "car/clut": lambda cm: _pair_confusion(cm, CAR, CLUTTER),
        "ground/elev": lambda cm: _group_confusion(cm, [IMPERVIOUS, LOW_VEGETATION], [BUILDING, TREE]),
        "veg/built": lambda cm: _group_confusion(cm, [LOW_VEGETATION, TREE], [IMPERVIOUS, BUILDING]),
    }
    print("pair/group confusion %")
    print(f"{'subset':<12} " + " ".join(f"{p:>11}" for p in pairs))
    for name, r in result.items():
        print(f"{name:<12} " + " ".join(f"{100 * f(r['cm']):11.1f}" for f in pairs.values()))
    return result


def test_fusion_beats_every_single_modality(scores: dict[str, dict[str, object]]) -> None:
    best_single = max(scores[m]["miou"] for m in SINGLE)
    assert scores["rgb+dsm+nir"]["miou"] > best_single + 0.10
    assert scores["all4"]["miou"] > best_single + 0.10
    for name in ("rgb", "dsm", "nir"):  # each modality alone is clearly insufficient
        assert scores[name]["miou"] < scores["rgb+dsm+nir"]["miou"] - 0.10, name


def test_dsm_blind_spot(scores: dict[str, dict[str, object]]) -> None:
    dsm, fused = scores["dsm"]["cm"], scores["rgb+dsm+nir"]["cm"]
    assert _pair_confusion(dsm, IMPERVIOUS, LOW_VEGETATION) > 0.30  # cannot separate ground classes
    assert _pair_confusion(fused, IMPERVIOUS, LOW_VEGETATION) < 0.10
    ground, elevated = [IMPERVIOUS, LOW_VEGETATION], [BUILDING, TREE]
    assert _group_confusion(dsm, ground, elevated) < 0.10  # separates elevated from ground


def test_rgb_blind_spot(scores: dict[str, dict[str, object]]) -> None:
    rgb, fused = scores["rgb"]["cm"], scores["rgb+dsm+nir"]["cm"]
    assert _pair_confusion(rgb, BUILDING, IMPERVIOUS) > 0.15  # grey roofs look like asphalt
    assert _pair_confusion(fused, BUILDING, IMPERVIOUS) < 0.10
    assert _pair_confusion(rgb, TREE, LOW_VEGETATION) > 2 * _pair_confusion(fused, TREE, LOW_VEGETATION)
    assert _pair_confusion(rgb, IMPERVIOUS, LOW_VEGETATION) < 0.10  # grey vs green: separated


def test_nir_blind_spot(scores: dict[str, dict[str, object]]) -> None:
    nir, fused = scores["nir"]["cm"], scores["rgb+dsm+nir"]["cm"]
    assert _pair_confusion(nir, TREE, LOW_VEGETATION) > 0.25  # both bright vegetation
    assert _pair_confusion(nir, BUILDING, IMPERVIOUS) > 0.25  # identical in NIR
    assert _pair_confusion(fused, TREE, LOW_VEGETATION) < 0.10
    vegetation, built = [LOW_VEGETATION, TREE], [IMPERVIOUS, BUILDING]
    assert _group_confusion(nir, vegetation, built) < 0.10  # separates vegetation from the rest


def test_sar_blind_spot(scores: dict[str, dict[str, object]]) -> None:
    sar, fused = scores["sar"]["cm"], scores["all4"]["cm"]
    assert _pair_confusion(sar, IMPERVIOUS, LOW_VEGETATION) > 0.20  # smooth ground: both dark
    assert _pair_confusion(fused, IMPERVIOUS, LOW_VEGETATION) < 0.10
    assert _group_confusion(sar, [BUILDING], [IMPERVIOUS, LOW_VEGETATION]) < 0.10  # double bounce


def test_grey_roofs_cause_the_rgb_blind_spot() -> None:
    """Without asphalt-grey roofs, RGB alone separates buildings from impervious surfaces."""
    rgb = _evaluate(SyntheticConfig(grey_roof_fraction=0.0), {"rgb": ("rgb",)})["rgb"]["cm"]
    print(f"\nrgb, grey_roof_fraction=0: bld/imp confusion {100 * _pair_confusion(rgb, BUILDING, IMPERVIOUS):.1f} %")
    assert _pair_confusion(rgb, BUILDING, IMPERVIOUS) < 0.10
