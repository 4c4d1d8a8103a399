"""The missing-modality protocol: one definition used by every method.

A batch is ``inputs: {modality: float[B, C_m, H, W]}``, ``target: int64[B, H, W]`` (with the
data set's ``ignore_index``) and ``available: bool[B, M]`` (column ``m`` is modality ``m`` in the
data set's modality order). A missing modality is handled in two ways at once:

1. its input is zeroed (:func:`apply_availability`), so a method that ignores the mask still
   sees no information from it, and
2. the mask is passed to the method, which must use it (never rely on the zeros alone).

Training draws one non-empty subset per sample under a named :class:`Protocol` (``complete``,
``uniform``, ``bernoulli``, ``size_uniform``, ``drop_one``, ``staged``; docs/protocol.md); a run is
a method trained under one protocol, named ``<method>-<protocol>`` (:func:`run_name`). Evaluation
walks all ``2^M - 1`` non-empty subsets in the fixed order of :func:`enumerate_subsets`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from benchmark.config import ParamsValueError

SUBSET_SEPARATOR = "+"
RUN_SEPARATOR = "-"  # <method>-<protocol>: DVC stage names allow letters, digits, "_" and "-" only
PROTOCOL_NAME = re.compile(r"[a-z][a-z0-9_]*")  # no "-": a run name splits at its last "-"

#: Every kind of training protocol; the first four need no parameters and are usable by name.
PROTOCOL_KINDS = ("complete", "uniform", "bernoulli", "size_uniform", "drop_one", "staged")
BUILTIN_PROTOCOLS = ("complete", "uniform", "size_uniform", "drop_one")


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


def subset_parts(name: str) -> list[str]:
    """``"rgb+nir" -> ["rgb", "nir"]``: split a subset name as written, unvalidated."""
    return name.split(SUBSET_SEPARATOR)


def parse_subset(name: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """``"nir+rgb" -> ("rgb", "nir")``: validate a subset name and put it in data set order."""
    parts = subset_parts(name)
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


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A training protocol: how each training sample's available modalities are drawn.

    ``kind`` is one of :data:`PROTOCOL_KINDS`; ``drop_prob`` (``bernoulli``): one drop probability
    per modality in [0, 1); ``fraction``, ``first``, ``then`` (``staged``): ``first`` for the
    steps ``< round(fraction * steps)``, ``then`` after. Checked on construction (``ValueError``).
    """

    name: str
    kind: str
    drop_prob: tuple[float, ...] | None = None
    fraction: float | None = None
    first: Protocol | None = None
    then: Protocol | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROTOCOL_KINDS:
            raise ValueError(f"protocol {self.name!r}: kind {self.kind!r}: must be one of {list(PROTOCOL_KINDS)}")
        if (self.kind == "bernoulli") != (self.drop_prob is not None):
            raise ValueError(f"protocol {self.name!r}: drop_prob is set for kind 'bernoulli' only, and it needs one")
        if self.drop_prob is not None and (not self.drop_prob or any(not 0 <= p < 1 for p in self.drop_prob)):
            raise ValueError(
                f"protocol {self.name!r}: drop_prob {list(self.drop_prob)}: must be probabilities in [0, 1)"
            )
        staged = (self.fraction, self.first, self.then)
        if self.kind == "staged":
            if self.fraction is None or self.first is None or self.then is None or not 0 < self.fraction < 1:
                raise ValueError(f"protocol {self.name!r}: staged needs fraction in (0, 1), first and then")
        elif any(v is not None for v in staged):
            raise ValueError(f"protocol {self.name!r}: fraction, first and then are set for kind 'staged' only")

    def record(self) -> dict[str, Any]:
        """The JSON description (metrics.json, the checkpoint fingerprint): name, kind and parameters."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.drop_prob is not None:
            out["drop_prob"] = list(self.drop_prob)
        if self.kind == "staged":
            assert self.first is not None and self.then is not None
            out.update(fraction=self.fraction, first=self.first.record(), then=self.then.record())
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Protocol:
        """The protocol :meth:`record` described (``KeyError`` / ``ValueError`` for a bad record)."""
        stages = {key: cls.from_record(record[key]) for key in ("first", "then") if key in record}
        drop = record.get("drop_prob")
        return cls(
            record["name"],
            record["kind"],
            drop_prob=None if drop is None else tuple(float(p) for p in drop),
            fraction=record.get("fraction"),
            **stages,
        )

    def switch_step(self, steps: int) -> int:
        """``staged``: the first step drawn by ``then`` (of ``steps`` in all)."""
        assert self.fraction is not None
        return round(self.fraction * steps)

    def check_switch(self, steps: int, where: str) -> None:
        """A ``staged`` protocol switches strictly inside the ``steps`` steps (else it is one protocol);
        else a one-line error at ``where`` (e.g. ``"params.yaml: protocols.shaspec.fraction"``)."""
        if self.kind == "staged" and not 1 <= self.switch_step(steps) <= steps - 1:
            raise ParamsValueError(
                f"{where}: {self.fraction!r} is not allowed with train.steps: {steps}: it switches at step "
                f"{self.switch_step(steps)} = round(fraction * steps); must be a fraction whose switch lies in "
                f"[1, {steps - 1}]"
            )

    def draw(
        self, batch_size: int, num_modalities: int, generator: torch.Generator, step: int = 0, steps: int = 1
    ) -> torch.Tensor:
        """``bool[B, M]``, every row non-empty, for training step ``step`` of ``steps``. All randomness
        comes from ``generator`` (seeded per step by the trainer: a resumed run draws the same)."""
        if num_modalities < 1:
            raise ValueError("num_modalities must be >= 1")
        if self.kind == "staged":
            assert self.first is not None and self.then is not None
            stage = self.first if step < self.switch_step(steps) else self.then
            return stage.draw(batch_size, num_modalities, generator, step, steps)
        if self.kind == "complete":
            return torch.ones(batch_size, num_modalities, dtype=torch.bool)
        if self.kind == "uniform":
            return draw_available(batch_size, num_modalities, generator)
        if self.kind == "bernoulli":
            return draw_available(batch_size, num_modalities, generator, self.drop_prob)
        if self.kind == "size_uniform":
            return draw_size_uniform(batch_size, num_modalities, generator)
        return draw_drop_one(batch_size, num_modalities, generator)


def draw_size_uniform(batch_size: int, num_modalities: int, generator: torch.Generator) -> torch.Tensor:
    """``bool[B, M]``: per sample a size ``k`` uniform in ``1..M``, then a uniform ``k``-subset (ShaSpec)."""
    sizes = torch.randint(1, num_modalities + 1, (batch_size, 1), generator=generator)
    ranks = torch.rand(batch_size, num_modalities, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < sizes  # the k modalities of lowest random rank: a uniform k-subset


def draw_drop_one(batch_size: int, num_modalities: int, generator: torch.Generator) -> torch.Tensor:
    """``bool[B, M]``: uniform over the full set and the ``M`` sets lacking one modality (the full set
    only when ``M = 1``, where dropping the one modality would leave nothing)."""
    if num_modalities == 1:
        return torch.ones(batch_size, 1, dtype=torch.bool)
    choice = torch.randint(0, num_modalities + 1, (batch_size, 1), generator=generator)  # M: drop nothing
    return torch.arange(num_modalities).unsqueeze(0) != choice


def random_combination(available: torch.Tensor) -> torch.Tensor:
    """``bool[B, M]``: per sample a uniform non-empty subset of its available modalities
    (``available: bool[B, M]``, every row non-empty), for a method that draws its own modality
    combinations during training. Uses torch's global generator, which the trainer seeds and
    its checkpoints restore, so the draws are seeded and resume exactly."""
    coin = torch.rand(available.shape, device=available.device) < 0.5
    chosen = available & coin
    empty = ~chosen.any(dim=1)
    while bool(empty.any()):  # rejection: uniform over the 2^k - 1 non-empty subsets of k available
        coin = torch.rand((int(empty.sum()), available.shape[1]), device=available.device) < 0.5
        chosen[empty] = available[empty] & coin
        empty = ~chosen.any(dim=1)
    return chosen


def builtin_protocol(name: str) -> Protocol:
    """A protocol of :data:`BUILTIN_PROTOCOLS` by name (its kind)."""
    if name not in BUILTIN_PROTOCOLS:
        raise ValueError(f"protocol {name!r}: not a built-in protocol {list(BUILTIN_PROTOCOLS)}")
    return Protocol(name, name)


def run_name(method: str, protocol: str) -> str:
    """``("sgma-mas", "complete") -> "sgma-mas-complete"``: a run's name (folders, stages, tables)."""
    return f"{method}{RUN_SEPARATOR}{protocol}"


def parse_run(name: str) -> tuple[str, str]:
    """``"sgma-mas-complete" -> ("sgma-mas", "complete")``: split at the last ``-`` (protocol names
    hold none). ``ValueError`` for a name without a method or a protocol part."""
    method, separator, protocol = str(name).rpartition(RUN_SEPARATOR)
    if not separator or not method or PROTOCOL_NAME.fullmatch(protocol) is None:
        raise ValueError(
            f"run {name!r}: must be <method>{RUN_SEPARATOR}<protocol>, e.g. muss{RUN_SEPARATOR}complete "
            f"(a method trained under a protocol: {', '.join(BUILTIN_PROTOCOLS)} or one defined under protocols)"
        )
    return method, protocol
