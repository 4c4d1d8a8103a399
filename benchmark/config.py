"""params.yaml: reading it, its typed sections, and the one translator of their errors.

:func:`load_params` reads the file with a safe YAML loader that refuses duplicated keys and checks
nothing else. Each section is a strict pydantic model (:class:`Section`: no text as a number, no
``true`` as an int, unknown keys refused, bounds declared on the fields so that the JSON Schema
holds them too); :func:`from_mapping` builds one and :func:`load_section` reads one from the file.
:func:`params_error` turns pydantic's errors into one line ``<file>: <key path>: <value> is not
allowed; must be <what is allowed>`` (a :class:`ParamsError`, also a ``KeyError``, ``TypeError`` or
``ValueError``). The whole file is :mod:`benchmark.schema`'s (the configure stage, then report);
one data set's section :mod:`benchmark.data.section`'s (download, prepare). This module imports no
other module of the project but :mod:`benchmark.errors` and :mod:`benchmark.layout`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import itertools
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from benchmark.errors import UserError, did_you_mean
from benchmark.layout import PARAMS_FILE


class ParamsError(UserError):
    """A bad params.yaml; the message names the file, the key, the value and what is allowed."""


class ParamsKeyError(ParamsError, KeyError):
    """A missing or unknown key, or an unknown name (data set, method, module)."""


class ParamsTypeError(ParamsError, TypeError):
    """A value of the wrong type."""


class ParamsValueError(ParamsError, ValueError):
    """A value of the right type outside what is allowed."""


class FieldError(ParamsValueError):
    """One field of a section not allowed: ``<where>.<key>: <value> is not allowed; must be <allowed>``.

    ``where`` defaults to the section (``"train"``); :func:`from_mapping` re-raises it with the file.
    ``location`` replaces ``<where>.<key>`` where the translator has spelt the path itself.
    """

    def __init__(
        self, where: str, key: str, value: Any, allowed: str, problem: str | None = None, location: str | None = None
    ) -> None:
        self.where, self.key, self.value, self.allowed, self.problem = where, key, value, allowed, problem
        super().__init__(f"{location or f'{where}.{key}'}: {value!r} {problem or f'is not allowed; must be {allowed}'}")

    def at(self, where: str) -> FieldError:
        """The same error located at ``where`` (e.g. ``"params.yaml: train"``)."""
        return type(self)(where, self.key, self.value, self.allowed, self.problem)


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML ``true`` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


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


class Allowed:
    """``Annotated`` metadata: what a value must be, in words, where the type and bounds do not say it
    (a pattern). pydantic ignores it; :func:`describe` prefers it."""

    def __init__(self, text: str) -> None:
        self.text = text


def one_of(*values: str) -> Any:
    """The type of a string among ``values``: another string is a value error (its type is right)
    naming them; the JSON Schema lists them as an enum."""

    def check(value: str) -> str:
        if value not in values:
            raise PydanticCustomError("one_of", "must be one of {allowed}", {"allowed": list(values)})
        return value

    return Annotated[
        str, AfterValidator(check), Allowed(f"one of {list(values)}"), WithJsonSchema({"enum": list(values)})
    ]


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Device = Annotated[
    str,
    Field(pattern=r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$"),
    Allowed("'auto', 'cpu', 'mps', 'cuda', 'cuda:<index>' or 'xpu[:<index>]'"),
]

# a bound's operator: annotated_types' bounds are one-field dataclasses (Ge(ge=1))
_BOUNDS = {annotated_types.Ge: ">=", annotated_types.Gt: ">", annotated_types.Le: "<=", annotated_types.Lt: "<"}


def _metadata(annotation: Any, metadata: Sequence[Any] = ()) -> tuple[Any, list[Any]]:
    """``annotation`` without ``Annotated``, and its metadata with ``metadata`` (FieldInfo flattened)."""
    out = list(metadata)
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        out += [m for item in extra for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    return annotation, out


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def describe(annotation: Any, metadata: Sequence[Any] = (), plural: bool = False, bounds: bool = True) -> str:
    """What a value of ``annotation`` looks like in YAML: ``list[float] | None`` -> ``a list of
    numbers or null``; ``Annotated[int, Field(ge=1)]`` -> ``an int >= 1`` (``an int`` without ``bounds``)."""
    annotation, metadata = _metadata(annotation, metadata)
    allowed = [m.text for m in metadata if isinstance(m, Allowed)]
    if allowed:
        return allowed[0]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return f"one of {list(typing.get_args(annotation))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg, plural=plural, bounds=bounds) for arg in typing.get_args(annotation))
    if origin in (list, tuple, Sequence):
        (arg, *_) = typing.get_args(annotation) or (Any,)
        return f"a list of {describe(arg, plural=True, bounds=bounds)}"
    if annotation in (dict, Mapping) or origin in (dict, Mapping) or _is_model(annotation):
        return "mappings" if plural else "a mapping"
    names = {
        Any: ("any value", "values"),
        type(None): ("null", "nulls"),
        int: ("an int", "ints"),
        float: ("a number", "numbers"),
        bool: ("true or false", "booleans"),
        str: ("a string", "strings"),
    }
    name = names.get(annotation, (getattr(annotation, "__name__", str(annotation)),) * 2)[plural]
    if not bounds:
        return name
    if any(getattr(m, "allow_inf_nan", True) is False for m in metadata):
        name = name.replace("a number", "a finite number").replace("numbers", "finite numbers")
    bounds = [(_BOUNDS[type(m)], dataclasses.astuple(m)[0]) for m in metadata if type(m) in _BOUNDS]
    low, high = [b for b in bounds if b[0][0] == ">"], [b for b in bounds if b[0][0] == "<"]
    if low and high:
        (lop, lv), (hop, hv) = low[0], high[0]
        return f"{name} in {'[' if lop == '>=' else '('}{lv}, {hv}{']' if hop == '<=' else ')'}"
    return " ".join([name, *(f"{op} {v}" for op, v in low + high)])


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))


def conforms(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (as YAML gives it) is a strict ``annotation``: no text as a number, no
    ``true`` as an int; an int is a number."""
    try:
        _adapter(annotation).validate_python(value)
    except ValidationError:
        return False
    return True


