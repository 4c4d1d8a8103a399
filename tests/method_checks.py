"""Checks every method's tests share."""

from __future__ import annotations

import torch


def parameters_without_gradient(
    method: torch.nn.Module, inputs: dict[str, torch.Tensor], num_classes: int
) -> list[str]:
    """Names of the parameters one ``training_step`` (every modality available) leaves without a
    non-zero gradient; a method whose parameters all train returns ``[]``."""
    first = next(iter(inputs.values()))
    available = torch.ones(first.shape[0], len(inputs), dtype=torch.bool)
    target = torch.randint(0, num_classes, (first.shape[0], *first.shape[-2:]))
    total, _ = method.training_step(inputs, target, available)
    total.backward()
    return [n for n, p in method.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
