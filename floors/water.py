"""What the water rules share (``ndwi``, ``sar-otsu``): a band's physical values, and a water score
turned into logits. A rule reads its bands by name, so it runs on any data set whose source declares
them (``DatasetSource.bands``) and has a ``water`` class, and is refused on any other before any compute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from benchmark.methods.floor import FloorMethod


class WaterRule(FloorMethod):
    """A fixed or one-threshold rule scoring water per pixel: water where :meth:`water_score` > 0.

    Args (data set facts, passed by the trainer): ``dataset`` (its name), ``classes``, ``bands``
    (``{modality: band names}``) and ``normalisation`` (meta.json's ``{modality: {mean, std}}``, to
    undo the prepared standardisation).
    """

    dataset_facts = ("dataset", "classes", "bands", "normalisation")

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        dataset: str,
        classes: Sequence[str],
        bands: Mapping[str, Sequence[str]],
        normalisation: Mapping[str, Mapping[str, Sequence[float]]],
        **common: Any,
    ) -> None:
        super().__init__(modalities, num_classes, **common)
        self.index: dict[tuple[str, str], int] = {}
        for modality, band in self.required_bands():
            names = list(bands.get(modality, ())) if modality in self.modalities else []
            if band not in names:
                has = {m: list(bands.get(m, ())) for m in self.modalities}
                raise ValueError(
                    f"cannot run on data set {dataset!r}: it has no band {band!r} of modality {modality!r} "
                    f"(its modalities and bands: {has})"
                )
            self.index[modality, band] = names.index(band)
        if "water" not in classes:
            raise ValueError(f"cannot run on data set {dataset!r}: it has no class 'water' (classes: {list(classes)})")
        self.water = list(classes).index("water")
        self.normalisation = {m: dict(normalisation[m]) for m, _ in self.index}

    def required_bands(self) -> list[tuple[str, str]]:
        """The ``(modality, band)`` pairs the rule reads."""
        raise NotImplementedError

    def supports(self, subset: Sequence[str]) -> bool:
        return all(m in subset for m, _ in self.required_bands())

    def band(self, inputs: Mapping[str, torch.Tensor], modality: str, band: str) -> torch.Tensor:
        """The band's values in the data set's own units, ``float64[B, H, W]`` (standardisation undone;
        a nodata pixel, prepared as 0, comes back as the band's mean)."""
        i = self.index[modality, band]
        norm = self.normalisation[modality]
        return inputs[modality][:, i].double() * float(norm["std"][i]) + float(norm["mean"][i])

    def water_score(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``float64[B, H, W]``: positive where the rule says water."""
        raise NotImplementedError

    def class_scores(self, inputs: Mapping[str, torch.Tensor], subset: Sequence[str]) -> torch.Tensor:
        """Logits: the water score for ``water``, 0 for every other class (argmax: water iff score > 0,
        ties to the first class)."""
        score = self.water_score(inputs).float()
        logits = torch.zeros(score.shape[0], self.num_classes, *score.shape[1:], device=score.device)
        logits[:, self.water] = score
        return logits
