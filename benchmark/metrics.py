"""Segmentation metrics from a confusion matrix accumulated over a whole test split.

Scores are computed once from the summed confusion matrix of a subset (every test pixel
weighs the same), never as a mean of per-image scores. All scores are in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch


def _check_range(values: torch.Tensor, num_classes: int, what: str) -> None:
    """Raise ``ValueError`` naming the first values of ``values`` outside ``[0, num_classes)``."""
    bad = (values < 0) | (values >= num_classes)
    if bool(bad.any()):
        offending = torch.unique(values[bad])[:5].tolist()
        raise ValueError(f"{what} value(s) {offending} outside [0, {num_classes}) ({int(bad.sum())} pixel(s))")


def confusion_matrix(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """``int64[K, K]`` counts: row = target class, column = predicted class.

    ``pred`` and ``target`` are integer class indices of any equal shape (e.g. ``[B, H, W]``).
    Pixels where ``target == ignore_index`` are dropped. Every prediction (ignored pixels
    included) and every kept target must lie in ``[0, K)``, else ``ValueError`` naming the
    offending value. Computed with ``torch.bincount`` on the inputs' device.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    for name, t in (("pred", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    _check_range(pred, num_classes, "prediction")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    _check_range(target, num_classes, "target")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates :func:`confusion_matrix` over batches.

    ``update(logits_or_pred, target)``: a floating ``[B, K, H, W]`` first argument is reduced
    by ``argmax`` over dim 1; an integer one is used as predicted class indices ``[B, H, W]``.
    The running sum stays on the device of the batches (no host sync per batch);
    :attr:`matrix` returns a CPU ``int64[K, K]`` copy.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._sum = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, logits_or_pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: logits ``float[B, K, H, W]`` or predictions ``int[B, H, W]``."""
        pred = logits_or_pred
        if pred.is_floating_point():
            if pred.dim() != target.dim() + 1 or pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits shape {tuple(pred.shape)} does not match target "
                    f"{tuple(target.shape)} with {self.num_classes} classes on dim 1"
                )
            pred = pred.argmax(dim=1)
        batch = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self._sum.device != batch.device:
            self._sum = self._sum.to(batch.device)
        self._sum += batch

    @property
    def matrix(self) -> torch.Tensor:
        """``int64[K, K]`` on CPU (a copy): rows = target, columns = prediction."""
        return self._sum.detach().to("cpu", copy=True)

    def reset(self) -> None:
        """Zero the running sum."""
        self._sum = torch.zeros_like(self._sum)


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN (without a warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


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
    if (m < 0).any():
        raise ValueError("confusion matrix has negative counts")
    tp = np.diag(m)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    union = tp + fp + fn  # zero exactly when the class is in neither target nor prediction
    present = union > 0
    safe = np.where(present, union, 1.0)
    iou = np.where(present, 100.0 * tp / safe, np.nan)
    f1 = np.where(present, 100.0 * 2 * tp / np.where(present, union + tp, 1.0), np.nan)
    total = m.sum()
    return {
        "miou": _nanmean(iou),
        "mf1": _nanmean(f1),
        "accuracy": float(100.0 * tp.sum() / total) if total > 0 else math.nan,
        "iou": {c: float(v) for c, v in zip(classes, iou)},
        "f1": {c: float(v) for c, v in zip(classes, f1)},
    }


def summarize(subset_miou: Mapping[str, float]) -> dict:
    """``{"avg", "top1", "last1", "top1_subset", "last1_subset"}`` over subsets (percent).

    ``avg`` is the mean mIoU over subsets, ``top1``/``last1`` the best/worst subset; ties go
    to the subset that comes first in ``subset_miou``'s order. A NaN mIoU (a subset with no
    valid pixel) raises ``ValueError`` rather than silently skewing the summary.
    """
    if not subset_miou:
        raise ValueError("summarize needs at least one subset")
    items = [(name, float(v)) for name, v in subset_miou.items()]
    nan = [name for name, v in items if math.isnan(v)]
    if nan:
        raise ValueError(f"mIoU is NaN for subset(s) {nan}")
    top = max(items, key=lambda kv: kv[1])  # max/min return the first of equal values
    last = min(items, key=lambda kv: kv[1])
    return {
        "avg": sum(v for _, v in items) / len(items),
        "top1": top[1],
        "last1": last[1],
        "top1_subset": top[0],
        "last1_subset": last[0],
    }
