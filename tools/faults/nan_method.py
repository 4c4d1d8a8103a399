"""A method whose loss turns non-finite at a chosen step: the non-finite-loss fault of ``tools.faults``.

Listed under ``method_modules: [tools.faults.nan_method]``, it registers ``nan-muss``: MuSS
plus an auxiliary loss part ``aux`` (0 on every step) that becomes NaN on training step
``nan_step``, as a diverging auxiliary objective would. Only for fault injection.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from baselines.muss import MuSS
from benchmark.methods import register_method


@register_method("nan-muss")
class NanMuSS(MuSS):
    """MuSS whose ``aux`` loss part is NaN on step ``nan_step`` (0-based count of training steps)."""

    def __init__(self, *args, nan_step: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nan_step = nan_step
        self.steps_done = 0

    def training_step(
        self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        output = self(inputs, available)
        ce, parts = self.loss(output, target, available)
        aux = output["logits"].mean() * 0.0
        if self.steps_done == self.nan_step:
            aux = aux + float("nan")
        self.steps_done += 1
        return ce + aux, {**parts, "aux": float(aux.detach())}
