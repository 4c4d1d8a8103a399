"""Checks every method's tests share."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from benchmark.methods import is_training_only


def parameters_without_gradient(
    method: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    num_classes: int,
    availabilities: Sequence[torch.Tensor] | None = None,
) -> list[str]:
    """Names of the trainable parameters that one ``training_step`` per availability mask
    (``bool[B, M]``; default: every modality available) leaves without a non-zero gradient.

    Parameters with ``requires_grad=False`` or in the method's ``training_only_modules`` (an
    EMA teacher) are declared frozen and skipped; a method whose parameters all train returns ``[]``.
    """
    first = next(iter(inputs.values()))
    if availabilities is None:
        availabilities = [torch.ones(first.shape[0], len(inputs), dtype=torch.bool)]
    target = torch.randint(
        0, num_classes, (first.shape[0], *first.shape[-2:]), generator=torch.Generator().manual_seed(0)
    )
    method.zero_grad(set_to_none=True)
    for available in availabilities:
        total, _ = method.training_step(inputs, target, available)
        total.backward()
    return [
        n
        for n, p in method.named_parameters()
        if p.requires_grad and not is_training_only(method, n) and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
