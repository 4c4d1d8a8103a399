"""``sar-otsu``: water where Sentinel-1 VH backscatter is below an Otsu threshold (a floor with one
fitted number).

Open water reflects the radar pulse away from the sensor and is dark in VH (and VV). The threshold
is Otsu's (1979) on a ``bins``-bin histogram of the band's values (dB) over every labelled pixel of
the training tiles on which the protocol makes ``s1`` available: the training split only, never the
test split. Subsets without ``s1`` are not applicable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.methods import check_param, register_method
from floors.water import WaterRule


def otsu_threshold(counts: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold of a histogram (``counts`` int[B], ``edges`` float[B + 1]): the bin centre
    maximising the between-class variance of "at or below" against "above" (as scikit-image's
    ``threshold_otsu`` on the same histogram)."""
    counts = np.asarray(counts, np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    above = np.cumsum(counts[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_below = np.cumsum(counts * centres) / below
        mean_above = (np.cumsum((counts * centres)[::-1]) / above[::-1])[::-1]
    between = below[:-1] * above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    return float(centres[int(np.nanargmax(between))])


@register_method("sar-otsu")
class SarOtsu(WaterRule):
    """Water where band ``band`` of modality ``modality`` is below its Otsu threshold.

    Args:
        band: ``VH`` (the default) or ``VV``.
        bins: histogram bins between the training values' minimum and maximum.
        modality: the Sentinel-1 modality's name.
    """

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        band: str = "VH",
        bins: int = 256,
        modality: str = "s1",
        **facts: Any,
    ) -> None:
        check_param("bins", bins, isinstance(bins, int) and not isinstance(bins, bool) and bins >= 2, "an int >= 2")
        self.band_name, self.bins, self.s1 = band, bins, modality
        super().__init__(modalities, num_classes, **facts)

    def required_bands(self) -> list[tuple[str, str]]:
        return [(self.s1, self.band_name)]

    def training_values(self, dataset: Dataset, available: torch.Tensor) -> list[np.ndarray]:
        """The band's values (dB) of every labelled pixel of the training tiles with ``s1`` available."""
        column = self.modalities.index(self.s1)
        values = []
        for tile in available[:, column].nonzero().flatten().tolist():
            inputs, target = dataset[tile]
            band = self.band({self.s1: inputs[self.s1][None]}, self.s1, self.band_name)[0]
            values.append(band[target != self.ignore_index].numpy())
        if not values or not sum(len(v) for v in values):
            raise ValueError(f"sar-otsu: no labelled training pixel with {self.s1} available")
        return values

    def fit(self, dataset: Dataset, available: torch.Tensor, seed: int) -> dict[str, float]:
        values = self.training_values(dataset, available)
        low, high = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
        edges = np.linspace(low, high, self.bins + 1)
        counts = sum(np.histogram(v, bins=edges)[0] for v in values)
        threshold = otsu_threshold(counts, edges)
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float64))
        return {"threshold": threshold}

    def water_score(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.fitted("threshold") - self.band(inputs, self.s1, self.band_name)
