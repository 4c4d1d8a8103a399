"""Shared, weight-tied encoder run on each available modality separately."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from benchmark.models.backbones import create_backbone


class ModalityStem(nn.Module):
    """Maps one modality's ``C_m`` channels to the backbone's input channels (3x3 conv, same size)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MultiModalEncoder(nn.Module):
    """Per-modality stems + one shared backbone.

    ``forward(inputs, available)`` returns 4 tensors ``float[B, M, C_i, H/s_i, W/s_i]``
    (``s_i`` = 4, 8, 16, 32; ``M`` in ``modalities`` order). Only the (sample, modality) pairs
    marked available are encoded (one backbone call on all of them); the features of a
    missing pair are exactly zero and its input is never read, so garbage in a missing
    input cannot leak into any output.
    """

    def __init__(self, in_channels: Mapping[str, int], backbone: str = "tiny", pretrained: bool = False) -> None:
        super().__init__()
        self.modalities = list(in_channels)
        self.backbone = create_backbone(backbone, pretrained=pretrained)
        self.stems = nn.ModuleDict({m: ModalityStem(c, self.backbone.in_channels) for m, c in in_channels.items()})
        self.channels: list[int] = list(self.backbone.channels)

    def forward(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> list[torch.Tensor]:
        num_modalities = len(self.modalities)
        batch = available.shape[0]
        stems, rows = [], []
        for m, name in enumerate(self.modalities):
            idx = available[:, m].nonzero(as_tuple=True)[0]
            if idx.numel():
                stems.append(self.stems[name](inputs[name][idx]))
                rows.append(idx * num_modalities + m)
        features = self.backbone(torch.cat(stems))
        rows_t = torch.cat(rows).to(features[0].device)
        out = []
        for f in features:
            full = f.new_zeros(batch * num_modalities, *f.shape[1:])
            full = full.index_copy(0, rows_t, f)
            out.append(full.view(batch, num_modalities, *f.shape[1:]))
        return out
