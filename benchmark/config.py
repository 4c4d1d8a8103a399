"""params.yaml: reading it, and its typed sections.

:func:`load_params` reads the file with a safe YAML loader that refuses duplicated keys; it checks
nothing else, so a module that reads params.yaml imports no method, model or data set. The checks
live beside what they check: the whole file in :mod:`benchmark.schema` (the configure stage, then
train, evaluate and report), one data set's section in :mod:`benchmark.data.section` (download,
prepare). Every error names the file, the key, the value and what is allowed; all are
:class:`ParamsError` (and a ``KeyError``, ``TypeError`` or ``ValueError``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from benchmark.errors import UserError

PARAMS_FILE = Path("params.yaml")

C = TypeVar("C")


class ParamsError(UserError):
    """A bad params.yaml; the message names the file, the key, the value and what is allowed."""


class ParamsKeyError(ParamsError, KeyError):
    """A missing or unknown key, or an unknown name (data set, method, module)."""


class ParamsTypeError(ParamsError, TypeError):
    """A value of the wrong type."""


class ParamsValueError(ParamsError, ValueError):
    """A value of the right type outside what is allowed."""


class FieldError(ParamsValueError):
    """One field of a config dataclass out of range: ``<where>.<key>: <value> is not allowed; must be <allowed>``.

    ``where`` defaults to the section (``"train"``); :func:`from_mapping` re-raises it with the file.
    """

    def __init__(self, where: str, key: str, value: Any, allowed: str, problem: str | None = None) -> None:
        self.where, self.key, self.value, self.allowed, self.problem = where, key, value, allowed, problem
        super().__init__(f"{where}.{key}: {value!r} {problem or f'is not allowed; must be {allowed}'}")

    def at(self, where: str) -> FieldError:
        """The same error located at ``where`` (e.g. ``"params.yaml: train"``)."""
        return FieldError(where, self.key, self.value, self.allowed, self.problem)


def _require(ok: bool, where: str, key: str, value: Any, allowed: str, problem: str | None = None) -> None:
    if not ok:
        raise FieldError(where, key, value, allowed, problem)


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML ``true`` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def run_parser(description: str, params: bool = True) -> argparse.ArgumentParser:
    """Command-line parser with the arguments every per-run stage takes (train, evaluate): the run,
    its configuration file, ``--params`` where the stage reads params.yaml."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run-name", required=True, help="<method>-<protocol>, as listed under runs in params.yaml")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--config", type=Path, default=None, help="the run's configuration (default configs/<run>.json)"
    )
    if params:
        parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--data-dir", type=Path, default=None, help="prepared data (default data/prepared/<dataset>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def stage_label(kind: str, dataset: str, run: str, seed: int, params: Path | Mapping[str, Any] = PARAMS_FILE) -> str:
    """``"train 5/20: synthetic muss-complete seed 0"``: a per-run stage's position among the
    pipeline's stages of its kind, in dvc.yaml's matrix order (datasets x runs x seeds of ``params``,
    a params.yaml or its contents already read). For the progress line only (it changes no output,
    so the lists are no dep of the stage): without the file, or a run it does not list, the label
    has no position."""
    what = f"{dataset} {run} seed {seed}"
    try:
        lists = params if isinstance(params, Mapping) else load_params(params)
        order = list(itertools.product(lists["datasets"], lists["runs"], lists["seeds"]))
        return f"{kind} {order.index((dataset, run, seed)) + 1}/{len(order)}: {what}"
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return f"{kind}: {what}"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that names one key twice (PyYAML would silently keep the last value)."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(f"line {line}: key {key!r} is duplicated (first on line {first_line})")


class UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python objects) that refuses a key repeated within one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base loader reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise DuplicateKeyError(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml: safe YAML, no duplicated keys, a mapping at the top. Reads only; the whole
    file's check is :func:`benchmark.schema.load_config`'s (one data set's section:
    :func:`benchmark.data.section.load_source`). Errors name the file, line and key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found")
    try:
        loader = UniqueKeySafeLoader(path.read_text(encoding="utf-8"))  # what yaml.safe_load does, plus the check
        try:
            params = loader.get_single_data()
        finally:
            loader.dispose()
    except DuplicateKeyError as err:
        raise ParamsValueError(
            f"{path}: line {err.line}: key {err.key!r} is duplicated (first on line {err.first_line}); "
            "allowed: each key once per mapping"
        ) from None
    except yaml.YAMLError as err:
        raise ParamsValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(params, dict):
        raise ParamsTypeError(f"{path}: {type(params).__name__} at the top level is not allowed; must be a mapping")
    return params


def section(params: Mapping[str, Any], key: str, where: str) -> Any:
    """``params[key]`` or a KeyError naming the file and key."""
    if key not in params:
        raise ParamsKeyError(f"{where}: missing key {key!r}")
    return params[key]


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, arg) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return is_int(value)
    if origin is not None:  # another generic (Mapping[...], Sequence[...]): check the container only
        return isinstance(value, origin)
    return isinstance(value, annotation)


