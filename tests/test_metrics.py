"""benchmark.metrics against scikit-learn as an independent oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, jaccard_score

from benchmark.metrics import (
    class_iou,
    confusion_matrices,
    confusion_matrix,
    mean_iou,
    segmentation_scores,
    summarize,
)

IGNORE = 255
K = 6
CLASSES = [f"c{i}" for i in range(K)]


def _random_batch(seed: int, shape=(3, 17, 23), absent=(4,), pred_absent=(4,)):
    """Random target/pred with ~20% ignored pixels; classes in ``absent`` never occur in target,
    those in ``pred_absent`` never in the prediction."""
    rng = np.random.default_rng(seed)
    target = rng.choice([k for k in range(K) if k not in absent], size=shape)
    # bias predictions towards the target so scores are neither ~0 nor ~100
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, K, size=shape))
    for k in pred_absent:
        pred[pred == k] = (k + 1) % K
    target[rng.random(shape) < 0.2] = IGNORE
    return torch.from_numpy(pred), torch.from_numpy(target)


def _sk_oracle(pred: torch.Tensor, target: torch.Tensor):
    keep = target.numpy().ravel() != IGNORE
    y_true, y_pred = target.numpy().ravel()[keep], pred.numpy().ravel()[keep]
    labels = list(range(K))
    cm = sk_confusion_matrix(y_true, y_pred, labels=labels)
    present = np.isin(labels, np.union1d(y_true, y_pred))
    # this scikit-learn's jaccard_score only takes zero_division in {0, 1}: mark absent classes
    iou = 100 * jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    iou[~present] = np.nan
    f1 = 100 * f1_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    return cm, iou, f1, present, (y_true == y_pred).mean() * 100


def test_confusion_matrix_matches_sklearn():
    pred, target = _random_batch(0)
    cm = confusion_matrix(pred, target, K, ignore_index=IGNORE)
    sk_cm, *_ = _sk_oracle(pred, target)
    assert cm.dtype == torch.int64 and cm.shape == (K, K)
    np.testing.assert_array_equal(cm.numpy(), sk_cm)
    assert int(cm.sum()) == int((target != IGNORE).sum())  # ignored pixels excluded
    assert int(cm[4].sum()) == 0  # class 4 is absent from the target


def test_confusion_matrix_orientation():
    # rows = target, columns = prediction: one pixel of target 0 predicted as 2
    cm = confusion_matrix(torch.tensor([2]), torch.tensor([0]), 3)
    assert cm[0, 2] == 1 and cm.sum() == 1


def test_scores_match_sklearn_with_absent_classes():
    # class 4 absent from target and prediction -> NaN; class 5 absent from prediction only
    pred, target = _random_batch(1, pred_absent=(4, 5))
    scores = segmentation_scores(confusion_matrix(pred, target, K, IGNORE), CLASSES)
    _, iou, f1, present, acc = _sk_oracle(pred, target)
    assert not present[4] and present[5]
    got_iou = np.array([scores["iou"][c] for c in CLASSES])
    got_f1 = np.array([scores["f1"][c] for c in CLASSES])
    np.testing.assert_allclose(got_iou, iou, equal_nan=True)
    np.testing.assert_allclose(got_f1, f1, equal_nan=True)
    assert math.isnan(scores["iou"]["c4"]) and scores["iou"]["c5"] == 0.0
    assert scores["miou"] == pytest.approx(np.mean(iou[present]))
    assert scores["mf1"] == pytest.approx(np.mean(f1[present]))
    assert scores["accuracy"] == pytest.approx(acc)
    assert 0 < scores["miou"] < 100


def test_scores_accept_numpy_and_all_absent_is_nan():
    scores = segmentation_scores(np.zeros((3, 3), dtype=np.int64), ["a", "b", "c"])
    assert math.isnan(scores["miou"]) and math.isnan(scores["mf1"])
    assert math.isnan(scores["accuracy"])
    perfect = segmentation_scores(np.diag([5, 0, 7]), ["a", "b", "c"])
    assert perfect["miou"] == 100.0 and perfect["accuracy"] == 100.0
    assert math.isnan(perfect["iou"]["b"])
    with pytest.raises(ValueError):
        segmentation_scores(np.zeros((3, 3)), ["a", "b"])


def test_per_image_matrices_match_sklearn_and_sum_to_the_whole():
    pred, target = _random_batch(7, shape=(5, 9, 11))
    per_image = confusion_matrices(pred, target, K, IGNORE)
    assert per_image.shape == (5, K, K) and per_image.dtype == torch.int64
    for n in range(5):
        cm, *_ = _sk_oracle(pred[n], target[n])
        np.testing.assert_array_equal(per_image[n].numpy(), cm)
    torch.testing.assert_close(per_image.sum(0), confusion_matrix(pred, target, K, IGNORE))


def test_vectorised_iou_equals_the_scores_of_each_matrix():
    matrices = np.stack([confusion_matrix(*_random_batch(s), K, IGNORE).numpy() for s in range(4)])
    matrices[2] = 0  # an empty matrix: every class absent
    iou, miou = class_iou(matrices), mean_iou(matrices)
    assert iou.shape == (4, K) and miou.shape == (4,)
    for n in range(4):
        scores = segmentation_scores(matrices[n], CLASSES)
        np.testing.assert_allclose(iou[n], [scores["iou"][c] for c in CLASSES], equal_nan=True)
        np.testing.assert_allclose(miou[n], scores["miou"], equal_nan=True)
    assert np.isnan(miou[2])
    with pytest.raises(ValueError, match="negative"):
        class_iou(-matrices)


@pytest.mark.parametrize(
    ("pred", "target", "bad"),
    [
        ([0, 1, 7], [0, 1, 2], "7"),  # prediction out of range
        ([0, 1, 2], [0, 9, 2], "9"),  # target out of range
        ([0, 1, 2], [0, -1, 2], "-1"),  # negative target (not the ignore index)
    ],
)
def test_out_of_range_raises(pred, target, bad):
    with pytest.raises(ValueError, match=bad):
        confusion_matrix(torch.tensor(pred), torch.tensor(target), 3, ignore_index=IGNORE)


def test_ignored_target_may_be_out_of_range_and_shapes_must_match():
    cm = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, IGNORE]), 3, IGNORE)
    assert int(cm.sum()) == 1
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3)


def test_summarize():
    out = summarize({"rgb": 60.0, "dsm": 30.0, "rgb+dsm": 75.0})
    assert out["avg"] == pytest.approx(55.0)
    assert (out["top1"], out["top1_subset"]) == (75.0, "rgb+dsm")
    assert (out["last1"], out["last1_subset"]) == (30.0, "dsm")
    with pytest.raises(ValueError):
        summarize({})
    with pytest.raises(ValueError, match="dsm"):
        summarize({"rgb": 1.0, "dsm": float("nan")})


def test_summarize_with_subsets_not_applicable():
    """A floor that cannot use a subset: Top-1 over the others, Avg and Last-1 undefined (never a zero)."""
    out = summarize({"rgb": 60.0, "dsm": float("nan"), "rgb+dsm": 75.0}, not_applicable=["dsm"])
    assert (out["top1"], out["top1_subset"]) == (75.0, "rgb+dsm")
    assert math.isnan(out["avg"]) and math.isnan(out["last1"]) and out["last1_subset"] is None
    with pytest.raises(ValueError, match="rgb"):  # a NaN elsewhere is still an error
        summarize({"rgb": float("nan"), "dsm": float("nan"), "rgb+dsm": 75.0}, not_applicable=["dsm"])
    with pytest.raises(ValueError, match="not all"):
        summarize({"rgb": float("nan")}, not_applicable=["rgb"])
    with pytest.raises(ValueError, match="nir"):
        summarize({"rgb": 1.0}, not_applicable=["nir"])