class FieldTypeError(FieldError, ParamsTypeError):
    """A field of the wrong type: a :class:`FieldError` and a ``TypeError``."""


# pydantic error types of a value of the right type that is not allowed (the rest are type errors)
_VALUE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "finite_number",
    "string_pattern_mismatch",
    "one_of",
    "too_short",
    "too_long",
}


def _hint(value: Any, allowed: str) -> str:
    """A note for a common YAML slip: ``1e-3`` (no dot) is read as a string."""
    if isinstance(value, str) and "number" in allowed:
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads a number like 1e-3 as text: write 0.001 or 1.0e-3)"
    return ""


def _step(annotation: Any, key: Any) -> tuple[Any, list[Any]] | None:
    """The annotation (and its metadata) one step inside ``annotation`` at ``key`` of an error's
    location: a model's field (by name or alias), a mapping's value, a list's item; ``None`` where
    the location names no part of the value (a union's tag, a mapping key's own check)."""
    base, _ = _metadata(annotation)
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        members = [_metadata(a)[0] for a in typing.get_args(base) if a is not type(None)]
        nested = len(members) == 1 and _is_model(members[0])
        if not (nested or len(members) == 1 and typing.get_origin(members[0]) in (dict, Mapping)):
            return None  # a union of values (a list or null, ...): reported whole
        base = members[0]
    if _is_model(base):
        field = next((f for n, f in base.model_fields.items() if key in (n, f.alias)), None)
        return None if field is None else (field.annotation, field.metadata)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in (dict, Mapping) and len(args) == 2 and key != "[key]":
        return args[1], []
    if origin in (list, Sequence) and isinstance(key, int):
        return args[0], []
    return None