def describe(annotation: Any) -> str:
    """What a value of ``annotation`` looks like in YAML: ``list[float] | None`` -> ``a list of numbers or null``."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return "any value"
    if origin is Literal:
        return f"one of {list(typing.get_args(annotation))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(annotation) or (Any,)
        inner = describe(arg)
        plural = {"an int": "ints", "a number": "numbers", "a string": "strings", "true or false": "booleans"}
        return f"a list of {plural.get(inner, inner)}"
    if origin is dict or annotation is dict or origin is Mapping:
        return "a mapping"
    names = {int: "an int", float: "a number", bool: "true or false", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _hint(value: Any, annotation: Any) -> str:
    """A note for a common YAML slip: ``1e-3`` (no dot) is read as a string."""
    if isinstance(value, str) and "float" in str(annotation):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads a number like 1e-3 as text: write 0.001 or 1.0e-3)"
    return ""


def from_mapping(cls: type[C], values: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys, wrong types and (through the
    dataclass's own checks) values out of range.

    Errors name ``where`` (e.g. ``"params.yaml: train"``), the key, the bad value and what is allowed.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParamsTypeError(
            f"{where}: {values!r} is not allowed; must be a mapping with keys from {sorted(names)} (or null: defaults)"
        )
    values = dict(values)
    unknown = sorted((k for k in values if k not in names), key=str)
    if unknown:
        raise ParamsKeyError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise ParamsTypeError(
                f"{where}.{key}: {value!r} is not allowed; must be {describe(hints[key])}{_hint(value, hints[key])}"
            )
        if is_int(value) and hints[key] is float:
            values[key] = float(value)
    try:
        return cls(**values)
    except FieldError as err:
        raise err.at(where) from None


def _check_device(where: str, value: str) -> None:
    _require(
        DEVICE_PATTERN.fullmatch(value) is not None,
        where,
        "device",
        value,
        "'auto', 'cpu', 'mps', 'cuda', 'cuda:<index>' or 'xpu[:<index>]'",
    )


#: evaluate.convention for a missing modality (docs/protocol.md): "mask": zeroed and masked out;
#: "zero": zeroed while the mask says every modality is present (a deployed model not told of the failure).
EVAL_CONVENTIONS = ("mask", "zero")
PRECISIONS = ("fp32", "bf16")  # train.precision: full float32, or bfloat16 autocast around the training step
# train.class_weights: the supervised cross-entropy's per-class weights from the training split's
# labels (docs/synthetic.md "Rare classes"): none, median-frequency balancing (Eigen & Fergus 2015,
# SegNet) or ENet's 1 / ln(1.02 + p_c) (Paszke et al. 2016)
CLASS_WEIGHTS = ("none", "median_frequency", "enet")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training recipe shared by every method (params.yaml ``train``)."""

    backbone: str = "tiny"  # "tiny" or a timm model name
    pretrained: bool = False  # ImageNet weights through timm (needs network or a cache)
    decoder_dim: int = 64  # all-MLP decoder width
    steps: int = 300  # optimiser steps
    batch_size: int = 8  # images per optimiser step over all processes (the global batch under torchrun)
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01
    warmup_steps: int = 30  # linear warm-up from lr * 1e-6
    poly_power: float = 0.9  # polynomial decay after warm-up
    augment: bool = True  # random horizontal / vertical flips per sample
    checkpoint_every: int = 100  # steps between resumable checkpoints
    num_workers: int = 0  # DataLoader workers
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ... (under torchrun: cuda:LOCAL_RANK)
    precision: str = "fp32"  # "fp32" or "bf16": bfloat16 autocast of the training step (weights stay fp32)
    channels_last: bool = False  # the method's weights and the 4-D inputs in channels_last memory format
    compile: bool = False  # torch.compile each direct child module of the method (docs/training.md)
    class_weights: str = "median_frequency"  # the cross-entropy's class weights: one of CLASS_WEIGHTS

    def __post_init__(self) -> None:
        where = "train"
        _require(bool(self.backbone.strip()), where, "backbone", self.backbone, "'tiny' or a timm model name")
        for key in ("steps", "batch_size", "checkpoint_every", "decoder_dim"):
            value = getattr(self, key)
            _require(value >= 1, where, key, value, "an int >= 1")
        _require(
            0 <= self.warmup_steps < self.steps,
            where,
            "warmup_steps",
            self.warmup_steps,
            f"an int in [0, steps) = [0, {self.steps})",
        )
        _require(math.isfinite(self.lr) and self.lr > 0, where, "lr", self.lr, "a finite number > 0")
        for key in ("weight_decay", "poly_power"):
            value = getattr(self, key)
            _require(math.isfinite(value) and value >= 0, where, key, value, "a finite number >= 0")
        _require(self.num_workers >= 0, where, "num_workers", self.num_workers, "an int >= 0")
        _check_device(where, self.device)
        _require(self.precision in PRECISIONS, where, "precision", self.precision, f"one of {list(PRECISIONS)}")
        for key in ("channels_last", "compile"):
            value = getattr(self, key)
            _require(isinstance(value, bool), where, key, value, "true or false")
        _require(
            self.class_weights in CLASS_WEIGHTS,
            where,
            "class_weights",
            self.class_weights,
            f"one of {list(CLASS_WEIGHTS)}",
        )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings (params.yaml ``evaluate``)."""

    batch_size: int = 16
    device: str = "auto"
    sample_tiles: int = 3  # test tiles whose predictions are kept for the report's qualitative panel
    convention: str = "mask"  # a missing modality: "mask" (zeroed and masked out) or "zero" (zeroed, not masked)

    def __post_init__(self) -> None:
        _require(
            self.convention in EVAL_CONVENTIONS,
            "evaluate",
            "convention",
            self.convention,
            f"one of {list(EVAL_CONVENTIONS)} (docs/protocol.md)",
        )
        _require(self.batch_size >= 1, "evaluate", "batch_size", self.batch_size, "an int >= 1")
        _require(self.sample_tiles >= 0, "evaluate", "sample_tiles", self.sample_tiles, "an int >= 0")
        _check_device("evaluate", self.device)


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Report settings (params.yaml ``report``)."""

    reference: str = "sgma-complete"  # the run every run is compared with
    failure_probs: list[float] = dataclasses.field(default_factory=lambda: [0.05, 0.1, 0.2])  # p of E_p[mIoU]
    bootstrap_samples: int = 1000  # replicates of the paired bootstrap
    confidence: float = 0.95  # of the bootstrap interval
    bootstrap_seed: int = 0
    # rows of the ablation table, each trained under every protocol present: label -> method; the
    # first is the row every other is compared with (params.yaml: SGMA's none / SGF / MAS / both)
    ablation: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "report"
        for label, method in self.ablation.items():
            _require(
                isinstance(label, str) and isinstance(method, str) and bool(label.strip()),
                where,
                "ablation",
                {label: method},
                "a mapping of row label -> method name",
            )
        methods = list(self.ablation.values())
        repeated = sorted({m for m in methods if methods.count(m) > 1})
        _require(not repeated, where, "ablation", self.ablation, "each method once", f"repeats {repeated}")
        _require(
            len(methods) != 1,
            where,
            "ablation",
            self.ablation,
            "{} (no ablation table) or 2+ rows: the first is the base the others are compared with",
        )
        bad = [p for p in self.failure_probs if not 0 <= p < 1]
        if bad:
            raise FieldError(
                where, "failure_probs", bad[0], "a probability in [0, 1)", "is not a probability in [0, 1)"
            )
        _require(self.bootstrap_samples >= 1, where, "bootstrap_samples", self.bootstrap_samples, "an int >= 1")
        _require(0 < self.confidence < 1, where, "confidence", self.confidence, "a number in (0, 1)")
        _require(self.bootstrap_seed >= 0, where, "bootstrap_seed", self.bootstrap_seed, "an int >= 0")


