"""``ndwi``: a water index on Sentinel-2 thresholded at a fixed value (a floor that learns nothing).

``index: ndwi`` is McFeeters (1996), ``(B3 - B8) / (B3 + B8)`` (green, NIR); ``index: mndwi`` is
Xu (2006), ``(B3 - B11) / (B3 + B11)`` (green, SWIR). Water where the index exceeds ``threshold``
(0, the value both papers give). Subsets without ``s2`` are not applicable. The index is a ratio,
so the data's reflectance scale (Sentinel-2 L1C digital numbers) does not matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from benchmark.methods import check_param, register_method
from floors.water import WaterRule

INDEX_BANDS = {"ndwi": ("B3", "B8"), "mndwi": ("B3", "B11")}  # (green, the band water absorbs)


@register_method("ndwi")
class WaterIndex(WaterRule):
    """Water where ``(green - other) / (green + other) > threshold`` on modality ``modality``.

    Args:
        index: ``ndwi`` or ``mndwi`` (:data:`INDEX_BANDS`).
        threshold: fixed, not fitted.
        modality: the Sentinel-2 modality's name.
    """

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        index: str = "ndwi",
        threshold: float = 0.0,
        modality: str = "s2",
        **facts: Any,
    ) -> None:
        check_param("index", index, index in INDEX_BANDS, f"one of {list(INDEX_BANDS)}")
        check_param("threshold", threshold, isinstance(threshold, (int, float)) and -1 < threshold < 1, "in (-1, 1)")
        self.index_name, self.threshold, self.s2 = index, float(threshold), modality
        super().__init__(modalities, num_classes, **facts)

    def required_bands(self) -> list[tuple[str, str]]:
        return [(self.s2, band) for band in INDEX_BANDS[self.index_name]]

    def fit(self, dataset: Dataset, available: torch.Tensor, seed: int) -> dict[str, float]:
        return {"threshold": self.threshold}  # nothing to fit

    def water_index(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The index ``float64[B, H, W]`` in [-1, 1] (0 where both bands are 0)."""
        green, other = (self.band(inputs, self.s2, b) for b in INDEX_BANDS[self.index_name])
        total = green + other
        return torch.where(total != 0, (green - other) / torch.where(total != 0, total, 1.0), 0.0)

    def water_score(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.water_index(inputs) - self.threshold