def _path(parts: Sequence[Any]) -> str:
    """``["train", "lr"]`` -> ``train.lr``; ``["seeds", 0]`` -> ``seeds[0]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _value(values: Any, parts: Sequence[Any]) -> Any:
    for part in parts:
        values = values[part]
    return values


def params_error(
    err: ValidationError, cls: type[BaseModel], values: Mapping[str, Any], where: str, joiner: str = "."
) -> ParamsError:
    """pydantic's errors of ``cls`` built from ``values`` as one of this module's one-line errors at
    ``<where><joiner><key path>`` (``joiner``: ``"."`` below a section's ``where``, ``": "`` below a
    file's): unknown keys first (all of them, of the first mapping that has some), then missing
    keys, then the first error in ``cls``'s order (a type error, or a value out of what is allowed:
    the key, the value and what is allowed), then a model's own check."""
    errors = err.errors()

    def base(parts: Sequence[Any]) -> str:
        return f"{where}{joiner}{_path(parts)}" if parts else where

    for kind in ("extra_forbidden", "missing"):
        found = [e["loc"] for e in errors if e["type"] == kind]
        if found:
            parent = found[0][:-1]
            keys = [loc[-1] for loc in found if loc[:-1] == parent]
            model = _metadata(cls if not parent else _walk(cls, parent)[1])[0]
            fields = getattr(model, "model_fields", {})
            names = [f.alias or n for n, f in fields.items()]
            if kind == "missing":
                required = [f.alias or n for n, f in fields.items() if f.is_required()] or keys
                return ParamsKeyError(f"{base([*parent, keys[0]])}: missing; required keys: {required}")
            return ParamsKeyError(
                f"{base(parent)}: unknown key(s) {keys}; allowed: {sorted(names)}" + did_you_mean(keys[0], names)
            )
    first = errors[0]
    parts, annotation, metadata = _walk(cls, first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    if first["type"] == "value_error" and isinstance(cause, FieldError):
        return cause.at(base(parts))
    if first["type"] == "value_error":
        return ParamsValueError(f"{base(parts)}: {cause if cause is not None else first['msg']}")
    mine = [e for e in errors if tuple(e["loc"][: len(parts)]) == tuple(parts)]
    wrong_value = any(e["type"] in _VALUE_ERRORS for e in mine)
    value, allowed = _value(values, parts), describe(annotation, metadata, bounds=wrong_value)
    kind = FieldError if wrong_value else FieldTypeError
    return kind(where, _path(parts), value, allowed + _hint(value, allowed), location=base(parts))


def _walk(cls: type[BaseModel], loc: Sequence[Any]) -> tuple[list[Any], Any, list[Any]]:
    """The longest start of ``loc`` that names a part of the value: (its keys, annotation, metadata)."""
    parts: list[Any] = []
    annotation, metadata = cls, []
    for key in loc:
        step = _step(annotation, key)
        if step is None:
            break
        (annotation, metadata), parts = step, [*parts, key]
    return parts, annotation, metadata


class _Located(type(BaseModel)):  # pydantic's model metaclass
    """Building a section directly (``TrainConfig(steps=0)``) raises this module's one-line error
    naming ``<where>.<key>``, not pydantic's report; validation inside a bigger model is untouched."""

    def __call__(cls, **values: Any) -> Any:
        try:
            return super().__call__(**values)
        except ValidationError as err:
            raise params_error(err, cls, values, cls.where) from None


class Section(BaseModel, metaclass=_Located):
    """A typed section of params.yaml: strict types (no ``"1e-3"`` text as a number, no ``true`` as an
    int), unknown keys refused, frozen. Built directly, an error names ``<where>.<key>`` (``where``:
    the section's name); :func:`from_mapping` locates it in a file."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    where: ClassVar[str] = ""


S = TypeVar("S", bound=Section)


PRAGMA = re.compile(r"\s*(type:\s*ignore|noqa|fmt:|pragma:).*$")  # a comment for a tool, not a reader


@functools.cache  # one parse per class: the JSON Schema asks for a base once per model built on it
def field_comments(cls: type) -> dict[str, str]:
    """``{field: its comment}`` of the fields ``cls`` itself declares, read from its source: the last
    comment within the field's lines (``name: T = v  # comment``), else the comment lines right above
    it. A field's comment is its one documentation, which the JSON Schema carries as its description
    (:func:`benchmark.schema.json_schema`). Tools' comments (``type: ignore``, ``noqa``, ``fmt:``,
    ``pragma:``) are not documentation: left out."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # made at run time (no source): nothing to read
        return {}
    comments = {
        token.start[0]: text
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT and (text := PRAGMA.sub("", token.string.lstrip("#")).strip())
    }
    (body,) = ast.parse(source).body
    lines, found = source.splitlines(), {}
    for node in getattr(body, "body", []):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            line = node.lineno - 1
            while line in comments and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            inside = [comments[i] for i in range(node.lineno, (node.end_lineno or node.lineno) + 1) if i in comments]
            text = inside[-1] if inside else " ".join(above)
            if text:
                found[node.target.id] = text
    return found


