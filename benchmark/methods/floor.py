"""Floors: reference models fitted in one call, not by gradient steps (family ``floor``).

A floor follows the method contract of :mod:`benchmark.methods.base` with ``trained_by = "fit"``: the
trainer calls :meth:`FloorMethod.fit` once on the training split and saves what it fitted, which a
floor keeps as buffers of its ``state_dict`` (tensors only, so ``model.pt`` loads with
``weights_only=True``). Evaluation is the same path as every method's: ``predict`` returns logits,
scored by the same confusion-matrix code. See docs/floors.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from benchmark.protocol import subset_name

#: A fitted floor's log-probabilities are clamped here, so that a class it never predicts stays finite.
LOG_FLOOR = -30.0


class FloorMethod(nn.Module):
    """Base class of the floors: ``fit`` once, then ``predict`` per subset.

    Args:
        modalities: ``{name: channels}`` in the data set's order.
        num_classes: ``K``.
        ignore_index: target value of unlabelled pixels (left out of every fit).
        backbone, pretrained, decoder_dim: the shared recipe's architecture, accepted and unused (the
            recipe's ``class_weights`` are not passed: a floor has no cross-entropy).
    """

    family = "floor"
    trained_by = "fit"
    shares_encoder = False  # predicts per subset; no per-modality features to share
    training_only_modules: tuple[str, ...] = ()
    parameter_groups: dict[str, tuple[str, ...]] = {}
    dataset_facts: tuple[str, ...] = ()
    counts_flops = False  # computed in numpy / scikit-learn

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        ignore_index: int = 255,
        backbone: str | None = None,
        pretrained: bool = False,
        decoder_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.channels = dict(modalities)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def supports(self, subset: Sequence[str]) -> bool:
        return True

    def sampling_probabilities(self, output: Mapping, available: torch.Tensor) -> torch.Tensor | None:
        return None

    def fit(self, dataset: Dataset, available: torch.Tensor, seed: int) -> dict[str, float]:
        """Fit on the training split (``dataset[i] -> ({modality: float[C_m, H, W]}, int64[H, W])``,
        ``available: bool[N, M]`` per tile) and keep the result in buffers; returns named figures for
        the record (e.g. a threshold)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement fit()")

    def class_scores(self, inputs: Mapping[str, torch.Tensor], subset: Sequence[str]) -> torch.Tensor:
        """Scores ``float[B, K, H, W]`` (logits or log-probabilities) from the modalities ``subset`` of
        ``inputs`` (``{modality: float[B, C_m, H, W]}``); ``subset`` is one the floor supports."""
        raise NotImplementedError(f"{type(self).__name__} does not implement class_scores()")

    def fitted(self, key: str) -> torch.Tensor:
        """The fitted buffer ``key``; a ``RuntimeError`` when ``fit`` (or loading a model) has not set it."""
        value = self._buffers.get(key)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}: not fitted ({key!r} missing): call fit() or load a model.pt")
        return value

    def forward(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.predict(inputs, available)

    @torch.no_grad()
    def predict(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits": float[B, K, H, W]}``: each sample from the modalities its row of ``available``
        marks; a sample whose subset the floor does not support (or an empty one) is a
        ``ValueError`` naming the subset."""
        first = next(iter(inputs.values()))
        batch, height, width = first.shape[0], first.shape[-2], first.shape[-1]
        logits = torch.zeros(batch, self.num_classes, height, width, device=first.device)
        rows_of: dict[tuple[bool, ...], list[int]] = {}
        for b, row in enumerate(available.bool().tolist()):
            rows_of.setdefault(tuple(row), []).append(b)
        for row, rows in rows_of.items():
            subset = [m for m, on in zip(self.modalities, row) if on]
            if not subset or not self.supports(subset):
                raise ValueError(f"{type(self).__name__} cannot predict from subset {subset_name(subset) or '(empty)'}")
            index = torch.tensor(rows, device=first.device)
            part = {m: inputs[m].index_select(0, index) for m in subset}
            logits[index] = self.class_scores(part, subset).to(logits.dtype)
        return {"logits": logits}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """A fitted state's buffers have the shapes its fit gave them: make room, then load."""
        for key, value in state_dict.items():
            if "." not in key and isinstance(value, torch.Tensor):
                self.register_buffer(key, torch.empty_like(value))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
