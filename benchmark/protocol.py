"""The missing-modality protocol: one definition used by every method.

A batch is ``inputs: {modality: float[B, C_m, H, W]}``, ``target: int64[B, H, W]`` (with the
data set's ``ignore_index``) and ``available: bool[B, M]`` (column ``m`` is modality ``m`` in the
data set's modality order). A missing modality is handled in two ways at once:

1. its input is zeroed (:func:`apply_availability`), so a method that ignores the mask still
   sees no information from it, and
2. the mask is passed to the method, which must use it (never rely on the zeros alone).

Training draws one non-empty subset per sample (:func:`draw_available`); evaluation walks all
``2^M - 1`` non-empty subsets in the fixed order of :func:`enumerate_subsets`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch

SUBSET_SEPARATOR = "+"


def enumerate_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """All non-empty subsets, by size then by position in ``modalities``.

    For ``("rgb", "dsm", "nir")``: rgb, dsm, nir, rgb+dsm, rgb+nir, dsm+nir, rgb+dsm+nir.
    """
    if len(set(modalities)) != len(modalities) or not modalities:
        raise ValueError(f"modalities must be non-empty and unique, got {list(modalities)}")
    return [combo for size in range(1, len(modalities) + 1) for combo in itertools.combinations(modalities, size)]


def subset_name(subset: Sequence[str]) -> str:
    """``("rgb", "nir") -> "rgb+nir"`` (order as given; use the data set's order)."""
    return SUBSET_SEPARATOR.join(subset)


def parse_subset(name: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """``"nir+rgb" -> ("rgb", "nir")``: validate a subset name and put it in data set order."""
    parts = name.split(SUBSET_SEPARATOR)
    unknown = [p for p in parts if p not in modalities]
    if unknown or not parts or len(set(parts)) != len(parts):
        raise ValueError(f"subset {name!r}: expected distinct names from {list(modalities)}")
    return tuple(m for m in modalities if m in parts)


def subset_mask(subset: Sequence[str], modalities: Sequence[str], batch_size: int) -> torch.Tensor:
    """``bool[batch_size, M]``: the same subset for every sample."""
    row = torch.tensor([m in subset for m in modalities], dtype=torch.bool)
    return row.unsqueeze(0).expand(batch_size, -1).clone()


def draw_available(
    batch_size: int,
    num_modalities: int,
    generator: torch.Generator,
    drop_prob: Sequence[float] | None = None,
) -> torch.Tensor:
    """Draw one non-empty subset per sample -> ``bool[B, M]``.

    ``drop_prob=None``: uniform over the ``2^M - 1`` non-empty subsets.
    Otherwise modality ``m`` is dropped independently with probability ``drop_prob[m]``,
    conditioned on keeping at least one (rejection sampling: an empty draw is redrawn).
    All randomness comes from ``generator`` (seeded by the caller), never the global RNG.
    """
    if num_modalities < 1:
        raise ValueError("num_modalities must be >= 1")
    if drop_prob is None:
        codes = torch.randint(1, 2**num_modalities, (batch_size,), generator=generator)
        bits = 2 ** torch.arange(num_modalities)
        return (codes.unsqueeze(1) & bits) > 0
    probs = torch.as_tensor(list(drop_prob), dtype=torch.float64)
    if probs.shape != (num_modalities,) or bool(((probs < 0) | (probs >= 1)).any()):
        raise ValueError(f"drop_prob must hold {num_modalities} values in [0, 1), got {list(drop_prob)}")
    available = torch.rand(batch_size, num_modalities, generator=generator, dtype=torch.float64) >= probs
    empty = ~available.any(dim=1)
    while bool(empty.any()):
        redraw = torch.rand(int(empty.sum()), num_modalities, generator=generator, dtype=torch.float64)
        available[empty] = redraw >= probs
        empty = ~available.any(dim=1)
    return available


def apply_availability(
    inputs: Mapping[str, torch.Tensor], available: torch.Tensor, modalities: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Zero every missing modality's input: ``x_m[b] = 0`` where ``available[b, m]`` is False.

    Returns new tensors (the caller's batch is not modified). ``available`` is ``bool[B, M]``.
    """
    if available.dtype != torch.bool or available.shape[1] != len(modalities):
        raise ValueError(
            f"available must be bool[B, {len(modalities)}], got {available.dtype} {tuple(available.shape)}"
        )
    if not bool(available.any(dim=1).all()):
        raise ValueError("every sample needs at least one available modality")
    out = {}
    for m, name in enumerate(modalities):
        x = inputs[name]
        keep = available[:, m].to(x.device).view(-1, *([1] * (x.dim() - 1)))
        out[name] = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return out
