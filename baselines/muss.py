"""MuSS: plain multimodal fusion, trained with no strategy of its own for missing modalities.

The "no module" reference of the SGMA paper (Wen et al., arXiv 2603.02505): the shared
encoder's features of the available modalities are fused by a masked **mean** at each of the
4 scales (missing modalities are excluded from the mean, not averaged in as zeros), then the
all-MLP decoder predicts. Loss: pixel-wise cross-entropy. Robustness to missing modalities
comes only from the training protocol (docs/protocol.md): under ``complete`` it never sees a
missing modality while training; under ``uniform`` (``muss-uniform``) it is the ModDrop-style
baseline, trained on a random non-empty subset per sample.

Why mean and not concatenation: the mean is defined for any subset without padding a missing
modality's slot, so the mask (not a zero convention) decides what is fused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from benchmark.methods import SegmentationMethod, masked_mean, register_method


@register_method("muss")
class MuSS(SegmentationMethod):
    """Shared encoder -> masked mean over available modalities per scale -> decoder."""

    family = "reference"

    def decode(
        self, features: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        return {"logits": self.decoder([masked_mean(f, available) for f in features], size)}
