"""Random rescaling of training batches (``train.scale_range``): mmsegmentation's ``RandomResize``
with a ratio range followed by ``RandomCrop`` to the tile size, the SegFormer recipe's geometric
augmentation, done on the device.

Each sample is resized by a factor drawn uniformly from ``[low, high]`` (images bilinearly, labels
by nearest neighbour), then cut back to the tile's size: a random window of an enlarged sample, or
a smaller sample placed at a random position on a canvas of zeros (the standardised mean) with
``ignore_index`` labels around it. Unlike mmsegmentation's crop, no window is redrawn when one class
fills most of it. All draws are made for the global batch from one generator, so under DDP each
process's rows get what a one-process run gives them (as :func:`benchmark.train.random_flips`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


def draw_rescale(
    batch_size: int, scale_range: Sequence[float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(factors float[B], positions float[B, 2])``: a factor uniform in ``scale_range`` per sample,
    and where its window (or its placement) lies, as fractions of the free room in rows and columns."""
    low, high = scale_range
    factors = low + (high - low) * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return factors, torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)


def rescale_crop(x: torch.Tensor, factor: float, position: Sequence[float], fill: float, nearest: bool) -> torch.Tensor:
    """One sample ``x`` ([C, H, W] image or [H, W] label) resized by ``factor`` (``round(H * factor)`` x
    ``round(W * factor)`` px; ``nearest`` for labels, else bilinear), then cut or padded with ``fill``
    back to H x W, the window's top-left at ``floor(position * (room + 1))`` per axis."""
    label = x.dim() == 2
    height, width = x.shape[-2:]
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    batch = (x[None, None] if label else x[None]).float()
    resized = F.interpolate(batch, size=size, mode="nearest" if nearest else "bilinear", align_corners=None)[0]
    out = torch.full((resized.shape[0], height, width), fill, dtype=resized.dtype, device=x.device)
    (top, src_top, rows), (left, src_left, cols) = (
        _window(extent, new, fraction) for extent, new, fraction in zip((height, width), size, position)
    )
    out[:, top : top + rows, left : left + cols] = resized[:, src_top : src_top + rows, src_left : src_left + cols]
    return (out[0] if label else out).to(x.dtype)


def _window(extent: int, new: int, fraction: float) -> tuple[int, int, int]:
    """``(offset in the output, offset in the resized sample, length)`` along one axis of ``extent`` px
    when the resized sample has ``new`` px: a crop when it is larger, a placement when smaller."""
    start = int(fraction * (abs(new - extent) + 1))
    return (0, start, extent) if new >= extent else (start, 0, new)


def random_rescale(
    inputs: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    generator: torch.Generator,
    scale_range: Sequence[float],
    ignore_index: int,
    *,
    batch_size: int | None = None,
    rows: slice | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The batch (``{modality: float[B, C, H, W]}``, ``int64[B, H, W]``, standardised) with each sample
    rescaled and cut back to H x W (:func:`rescale_crop`; images padded with 0, labels with
    ``ignore_index``). Under DDP the tensors hold ``rows`` of a global batch of ``batch_size``."""
    factors, positions = draw_rescale(batch_size or target.shape[0], scale_range, generator)
    if rows is not None:
        factors, positions = factors[rows], positions[rows]
    pairs = list(zip(factors.tolist(), positions.tolist()))

    def each(x: torch.Tensor, fill: float, nearest: bool) -> torch.Tensor:
        return torch.stack([rescale_crop(x[i], f, p, fill, nearest) for i, (f, p) in enumerate(pairs)])

    return {m: each(x, 0.0, False) for m, x in inputs.items()}, each(target, float(ignore_index), True)
