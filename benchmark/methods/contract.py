"""Checks the trainer and evaluator run on any method, so a broken one stops early and says why.

Every error names the method and what is wrong. :func:`check_contract` runs before the first
optimiser step (one forward + loss, no gradients, and :func:`check_shared_encoder`);
:func:`check_step_result` checks every ``training_step`` result; :func:`check_logits` checks every
prediction the evaluator scores; the evaluator runs :func:`check_shared_encoder` on its first batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from benchmark.methods.base import input_size, is_training_only
from benchmark.protocol import apply_availability

HOOKS = ("forward", "loss", "training_step", "after_optimizer_step", "predict")
RESERVED_PARTS = ("step", "loss", "lr", "images_per_s")  # the trainer's own keys in each log record


class ContractError(TypeError, ValueError):
    """A method does not follow the contract of ``benchmark.methods.base`` (a wrong type or a wrong value)."""


def check_logits(method_name: str, output: object, expected: tuple[int, ...], where: str) -> torch.Tensor:
    """``output`` must be a mapping with ``"logits": float[*expected]``; returns the logits."""
    if not isinstance(output, Mapping) or "logits" not in output:
        raise ContractError(
            f"method {method_name!r}: {where} must return a dict with 'logits', got {type(output).__name__}"
        )
    logits = output["logits"]
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise ContractError(f"method {method_name!r}: {where}['logits'] must be a float tensor, got {logits!r:.80}")
    if tuple(logits.shape) != expected:
        raise ContractError(
            f"method {method_name!r}: {where}['logits'] has shape {tuple(logits.shape)}, expected {expected} "
            "(batch, classes, height, width)"
        )
    return logits


def check_step_result(
    method_name: str, result: object, step: int, where: str = "training_step()", needs_grad: bool = True
) -> torch.Tensor:
    """``result`` must be ``(finite scalar tensor, {name: float})``; returns the total.

    The total must carry a graph when ``needs_grad``; the parts must be Python numbers (they go
    to the JSON log) under names other than :data:`RESERVED_PARTS`. A non-finite total raises
    ``FloatingPointError`` naming the step and the non-finite parts.
    """
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping)):
        raise ContractError(f"method {method_name!r}: {where} must return (total, parts dict), got {result!r:.80}")
    total, parts = result
    if not torch.is_tensor(total) or total.dim() != 0:
        raise ContractError(f"method {method_name!r}: {where} total must be a scalar tensor, got {total!r:.80}")
    for key, value in parts.items():
        if key in RESERVED_PARTS:
            raise ContractError(f"method {method_name!r}: {where} part {key!r} clashes with the log's own {key!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ContractError(
                f"method {method_name!r}: {where} part {key!r} must be a Python float, got {type(value).__name__}"
            )
    if not bool(torch.isfinite(total)):
        bad = [f"{k}={v}" for k, v in parts.items() if not math.isfinite(v)]
        which = f"non-finite parts: {', '.join(bad)}" if bad else f"parts: {dict(parts)}"
        raise FloatingPointError(
            f"method {method_name!r}: non-finite loss {float(total.detach())} at step {step} ({which})"
        )
    if needs_grad and not total.requires_grad:
        raise ContractError(f"method {method_name!r}: {where} total has no gradient graph (was it detached?)")
    return total


def check_contract(
    method_name: str,
    method: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    available: torch.Tensor,
    num_classes: int,
    step: int = 0,
) -> None:
    """One forward + loss (call under ``torch.no_grad``): stop a method that breaks the contract
    before its first optimiser step. ``target: int64[B, H, W]`` fixes the expected logits shape."""
    for hook in HOOKS:
        if not callable(getattr(method, hook, None)):
            raise ContractError(f"method {method_name!r}: missing {hook}() (subclass SegmentationMethod)")
    for name, param in method.named_parameters():
        if is_training_only(method, name) and param.requires_grad:
            raise ContractError(
                f"method {method_name!r}: parameter {name!r} is in training_only_modules but requires a gradient "
                "(call requires_grad_(False) on the module)"
            )
    expected = (target.shape[0], num_classes, *target.shape[-2:])
    output = method(inputs, available)
    check_logits(method_name, output, expected, "forward()")
    check_step_result(method_name, method.loss(output, target, available), step, "loss()", needs_grad=False)
    if getattr(method, "shares_encoder", False):
        single = torch.zeros_like(available)  # each sample's first available modality
        single[torch.arange(available.shape[0]), available.to(torch.int8).argmax(dim=1)] = True
        check_shared_encoder(method_name, method, inputs, available, [available, single])


SHARED_RTOL = 1e-3  # shared-encoder vs one-predict-per-subset logits: relative tolerance ...
SHARED_ATOL = 1e-3  # ... and absolute tolerance as a fraction of the largest |logit| (at least 1)


def check_shared_encoder(
    method_name: str,
    method: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    encoded_with: torch.Tensor,
    subsets: Sequence[torch.Tensor],
) -> None:
    """A ``shares_encoder`` method's shared path must predict what ``predict`` does (call under ``no_grad``).

    ``predict_features(encode(inputs, encoded_with), mask, size)`` is compared with
    ``predict(inputs zeroed outside mask, mask)`` for every ``mask`` in ``subsets`` (each
    ``bool[B, M]`` within ``encoded_with``), in eval mode (no dropout, no batch statistics).
    Differences of float rounding (batches of other sizes) pass; a method whose features mix
    modalities fails with an error that names it and tells how to opt out.
    """
    modalities = list(getattr(method, "modalities", inputs))
    was_training = method.training
    method.eval()
    try:
        try:
            encoded = method.encode(apply_availability(inputs, encoded_with, modalities), encoded_with)
            shared = [method.predict_features(encoded, mask, input_size(inputs)) for mask in subsets]
        except NotImplementedError as err:
            raise ContractError(
                f"method {method_name!r}: shares_encoder is True but encode()/decode() fail ({err}); implement "
                "decode() (see benchmark/methods/base.py) or set shares_encoder = False and say why"
            ) from None
        for mask, output in zip(subsets, shared):
            expected = method.predict(apply_availability(inputs, mask, modalities), mask)
            naive = check_logits(method_name, expected, tuple(expected["logits"].shape), "predict()")
            got = check_logits(method_name, output, tuple(naive.shape), "predict_features()")
            atol = SHARED_ATOL * max(1.0, float(naive.abs().max()))
            if not torch.allclose(got, naive, rtol=SHARED_RTOL, atol=atol):
                worst = float((got - naive).abs().max())
                raise ContractError(
                    f"method {method_name!r}: shares_encoder is True but decoding the shared features of the "
                    f"subset {mask[0].tolist()} (first sample) differs from predict() by up to {worst:.3g}: either "
                    "encode() mixes modalities or decode() reads the features of modalities outside `available` "
                    "(they are not zeroed: give them weight 0 or call restrict_features first), or predict() does "
                    "more than decode(encode()); fix it or set shares_encoder = False"
                )
            for key, value in expected.items():  # the robustness maps (and any other tensor output) too
                if key != "logits" and not _same_tensors(value, output.get(key)):
                    raise ContractError(
                        f"method {method_name!r}: shares_encoder is True but predict_features()[{key!r}] differs "
                        f"from predict()[{key!r}] on the subset {mask[0].tolist()}; override predict_features() "
                        "like predict(), or set shares_encoder = False"
                    )
    finally:
        method.train(was_training)


def _same_tensors(a: object, b: object) -> bool:
    """Whether two outputs (a tensor or a list of tensors; anything else is not compared) agree to the
    shared-path tolerance."""
    a_list = list(a) if isinstance(a, (list, tuple)) else [a]
    b_list = list(b) if isinstance(b, (list, tuple)) else [b]
    if not all(torch.is_tensor(t) for t in a_list):
        return True
    return len(a_list) == len(b_list) and all(
        torch.is_tensor(y)
        and x.shape == y.shape
        and torch.allclose(x.float(), y.float(), rtol=SHARED_RTOL, atol=SHARED_ATOL)
        for x, y in zip(a_list, b_list)
    )
