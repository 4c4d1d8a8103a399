"""SegFormer-style all-MLP decoder (Xie et al., NeurIPS 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AllMLPDecoder(nn.Module):
    """Project each scale to ``embed_dim`` (1x1 conv), upsample to stride 4, concatenate,
    fuse (1x1 conv + GroupNorm + ReLU), classify (1x1 conv), upsample bilinearly to the input.

    ``forward(features, size)``: 4 tensors ``float[B, C_i, h_i, w_i]`` -> logits ``float[B, K, *size]``.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 64) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        groups = 8 if embed_dim % 8 == 0 else 1
        self.fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(in_channels), embed_dim, 1, bias=False),
            nn.GroupNorm(groups, embed_dim),
            nn.ReLU(inplace=True),
        )
        self.classify = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        target = features[0].shape[-2:]
        projected = [
            F.interpolate(proj(f), size=target, mode="bilinear", align_corners=False) if i else proj(f)
            for i, (proj, f) in enumerate(zip(self.project, features))
        ]
        logits = self.classify(self.fuse(torch.cat(projected, dim=1)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
