"""Corrupted-input scenarios run at evaluation (params.yaml ``scenarios``; docs/scenarios.md).

Besides every missing subset, each model is evaluated with every modality available and ONE
modality corrupted, for each kind and level of :class:`~benchmark.config.ScenarioConfig`. The
inputs are the standardised tensors of the prepared format (``x = (raw - mean) / std`` per
channel, nodata = 0), so 0 is the channel's training mean. For a tile ``float[C, H, W]`` of the
corrupted modality and level ``r`` / ``s`` / ``v``:

- ``block_missing``: the tile is split into ``ceil(H / bs) x ceil(W / bs)`` square blocks of
  ``bs = block_size`` px (the last row / column of blocks may be cut by the border);
  ``n = round_half_up(r * n_blocks)`` blocks, the first ``n`` of a random permutation, are set to 0
  in every channel (the training mean: what a missing modality and nodata also are).
- ``pixel_missing``: ``round_half_up(r * H * W)`` pixels, the first of a random permutation of the
  ``H * W`` pixels, are set to 0 in every channel.
- ``gaussian``: ``x + s * z``, ``z ~ N(0, 1)`` independent per channel and pixel (``s`` is in
  channel standard deviations).
- ``salt_pepper``: the pixels with ``u < r`` (``u ~ U[0, 1)`` per pixel) are set, in every channel,
  to the tile's channel maximum (salt, when a second uniform ``w < 1/2``) or minimum (pepper).
- ``speckle`` (SAR-like modalities only): ``G ~ Gamma(shape = 1/v, scale = v)`` per pixel (mean 1,
  variance ``v = 1 / looks``; the same ``G`` in every channel of the pixel, as in a single
  intensity image, floored at the smallest positive float). In linear units the raw value is
  multiplied: ``raw * G``; in dB it is shifted: ``raw + 10 log10 G``; the result is standardised
  again with the same mean and std. Applied to every pixel, nodata (0) included: the standardised
  input does not say which pixels were nodata.

Randomness: every tile gets its own generator ``numpy.random.default_rng([seed, kind_id,
modality_id, tile_index])`` (``kind_id``: position in ``SCENARIO_KINDS``, ``modality_id``:
position in the data set's modalities, ``tile_index``: the tile's index in the split), so a
corrupted tile does not depend on the batch size, the batch order, the method or the run. The
level is not part of the seed: every level uses the same draws, so masks are nested (a larger
fraction zeroes a superset of the pixels), the gaussian field is the same ``z`` scaled by ``s``,
and salt and pepper hit a superset of the pixels with the same values. Speckle draws each level's
Gamma field from the same generator state, but the fields of two levels are not scaled copies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.config import SCENARIO_KINDS, FieldError, ScenarioConfig

SAR_UNITS = ("db", "linear")


@dataclass(frozen=True)
class Corruption:
    """One scenario case: corrupt ``modality`` (position ``modality_index`` in the data set's
    modalities, part of the seed) with ``kind`` at ``level``."""

    kind: str
    level: float
    modality: str
    modality_index: int

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"unknown scenario kind {self.kind!r}; allowed: {list(SCENARIO_KINDS)}")

    @property
    def name(self) -> str:
        """``"gaussian:rgb@0.5"``."""
        return f"{self.kind}:{self.modality}@{float(self.level)!r}"


def scenario_cases(
    config: ScenarioConfig, modalities: Sequence[str], sar_modalities: Mapping[str, str], dataset: str = "the data"
) -> list[Corruption]:
    """Every case of ``config`` for a data set with ``modalities`` (in its order): by kind (in
    ``SCENARIO_KINDS`` order), then modality (data set order), then level (config order).

    ``speckle`` applies only to the SAR-like modalities (``sar_modalities``: ``{name: "db" |
    "linear"}``, entries for absent modalities are ignored); ``config.modalities`` restricts the
    corrupted modalities: a name that is not one of ``modalities`` is a :class:`FieldError` (a
    ValueError) naming it, ``dataset`` and its modalities.
    """
    modalities = list(modalities)
    for i, name in enumerate(config.modalities or []):
        if name not in modalities:
            allowed = f"a modality of every listed data set: {dataset} has {modalities}"
            raise FieldError("scenarios", f"modalities[{i}]", name, allowed)
    bad_units = {m: u for m, u in sar_modalities.items() if u not in SAR_UNITS}
    if bad_units:
        raise ValueError(f"SAR modality units {bad_units}: allowed units are {list(SAR_UNITS)}")
    chosen = [m for m in modalities if config.modalities is None or m in config.modalities]
    cases = []
    for kind in SCENARIO_KINDS:
        for m in chosen:
            if kind == "speckle" and m not in sar_modalities:
                continue
            cases.extend(Corruption(kind, float(level), m, modalities.index(m)) for level in getattr(config, kind))
    return cases


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _tile_rng(seed: int, case: Corruption, tile_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SCENARIO_KINDS.index(case.kind), case.modality_index, tile_index])


def _corrupt_tile(
    tile: np.ndarray,
    case: Corruption,
    rng: np.random.Generator,
    block_size: int,
    norm: tuple[np.ndarray, np.ndarray] | None,
    sar_units: str | None,
) -> np.ndarray:
    """Corrupted copy of one standardised tile ``float32[C, H, W]`` (computed in float64)."""
    channels, height, width = tile.shape
    x = tile.astype(np.float64)
    level = case.level
    if case.kind == "block_missing":
        rows, cols = math.ceil(height / block_size), math.ceil(width / block_size)
        chosen = rng.permutation(rows * cols)[: _round_half_up(level * rows * cols)]
        blocks = np.zeros(rows * cols, dtype=bool)
        blocks[chosen] = True
        mask = np.repeat(np.repeat(blocks.reshape(rows, cols), block_size, 0), block_size, 1)[:height, :width]
        x[:, mask] = 0.0
    elif case.kind == "pixel_missing":
        chosen = rng.permutation(height * width)[: _round_half_up(level * height * width)]
        mask = np.zeros(height * width, dtype=bool)
        mask[chosen] = True
        x[:, mask.reshape(height, width)] = 0.0
    elif case.kind == "gaussian":
        x = x + level * rng.standard_normal((channels, height, width))
    elif case.kind == "salt_pepper":
        hit = rng.random((height, width)) < level
        salt = rng.random((height, width)) < 0.5
        high, low = x.max(axis=(1, 2)), x.min(axis=(1, 2))
        x = np.where(hit, np.where(salt, high[:, None, None], low[:, None, None]), x)
    elif case.kind == "speckle":
        if norm is None or sar_units not in SAR_UNITS:
            raise ValueError(f"{case.name}: speckle needs the modality's normalisation and units in {list(SAR_UNITS)}")
        mean, std = (v[:, None, None] for v in norm)
        gain = np.maximum(rng.gamma(1.0 / level, level, (height, width)), np.finfo(np.float64).tiny)
        if sar_units == "db":
            x = x + 10.0 * np.log10(gain) / std
        else:
            x = ((x * std + mean) * gain - mean) / std
    else:  # pragma: no cover - Corruption checks the kind
        raise AssertionError(case.kind)
    return x.astype(np.float32)


def corrupt(
    x: torch.Tensor,
    case: Corruption,
    tile_indices: Sequence[int],
    *,
    seed: int,
    block_size: int,
    norm: Mapping[str, Sequence[float]] | None = None,
    sar_units: str | None = None,
) -> torch.Tensor:
    """A corrupted copy of ``x`` (``float[B, C, H, W]``, standardised, modality ``case.modality``).

    ``tile_indices``: the split index of each batch row (seeds its draws). ``norm``: that
    modality's ``{"mean": [C], "std": [C]}`` (raw units; needed by ``speckle`` only).
    ``sar_units``: ``"db"`` or ``"linear"`` (``speckle`` only). Returns float32 on ``x``'s device.
    """
    if x.dim() != 4:
        raise ValueError(f"{case.name}: expected a batch float[B, C, H, W], got shape {tuple(x.shape)}")
    if len(tile_indices) != x.shape[0]:
        raise ValueError(f"{case.name}: {len(tile_indices)} tile indices for a batch of {x.shape[0]}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    stats = None
    if case.kind == "speckle":
        if norm is None:
            raise ValueError(f"{case.name}: speckle needs the modality's normalisation (mean, std)")
        stats = tuple(np.asarray(norm[key], dtype=np.float64) for key in ("mean", "std"))
        if any(v.shape != (x.shape[1],) for v in stats):
            raise ValueError(f"{case.name}: normalisation has {len(stats[0])} channels, the input {x.shape[1]}")
    tiles = x.detach().to("cpu", torch.float32).numpy()
    out = np.stack(
        [
            _corrupt_tile(tile, case, _tile_rng(seed, case, int(index)), block_size, stats, sar_units)
            for tile, index in zip(tiles, tile_indices)
        ]
    )
    return torch.from_numpy(out).to(x.device)