def from_mapping(cls: type[S], values: Mapping[str, Any] | None, where: str) -> S:
    """Section ``cls`` from ``values`` (null: its defaults). Errors name ``where`` (e.g.
    ``"params.yaml: train"``), the key, the bad value and what is allowed."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParamsTypeError(
            f"{where}: {values!r} is not allowed; must be a mapping with keys from {sorted(cls.model_fields)} "
            "(or null: defaults)"
        )
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        raise params_error(err, cls, values, where) from None


def load_section(path: str | Path, key: str, cls: type[S]) -> S:
    """Section ``key`` of the params file ``path`` as ``cls`` (absent or null: its defaults), the
    rest of the file unchecked: what a stage reads that needs one section and must not import what
    the whole check imports (every method). Errors name the file and key."""
    return from_mapping(cls, load_params(path).get(key), f"{path}: {key}")


#: evaluate.convention for a missing modality (docs/protocol.md): "mask": zeroed and masked out;
#: "zero": zeroed while the mask says every modality is present (a deployed model not told of the failure).
EVAL_CONVENTIONS = ("mask", "zero")
PRECISIONS = ("fp32", "bf16")  # train.precision: full float32, or bfloat16 autocast around the training step
# train.class_weights: the supervised cross-entropy's per-class weights from the training split's
# labels (docs/synthetic.md "Rare classes"): none, median-frequency balancing (Eigen & Fergus 2015,
# SegNet) or ENet's 1 / ln(1.02 + p_c) (Paszke et al. 2016)
CLASS_WEIGHTS = ("none", "median_frequency", "enet")
Precision, ClassWeights, Convention = one_of(*PRECISIONS), one_of(*CLASS_WEIGHTS), one_of(*EVAL_CONVENTIONS)
FiniteNonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TrainConfig(Section):
    """Training recipe shared by every method (params.yaml ``train``).

    The schedule's length is given in optimiser steps (``steps``, ``warmup_steps``) or in epochs of
    the training split (``epochs``, ``warmup_epochs``; the other of each pair null), which the
    trainer converts with :meth:`in_steps` once it knows the split's size."""

    where: ClassVar[str] = "train"
    backbone: Annotated[str, Field(pattern=r"\S"), Allowed("'tiny' or a timm model name")] = (
        "tiny"  # the encoder: tiny CNN or a timm model
    )
    pretrained: bool = False  # ImageNet weights through timm (needs network or a cache)
    decoder_dim: PositiveInt = 64  # all-MLP decoder width
    steps: PositiveInt | None = 300  # optimiser steps (null: given as epochs)
    epochs: PositiveFinite | None = None  # passes over the training split (null: given as steps)
    batch_size: PositiveInt = 8  # images per optimiser step over all processes (the global batch under torchrun)
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3  # peak learning rate (AdamW)
    weight_decay: FiniteNonNegative = 0.01  # AdamW's decoupled weight decay
    warmup_steps: NonNegativeInt | None = 30  # linear warm-up from lr * warmup_start to lr (null: warmup_epochs)
    warmup_epochs: FiniteNonNegative | None = None  # the warm-up in epochs (null: warmup_steps)
    warmup_start: Annotated[float, Field(gt=0, le=1)] = 1e-6  # the warm-up's first lr, as a fraction of lr
    poly_power: FiniteNonNegative = 0.9  # polynomial decay after warm-up
    augment: bool = True  # random horizontal / vertical flips per sample
    # random rescale of each sample by a factor uniform in [low, high], then cut back to the tile size
    # (mmsegmentation's RandomResize + RandomCrop; benchmark/augment.py); null: none
    scale_range: Annotated[list[PositiveFinite], Field(min_length=2, max_length=2)] | None = None
    checkpoint_every: PositiveInt = 100  # steps between resumable checkpoints
    num_workers: NonNegativeInt = 0  # DataLoader workers
    device: Device = "auto"  # "auto", "cpu", "cuda", "cuda:1", ... (under torchrun: cuda:LOCAL_RANK)
    precision: Precision = "fp32"  # bfloat16 autocast of the training step (weights stay fp32)
    channels_last: bool = False  # the method's weights and the 4-D inputs in channels_last memory format
    compile: bool = False  # torch.compile each direct child module of the method (docs/training.md)
    class_weights: ClassWeights = "median_frequency"  # the cross-entropy's class weights

    @model_validator(mode="after")
    def _one_unit_each(self) -> TrainConfig:
        for steps, epochs in (("steps", "epochs"), ("warmup_steps", "warmup_epochs")):
            if (getattr(self, steps) is None) == (getattr(self, epochs) is None):
                given = getattr(self, steps) if getattr(self, steps) is not None else getattr(self, epochs)
                allowed = f"given with exactly one of {steps} and {epochs} (the other null)"
                raise FieldError(self.where, steps, given, allowed)
        return self

    @model_validator(mode="after")
    def _ordered_scale_range(self) -> TrainConfig:
        if self.scale_range is not None and self.scale_range[0] > self.scale_range[1]:
            raise FieldError(self.where, "scale_range", self.scale_range, "[low, high] with 0 < low <= high")
        return self

    @model_validator(mode="after")
    def _warmup_within_steps(self) -> TrainConfig:
        for total, warmup in (("steps", "warmup_steps"), ("epochs", "warmup_epochs")):
            length, ramp = getattr(self, total), getattr(self, warmup)
            if length is not None and ramp is not None and ramp >= length:
                raise FieldError(self.where, warmup, ramp, f"in [0, {total}) = [0, {length})")
        return self

    @property
    def total_steps(self) -> int:
        """``steps``, of a recipe in steps; one in epochs has none until :meth:`in_steps` converts it."""
        if self.steps is None:
            raise ValueError(
                f"{self.where}.steps is null (the schedule is in epochs): convert with in_steps(num_train)"
            )
        return self.steps

    def steps_per_epoch(self, num_train: int) -> int:
        """Optimiser steps in one pass over ``num_train`` training tiles: ``num_train // batch_size``
        (the trainer drops each epoch's incomplete last batch)."""
        return num_train // self.batch_size

    def in_steps(self, num_train: int) -> TrainConfig:
        """This recipe with its schedule in steps for a training split of ``num_train`` tiles: ``epochs``
        and ``warmup_epochs`` become ``round(epochs * steps_per_epoch)`` steps (at least 1 step, a
        warm-up below the total). A recipe already in steps comes back unchanged."""
        if self.epochs is None and self.warmup_epochs is None:
            return self
        per_epoch = self.steps_per_epoch(num_train)
        steps = self.steps if self.epochs is None else max(1, round(self.epochs * per_epoch))
        warmup = self.warmup_steps if self.warmup_epochs is None else round(self.warmup_epochs * per_epoch)
        assert steps is not None and warmup is not None  # one of each pair is given (_one_unit_each)
        if warmup >= steps:
            key = "warmup_steps" if self.warmup_epochs is None else "warmup_epochs"
            split = f"{per_epoch} per epoch = {num_train} tiles // batch {self.batch_size}"
            schedule = f"the {steps} steps of the schedule ({split})"
            problem = None if self.warmup_epochs is None else f"gives {warmup} warm-up steps, not fewer than {schedule}"
            raise FieldError(self.where, key, getattr(self, key), f"fewer than {schedule}", problem)
        return self.model_copy(update={"steps": steps, "warmup_steps": warmup, "epochs": None, "warmup_epochs": None})


