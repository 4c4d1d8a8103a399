"""Segmentation metrics from a confusion matrix accumulated over a whole test split.

Scores are computed once from the summed confusion matrix of a subset (every test pixel
weighs the same), never as a mean of per-image scores. All scores are in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

#: The value of every pixel of a kept prediction (predictions.npz) on a subset the method cannot use.
NOT_SCORED = 255


def _check_range(values: torch.Tensor, num_classes: int, what: str) -> None:
    """Raise ``ValueError`` naming the first values of ``values`` outside ``[0, num_classes)``."""
    bad = (values < 0) | (values >= num_classes)
    if bool(bad.any()):
        offending = torch.unique(values[bad])[:5].tolist()
        raise ValueError(f"{what} value(s) {offending} outside [0, {num_classes}) ({int(bad.sum())} pixel(s))")


def confusion_matrices(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """``int64[B, K, K]`` counts per image: row = target class, column = predicted class.

    ``pred`` and ``target`` are integer class indices of equal shape ``[B, ...]`` (e.g.
    ``[B, H, W]``). Pixels where ``target == ignore_index`` are dropped. Every prediction
    (ignored pixels included) and every kept target must lie in ``[0, K)``, else ``ValueError``
    naming the offending value. Computed with one ``torch.bincount`` on the inputs' device.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.dim() < 1:
        raise ValueError("pred and target need a batch dimension")
    for name, t in (("pred", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    batch = pred.shape[0]
    pred = pred.reshape(batch, -1).long()
    target = target.reshape(batch, -1).long()
    _check_range(pred, num_classes, "prediction")
    image = torch.arange(batch, device=pred.device).unsqueeze(1).expand_as(target)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target, image = pred[keep], target[keep], image[keep]
    _check_range(target, num_classes, "target")
    k2 = num_classes * num_classes
    counts = torch.bincount((image * k2 + target * num_classes + pred).reshape(-1), minlength=batch * k2)
    return counts.reshape(batch, num_classes, num_classes)


def confusion_matrix(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """``int64[K, K]`` counts over all pixels of ``pred`` and ``target`` (any equal shape):
    :func:`confusion_matrices` of the whole input as one image."""
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    return confusion_matrices(pred.reshape(1, -1), target.reshape(1, -1), num_classes, ignore_index)[0]


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN (without a warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _class_counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, fn)``, each ``float64[..., K]``, of confusion matrices ``[..., K, K]`` (rows = target)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"confusion matrix shape {m.shape} is not [..., K, K]")
    if (m < 0).any():
        raise ValueError("confusion matrix has negative counts")
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    return tp, m.sum(axis=-2) - tp, m.sum(axis=-1) - tp


def class_iou(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU in percent, ``float64[..., K]``, of confusion matrices ``[..., K, K]``:
    ``TP / (TP + FP + FN)``; NaN for a class in neither target nor prediction. Vectorised over
    leading dimensions (the bootstrap scores thousands of resampled matrices at once)."""
    tp, fp, fn = _class_counts(matrix)
    union = tp + fp + fn  # zero exactly when the class is in neither target nor prediction
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100.0 * tp / np.where(union > 0, union, 1.0), np.nan)


def class_f1(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 in percent, ``float64[..., K]``: ``2TP / (2TP + FP + FN)``; NaN as in :func:`class_iou`."""
    tp, fp, fn = _class_counts(matrix)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 100.0 * 2 * tp / np.where(denominator > 0, denominator, 1.0), np.nan)


def mean_iou(matrix: np.ndarray) -> np.ndarray:
    """mIoU in percent, ``float64[...]``, of confusion matrices ``[..., K, K]``: the mean of
    :func:`class_iou` over the classes that are not NaN (NaN if none is)."""
    iou = class_iou(matrix)
    present = ~np.isnan(iou)
    count = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(present, iou, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)


def segmentation_scores(matrix: np.ndarray | torch.Tensor, classes: Sequence[str]) -> dict:
    """Scores in percent from a ``[K, K]`` confusion matrix (rows = target, cols = prediction).

    Returns ``{"miou", "mf1", "accuracy", "iou": {class: float}, "f1": {class: float}}`` with
    ``IoU_k = TP/(TP+FP+FN)`` and ``F1_k = 2TP/(2TP+FP+FN)``. A class absent from both target
    and prediction gets NaN and is left out of ``miou``/``mf1`` (NaN if every class is absent).
    ``accuracy`` is the overall pixel accuracy (NaN for an empty matrix).
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    m = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    if m.shape != (k, k):
        raise ValueError(f"matrix shape {m.shape} does not match {k} classes")
    iou, f1 = class_iou(m), class_f1(m)
    tp = np.diag(m)
    total = m.sum()
    return {
        "miou": float(mean_iou(m)),
        "mf1": _nanmean(f1),
        "accuracy": float(100.0 * tp.sum() / total) if total > 0 else math.nan,
        "iou": {c: float(v) for c, v in zip(classes, iou)},
        "f1": {c: float(v) for c, v in zip(classes, f1)},
    }


def summarize(subset_miou: Mapping[str, float], not_applicable: Sequence[str] = ()) -> dict:
    """``{"avg", "top1", "last1", "top1_subset", "last1_subset"}`` over subsets (percent).

    ``avg`` is the mean mIoU over subsets, ``top1``/``last1`` the best/worst subset; ties go
    to the subset that comes first in ``subset_miou``'s order. A NaN mIoU (a subset with no
    valid pixel) raises ``ValueError`` rather than silently skewing the summary, unless the subset
    is ``not_applicable`` (a method that cannot use it): then Top-1 is the best of the others, and
    Avg and Last-1, which need every subset, are NaN (``last1_subset`` None).
    """
    if not subset_miou:
        raise ValueError("summarize needs at least one subset")
    unknown = [name for name in not_applicable if name not in subset_miou]
    if unknown or len(set(not_applicable)) == len(subset_miou):
        raise ValueError(
            f"not applicable subsets {list(not_applicable)}: must be some, not all, of {list(subset_miou)}"
        )
    items = [(name, float(v)) for name, v in subset_miou.items() if name not in not_applicable]
    nan = [name for name, v in items if math.isnan(v)]
    if nan:
        raise ValueError(f"mIoU is NaN for subset(s) {nan}")
    top = max(items, key=lambda kv: kv[1])  # max/min return the first of equal values
    last = min(items, key=lambda kv: kv[1])
    complete = not not_applicable
    return {
        "avg": sum(v for _, v in items) / len(items) if complete else math.nan,
        "top1": top[1],
        "last1": last[1] if complete else math.nan,
        "top1_subset": top[0],
        "last1_subset": last[0] if complete else None,
    }
