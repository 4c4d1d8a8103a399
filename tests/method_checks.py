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
    warm_up: bool = True,
) -> list[str]:
    """Names of the trainable parameters that one ``training_step`` per availability mask
    (``bool[B, M]``; default: every modality available) leaves without a non-zero gradient.

    With ``warm_up``, one plain SGD step (every modality available) comes first: a zero-initialised
    output projection (SGMA's ``zero_init``, as in ReZero or GPT-2) blocks the gradient of
    everything upstream at initialisation only, and a parameter that never trains still gets none.
    Parameters with ``requires_grad=False`` or in the method's ``training_only_modules`` (an
    EMA teacher) are declared frozen and skipped; a method whose parameters all train returns ``[]``.
    """
    first = next(iter(inputs.values()))
    if availabilities is None:
        availabilities = [torch.ones(first.shape[0], len(inputs), dtype=torch.bool)]
    target = torch.randint(
        0, num_classes, (first.shape[0], *first.shape[-2:]), generator=torch.Generator().manual_seed(0)
    )
    if warm_up:
        every = torch.ones(first.shape[0], len(inputs), dtype=torch.bool)
        trainable = [p for n, p in method.named_parameters() if p.requires_grad and not is_training_only(method, n)]
        optimiser = torch.optim.SGD(trainable, lr=0.1)
        optimiser.zero_grad(set_to_none=True)
        method.training_step(inputs, target, every)[0].backward()
        optimiser.step()
    method.zero_grad(set_to_none=True)
    for available in availabilities:
        total, _ = method.training_step(inputs, target, available)
        total.backward()
    return [
        n
        for n, p in method.named_parameters()
        if p.requires_grad and not is_training_only(method, n) and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