class EvalConfig(Section):
    """Evaluation settings (params.yaml ``evaluate``)."""

    where: ClassVar[str] = "evaluate"
    batch_size: PositiveInt = 16  # test tiles per forward pass
    device: Device = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    sample_tiles: NonNegativeInt = 3  # test tiles whose predictions are kept for the report's qualitative panel
    # a missing modality: "mask" (zeroed and masked out) or "zero" (zeroed, not masked); docs/protocol.md
    convention: Convention = "mask"


def _repeated(values: Sequence[Any]) -> list[Any]:
    return sorted({v for v in values if values.count(v) > 1})


class ReportConfig(Section):
    """Report settings (params.yaml ``report``)."""

    where: ClassVar[str] = "report"
    reference: str = "sgma-complete"  # the run every run is compared with
    failure_probs: list[Annotated[float, Field(ge=0, lt=1)]] = [0.05, 0.1, 0.2]  # p of E_p[mIoU]
    bootstrap_samples: PositiveInt = 1000  # replicates of the paired bootstrap
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95  # of the bootstrap interval
    bootstrap_seed: NonNegativeInt = 0  # seed of the bootstrap's resampling
    # rows of the ablation table, each trained under every protocol present: label -> method; the
    # first is the row every other is compared with (params.yaml: SGMA's none / SGF / MAS / both)
    ablation: Annotated[
        dict[Annotated[str, Field(pattern=r"\S")], str], Allowed("a mapping of row label -> method name")
    ] = {}

    @model_validator(mode="after")
    def _ablation_rows(self) -> ReportConfig:
        methods = list(self.ablation.values())
        if _repeated(methods):
            raise FieldError(self.where, "ablation", self.ablation, "each method once", f"repeats {_repeated(methods)}")
        if len(methods) == 1:
            allowed = "{} (no ablation table) or 2+ rows: the first is the base the others are compared with"
            raise FieldError(self.where, "ablation", self.ablation, allowed)
        return self


