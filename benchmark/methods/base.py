"""The method contract every registered method follows (mmsegmentation-style split).

A method is an ``nn.Module`` built as ``Method(modalities, num_classes, **common, **own)``:

- ``encode(inputs, available) -> list[Tensor]``: per-modality features, each ``float[B, M, ...]``
  (the default: the shared encoder's 4 scales ``float[B, M, C_i, h_i, w_i]``, a missing pair
  exactly 0). Entry ``[b, m]`` may depend only on modality ``m`` of sample ``b``, and ``decode``
  must not depend on the (finite) entries of a pair outside ``available``.
- ``decode(features, available, size) -> dict``: fusion + decoder on ``encode``'s output for
  the modalities marked in ``available`` (``size = (H, W)``), at least ``"logits": float[B, K, H, W]``
  plus whatever the losses need.
- ``forward(inputs, available) -> dict``: ``decode(encode(...))`` by default. ``inputs`` is
  ``{modality: float[B, C_m, H, W]}`` with missing modalities already zeroed; ``available`` is
  ``bool[B, M]`` and must be honoured.
- ``loss(output, target, available) -> (total, parts)``: a scalar tensor and a dict of named
  float parts for the log. ``target`` is ``int64[B, H, W]`` with ``ignore_index``.
- ``training_step(inputs, target, available) -> (total, parts)``: one step's loss; the default
  is ``loss(forward(...))``. Methods needing extra passes (MAS branch, teachers) override it.
- ``after_optimizer_step()``: called after every optimiser step (EMA teachers update here).
- ``training_only_modules``: names of sub-modules that exist only to train (an EMA teacher).
  Their parameters must have ``requires_grad=False`` (the optimiser skips them and the
  gradient checks expect no gradient) and are left out of the inference parameter count.
- ``predict(inputs, available) -> dict``: inference, no gradients; ``"logits"`` as in
  ``forward`` and, optionally, ``"robustness"``: a list (one per scale) of
  ``float[B, M, h_i, w_i]`` per-modality weights, which the evaluator averages and exports.
- optional, for ``python -m benchmark.diagnose``: ``parameter_groups`` (component label -> fnmatch
  patterns of parameter names) and ``sampling_probabilities(output, available)``: the
  distribution ``float[B, M]`` a method samples modalities from during training (SGMA's MAS).
- ``shares_encoder``: True (the default) when the above holds for ``encode``, so that
  ``predict_features(encode(inputs, every), subset, size)`` equals ``predict(inputs, subset)``:
  the evaluator then encodes each modality once per batch and runs only ``decode`` per subset
  (docs/protocol.md). A method whose features mix modalities before fusion (early fusion,
  cross-modal layers inside the encoder) sets it to False, says why in its docstring, and may
  override ``forward`` alone; it is then evaluated by one ``predict`` per subset.

- ``trained_by``: ``"gradient"`` (the default: the trainer's optimiser loop calls ``training_step``) or
  ``"fit"``: a model fitted in one call, not by gradient steps (a scikit-learn classifier, a
  threshold rule; :class:`benchmark.methods.floor.FloorMethod`). The trainer then calls
  ``fit(dataset, available, seed) -> {name: float}`` once on the training split (``dataset[i] ->
  (inputs, target)``, ``available: bool[N, M]`` drawn by the run's protocol for every tile) and saves
  the fitted state, which such a method keeps in buffers of its ``state_dict``; no optimiser, steps
  or checkpoints.
- ``supports(subset) -> bool``: whether the method can predict from the modalities ``subset`` (default
  every subset); a subset it cannot use is scored as not applicable, never as zero.
- ``dataset_facts``: extra constructor arguments taken from the data set (``"dataset"``, ``"classes"``,
  ``"bands"``: ``{modality: band names}``, ``"normalisation"``: meta.json's ``{modality: {mean, std}}``).
- ``counts_flops``: False for a method whose inference runs outside torch (torch's FLOP counter would
  report 0): its parameters and GFLOPs are then recorded as not measured (null).

The trainer and evaluator only call these; they never branch on a method's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models import AllMLPDecoder, MultiModalEncoder


class SegmentationMethod(nn.Module):
    """Base class: shared per-modality encoder + (method-specific fusion) + all-MLP decoder.

    Args:
        modalities: ``{name: channels}`` in the data set's order.
        num_classes: ``K``.
        backbone: ``"tiny"`` or a timm model name.
        pretrained: load ImageNet weights for a timm backbone.
        decoder_dim: embedding width of the all-MLP decoder.
        ignore_index: target value excluded from the losses.
        class_weight: ``K`` weights of the supervised cross-entropy (the recipe's ``train.class_weights``,
            computed by the trainer from the training labels); None: unweighted.
    """

    #: ``"reference"``, ``"contrastive"``, ``"joint"`` or ``"sgma"``: a leaderboard column.
    family: str = "reference"

    #: Sub-modules used only during training and updated without gradients (e.g. ``("teacher",)``).
    training_only_modules: tuple[str, ...] = ()

    #: Whether ``encode`` is per-modality, so subsets can share one ``encode`` (see the module docstring).
    shares_encoder: bool = True

    #: Named components for ``python -m benchmark.diagnose``: label -> fnmatch patterns of parameter
    #: names (first match wins); empty: one component per top-level sub-module.
    parameter_groups: dict[str, tuple[str, ...]] = {}

    #: ``"gradient"``: trained by the optimiser loop (see the module docstring for ``"fit"``).
    trained_by: str = "gradient"

    #: Constructor arguments taken from the data set besides ``modalities`` and ``num_classes``.
    dataset_facts: tuple[str, ...] = ()

    #: Whether torch's FLOP counter sees the inference (False: computed outside torch).
    counts_flops: bool = True

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        backbone: str = "tiny",
        pretrained: bool = False,
        decoder_dim: int = 64,
        ignore_index: int = 255,
        class_weight: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        if class_weight is not None:
            check_param("class_weight", class_weight, len(class_weight) == num_classes and min(class_weight) >= 0,
                        f"{num_classes} weights >= 0")  # fmt: skip
            weight = torch.tensor([float(w) for w in class_weight], dtype=torch.float32)
            self.register_buffer("class_weight", weight, persistent=False)  # from the init arguments, not the state
        else:
            self.class_weight = None
        self.encoder = MultiModalEncoder(modalities, backbone=backbone, pretrained=pretrained)
        self.decoder = AllMLPDecoder(self.encoder.channels, num_classes, embed_dim=decoder_dim)

    def encode(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> list[torch.Tensor]:
        """Per-modality features ``[float[B, M, ...]]``: the shared encoder's 4 scales by default."""
        return self.encoder(inputs, available)

    def decode(
        self, features: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Fusion + decoder on ``encode``'s output for the modalities in ``available`` -> ``{"logits", ...}``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement decode() (benchmark/methods/base.py, docs/adding_a_method.md)"
        )

    def forward(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(inputs, available), available, input_size(inputs))

    def loss(
        self, output: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Default: pixel-wise cross-entropy on ``output["logits"]``."""
        ce = self.cross_entropy(output["logits"], target)
        return ce, {"ce": float(ce.detach())}

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """CE over non-ignored pixels, weighted by ``class_weight`` when set (PyTorch's weighted mean:
        divided by the sum of the pixels' weights); 0 (with a graph) if every pixel is ignored."""
        if bool((target == self.ignore_index).all()):
            return logits.sum() * 0.0
        weight = None if self.class_weight is None else self.class_weight.to(logits.dtype)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)

    def training_step(
        self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(self(inputs, available), target, available)

    def after_optimizer_step(self) -> None:
        """Hook called after each optimiser step; nothing by default."""

    def supports(self, subset: Sequence[str]) -> bool:
        """Whether the method can predict from the modalities ``subset``: every subset by default."""
        return True

    def sampling_probabilities(self, output: Mapping, available: torch.Tensor) -> torch.Tensor | None:
        """A method that samples modalities from its own outputs (SGMA's MAS) returns its distribution
        ``float[B, M]`` for ``output = forward(..., available)``; None (the default) otherwise."""
        return None

    @torch.no_grad()
    def predict(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference outputs: ``{"logits": float[B, K, H, W], ...}`` (the forward dict by default)."""
        return self(inputs, available)

    @torch.no_grad()
    def predict_features(
        self, features: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """``predict`` from ``encode`` features of a superset of ``available`` (``shares_encoder`` methods).
        The pairs outside ``available`` are passed as they are: ``decode`` must not depend on them."""
        return self.decode(features, available, size)


def input_size(inputs: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(H, W)`` of a batch ``{modality: float[B, C_m, H, W]}``."""
    height, width = next(iter(inputs.values())).shape[-2:]
    return int(height), int(width)


def restrict_features(features: Sequence[torch.Tensor], available: torch.Tensor) -> list[torch.Tensor]:
    """Per-modality features ``[float[B, M, ...]]`` with every pair outside ``available: bool[B, M]`` set to 0."""
    restricted = []
    for f in features:
        mask = available.view(*available.shape, *([1] * (f.dim() - 2)))
        restricted.append(torch.where(mask, f, torch.zeros((), dtype=f.dtype, device=f.device)))
    return restricted


def replace_modality(features: Sequence[torch.Tensor], other: Sequence[torch.Tensor], index: int) -> list[torch.Tensor]:
    """``features`` with modality ``index`` (axis 1) taken from ``other``, both ``[float[B, M, ...]]``."""
    return [
        torch.cat([f[:, :index], o[:, index : index + 1], f[:, index + 1 :]], dim=1) for f, o in zip(features, other)
    ]


def check_param(name: str, value: object, ok: bool, allowed: str) -> None:
    """Raise ``ValueError`` naming a method parameter, its value and what is allowed, unless ``ok``
    (``create_method`` adds the method's name)."""
    if not ok:
        raise ValueError(f"parameter {name}={value!r} must be {allowed}")


def is_training_only(method: nn.Module, parameter_name: str) -> bool:
    """Whether ``parameter_name`` (as in ``named_parameters()``) lies in one of the method's
    ``training_only_modules``."""
    return any(parameter_name.startswith(f"{name}.") for name in getattr(method, "training_only_modules", ()))


def masked_mean(features: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Mean over available modalities: ``float[B, M, C, h, w]``, ``bool[B, M]`` -> ``float[B, C, h, w]``."""
    weights = available.to(features.dtype).view(*available.shape, 1, 1, 1)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