@dataclasses.dataclass(frozen=True)
class ScenarioConfig:
    """Corrupted-input scenarios run at evaluation besides the missing subsets (params.yaml
    ``scenarios``; docs/scenarios.md). Every modality stays available; one modality at a time is
    corrupted at each level of each kind. An empty level list turns a kind off."""

    seed: int = 0  # masks and noise are drawn from (seed, kind, modality, tile index): identical in every run
    modalities: list[str] | None = None  # modalities to corrupt, one at a time (None: every modality)
    block_size: int = 8  # px, side of the square blocks that block_missing zeroes
    block_missing: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 0.75])  # fraction zeroed
    pixel_missing: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 0.75])  # fraction zeroed
    gaussian: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 1.0])  # std, channel stds
    salt_pepper: list[float] = dataclasses.field(default_factory=lambda: [0.05, 0.1, 0.2])  # fraction of pixels
    speckle: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 1.0])  # variance = 1 / looks <= 1

    def __post_init__(self) -> None:
        where = "scenarios"
        _require(self.seed >= 0, where, "seed", self.seed, "an int >= 0")
        _require(self.block_size >= 1, where, "block_size", self.block_size, "an int >= 1")
        if self.modalities is not None:
            allowed = "null (every modality) or a non-empty list of distinct modality names"
            _require(len(self.modalities) > 0, where, "modalities", self.modalities, allowed)
            repeated = sorted({m for m in self.modalities if self.modalities.count(m) > 1})
            _require(
                not repeated, where, "modalities", self.modalities, allowed, f"repeats {repeated}; allowed: {allowed}"
            )
        # speckle: variance = 1 / looks, and a SAR image has at least one look
        for kind in ("block_missing", "pixel_missing", "salt_pepper", "speckle"):
            bad = [v for v in getattr(self, kind) if not 0 < v <= 1]
            if bad:
                raise FieldError(where, kind, bad[0], "a number in (0, 1]", "is not in (0, 1]")
        bad = [v for v in self.gaussian if not (math.isfinite(v) and v > 0)]
        if bad:
            raise FieldError(where, "gaussian", bad[0], "a finite number > 0")
        for kind in SCENARIO_KINDS:
            levels = getattr(self, kind)
            allowed = "levels in increasing order, each once (the curves run from mild to severe)"
            increasing = all(a < b for a, b in zip(levels, levels[1:]))
            _require(increasing, where, kind, levels, allowed, f"is not allowed; {allowed}")


SCENARIO_KINDS = ("block_missing", "pixel_missing", "gaussian", "salt_pepper", "speckle")


def resolve_device(name: str) -> torch.device:  # noqa: F821 - torch imported lazily
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