SCENARIO_KINDS = ("block_missing", "pixel_missing", "gaussian", "salt_pepper", "speckle")
Share = Annotated[float, Field(gt=0, le=1)]  # a fraction of pixels, or speckle's variance = 1 / looks <= 1


class ScenarioConfig(Section):
    """Corrupted-input scenarios run at evaluation besides the missing subsets (params.yaml
    ``scenarios``; docs/scenarios.md). Every modality stays available; one modality at a time is
    corrupted at each level of each kind. An empty level list turns a kind off; levels increase."""

    where: ClassVar[str] = "scenarios"
    seed: NonNegativeInt = 0  # masks and noise are drawn from (seed, kind, modality, tile): identical in every run
    # modalities to corrupt, one at a time (None: every modality)
    modalities: Annotated[
        Annotated[list[str], Field(min_length=1)] | None,
        Allowed("null (every modality) or a non-empty list of distinct modality names"),
    ] = None
    block_size: PositiveInt = 8  # px, side of the square blocks that block_missing zeroes
    block_missing: list[Share] = [0.25, 0.5, 0.75]  # fraction zeroed
    pixel_missing: list[Share] = [0.25, 0.5, 0.75]  # fraction zeroed
    gaussian: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = [0.25, 0.5, 1.0]  # std, channel stds
    salt_pepper: list[Share] = [0.05, 0.1, 0.2]  # fraction of pixels
    speckle: list[Share] = [0.25, 0.5, 1.0]  # variance = 1 / looks (a SAR image has at least one look)

    @model_validator(mode="after")
    def _distinct_and_increasing(self) -> ScenarioConfig:
        if self.modalities is not None and _repeated(self.modalities):
            allowed = "null (every modality) or a non-empty list of distinct modality names"
            problem = f"repeats {_repeated(self.modalities)}; allowed: {allowed}"
            raise FieldError(self.where, "modalities", self.modalities, allowed, problem)
        for kind in SCENARIO_KINDS:
            levels = getattr(self, kind)
            allowed = "levels in increasing order, each once (the curves run from mild to severe)"
            if not all(a < b for a, b in zip(levels, levels[1:])):
                raise FieldError(self.where, kind, levels, allowed, f"is not allowed; {allowed}")
        return self


def resolve_device(name: str) -> torch.device:  # noqa: F821 - torch imported lazily
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
