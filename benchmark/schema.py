"""The whole params.yaml checked at once, before any compute (:func:`validate_params`).

:func:`load_config` reads and checks the file and returns the typed result. The configure stage
calls it first, before every other stage of ``dvc repro``, so a bad file is refused before any
compute; report and diagnose call it too. (download and prepare check only their data set's
section: :mod:`benchmark.data.section`; evaluate its two sections: :func:`benchmark.config.load_section`.)
The first problem raises a :class:`~benchmark.config.ParamsError` (also a ``KeyError``,
``TypeError`` or ``ValueError``) whose message reads ``<file>: <dotted.key>: <value> ... <what is
allowed>``. In two steps:

1. the structure, by one pydantic model (:func:`params_model`, whose JSON Schema
   :func:`json_schema` an editor checks the file with): required ``datasets``, ``runs``, ``seeds``
   and ``train``; optional ``method_modules``, ``method_params``, ``variants``, ``protocols``,
   ``evaluate``, ``report``, ``scenarios``; each registered data set's section under its name
   (listed in ``datasets`` or not; null means its defaults); no other key; every section's types
   and bounds (:mod:`benchmark.config`); lists without repeats;
2. what refers to what: registered data sets and methods (after importing ``method_modules``),
   runs ``<method>-<protocol>`` of a registered method or variant and a built-in or defined
   protocol; each protocol entry's keys for its kind, a staged one's stages; ``bernoulli``'s
   ``drop_prob`` holds one probability per modality of every listed data set; every listed data
   set has its section, which builds its source (no file is read) and whose ``modalities``
   selection names its modalities; ``method_params``: one entry per listed method, only keys its
   constructor takes, with the annotated types, none the data set sets (``modalities``,
   ``num_classes``, ``ignore_index``); ``variants``: named variants of registered methods (their
   params checked as a ``method_params`` entry, which they replace), named unlike any method;
   ``report.reference`` is a listed run, ``report.ablation`` names methods or variants; every name
   of ``scenarios.modalities`` is a modality of every listed data set.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from benchmark.config import (
    Allowed,
    EvalConfig,
    FieldError,
    NonNegativeInt,
    ParamsKeyError,
    ParamsTypeError,
    ParamsValueError,
    ReportConfig,
    ScenarioConfig,
    Section,
    TrainConfig,
    conforms,
    describe,
    field_comments,
    load_params,
    one_of,
    params_error,
)
from benchmark.errors import did_you_mean
from benchmark.methods.registry import accepted_params
from benchmark.protocol import BUILTIN_PROTOCOLS, PROTOCOL_KINDS, PROTOCOL_NAME, Protocol, builtin_protocol, parse_run

if TYPE_CHECKING:
    from benchmark.data import DatasetSource

PROTOCOL_KEYS = {  # the keys of a protocols entry, per kind
    "bernoulli": ("kind", "drop_prob"),
    "staged": ("kind", "fraction", "first", "then"),
    **{kind: ("kind",) for kind in BUILTIN_PROTOCOLS},
}
# constructor arguments the pipeline takes from the data set; a method_params entry may not set them
DATASET_KEYS = ("modalities", "num_classes", "ignore_index", "class_weight")  # class_weight: train.class_weights


def _distinct(values: list[Any]) -> list[Any]:
    repeated = sorted({repr(v) for v in values if values.count(v) > 1})
    if repeated:
        raise PydanticCustomError("repeats", "repeats {repeated}", {"repeated": repeated})
    return values


def _names(item: Any, what: str) -> Any:
    """A non-empty list of ``item`` (``what``, in words) without repeats (``datasets``, ``runs``, ``seeds``)."""
    allowed = f"a non-empty list of {what}, each item once (one item per line: - item)"
    return Annotated[
        list[item], Field(min_length=1), AfterValidator(_distinct), Allowed(allowed)  # type: ignore[valid-type]
    ]


STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
Text = Annotated[Any, WithJsonSchema({"type": "string"})]  # checked by name after the structure: see resolve_protocols


class ProtocolEntry(BaseModel):
    """A ``protocols`` entry: ``kind`` and that kind's keys (:data:`PROTOCOL_KEYS`)."""

    model_config = STRICT
    # the kind of draw: bernoulli, staged or a built-in protocol's name (docs/protocol.md)
    kind: one_of(*PROTOCOL_KINDS)  # type: ignore[valid-type]
    # bernoulli: one probability per modality, in [0, 1)
    drop_prob: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=1)] | None = None
    fraction: Annotated[float, Field(gt=0, lt=1)] | None = None  # staged: the share of the steps under `first`
    first: Text = None  # staged: a protocol that is not staged
    then: Text = None  # staged: a protocol that is not staged


class Variant(BaseModel):
    """A ``variants`` entry: a registered method with its own parameters (none inherited)."""

    model_config = STRICT
    method: str  # the registered method it builds
    params: dict[str, Any] | None = None  # its constructor arguments (null: none)


def _summary(cls: type) -> str:
    """The first line of ``cls``'s docstring."""
    return (cls.__doc__ or "").strip().splitlines()[0]


TOP_LEVEL = {  # the file's own keys (besides one section per registered data set): (type, default, description)
    "datasets": (_names(str, "registered data sets"), ..., "the data sets to run (each has its section below)"),
    "runs": (_names(str, "runs <method>-<protocol>"), ..., "the runs: a method trained under a protocol"),
    "seeds": (_names(NonNegativeInt, "ints >= 0"), ..., "every run is trained and evaluated once per seed"),
    "train": (TrainConfig, ..., _summary(TrainConfig)),
    "method_modules": (list[str] | None, None, "extra Python modules whose @register_method classes to import"),
    "method_params": (dict[str, dict[str, Any] | None] | None, None, "each method's constructor arguments"),
    "variants": (dict[str, Variant] | None, None, "named variants of registered methods, with their own params"),
    "protocols": (dict[str, ProtocolEntry] | None, None, "training protocols besides the built-in ones"),
    "evaluate": (EvalConfig | None, None, _summary(EvalConfig)),
    "report": (ReportConfig | None, None, _summary(ReportConfig)),
    "scenarios": (ScenarioConfig | None, None, _summary(ScenarioConfig)),
}


@functools.cache
def params_model() -> type[BaseModel]:
    """The pydantic model of the whole params.yaml: :data:`TOP_LEVEL` and, under its name, each
    registered data set's section (its ``config_type`` and ``modalities``). Its JSON Schema is
    :func:`json_schema`'s."""
    from benchmark.data.source import get_dataset, list_datasets

    selection = Annotated[
        Annotated[list[str], Field(min_length=1)] | None,
        Allowed("null (every modality) or a non-empty list of distinct modalities of the data set"),
    ]
    sections = {}
    for name in list_datasets():
        config = get_dataset(name).config_type
        modalities = Field(None, description="the modalities to use (null: every modality of the data set)")
        section = create_model(f"{config.__name__}Section", __base__=config, modalities=(selection, modalities))
        described = Field(None, alias=name, description=f"the {name} data set (docs/datasets.md)")
        sections[name.replace("-", "_")] = (section | None, described)
    top = {key: (kind, Field(default, description=text)) for key, (kind, default, text) in TOP_LEVEL.items()}
    return create_model(
        "Params", __config__=ConfigDict(strict=True, extra="forbid", populate_by_name=False), **top, **sections
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of params.yaml (draft 2020-12): what an editor checks the file against while
    it is typed (``# yaml-language-server: $schema=...``). Cross-references (a run's method, a
    protocol a run names, a method's parameters) are :func:`validate_params`'s alone."""
    schema = params_model().model_json_schema()
    for name, definition in schema.get("$defs", {}).items():
        _describe(definition, _comments(name))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "params.yaml"}


def _models(cls: type[BaseModel]) -> Iterator[type[BaseModel]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _models(sub)


def _comments(name: str) -> dict[str, str]:
    """The field comments (:func:`field_comments`) of the model the JSON Schema calls ``name``, over its bases."""
    for cls in [*_models(Section), ProtocolEntry, Variant]:
        if cls.__name__ == name:
            found: dict[str, str] = {}
            for base in reversed(cls.__mro__):  # pydantic's BaseModel declares no field of params.yaml
                if issubclass(base, BaseModel) and base is not BaseModel:
                    found.update(field_comments(base))
            return found
    return {}


def _describe(definition: dict[str, Any], comments: Mapping[str, str]) -> None:
    """Each property of ``definition`` without a description gets its field's comment."""
    for key, prop in definition.get("properties", {}).items():
        if key in comments and "description" not in prop:
            prop["description"] = comments[key]


@dataclasses.dataclass(frozen=True)
class ValidatedParams:
    """A params.yaml that passed :func:`validate_params`, as typed values."""

    datasets: list[str]
    runs: list[str]  # <method>-<protocol>, as listed
    methods: list[str]  # the methods of the runs, each once, in order
    protocols: dict[str, Protocol]  # every defined protocol and every built-in one a run names
    seeds: list[int]
    method_modules: list[str]
    method_params: dict[str, dict[str, Any]]  # every entry of the file (registered methods), null -> {}
    variants: dict[str, tuple[str, dict[str, Any]]]  # variant name -> (registered method, its params)
    sources: dict[str, DatasetSource]  # listed data set -> its DatasetSource instance (built from its section)
    train: TrainConfig
    evaluate: EvalConfig
    report: ReportConfig
    scenarios: ScenarioConfig

    def run_parts(self, run: str) -> tuple[str, Protocol]:
        """``"muss-complete" -> ("muss", the complete Protocol)`` for a listed run (``KeyError`` otherwise)."""
        if run not in self.runs:
            raise ParamsKeyError(
                f"run {run!r} is not listed under runs: {', '.join(self.runs)}" + did_you_mean(run, self.runs)
            )
        method, protocol = parse_run(run)
        return method, self.protocols[protocol]

    def method_spec(self, method: str) -> tuple[str, dict[str, Any]]:
        """(the registered method that builds ``method``, its constructor parameters): a variant's
        method and params, or ``method`` itself and its ``method_params`` entry."""
        if method in self.variants:
            return self.variants[method]
        return method, self.method_params.get(method, {})


def registered_datasets() -> list[str]:
    """Names of every registered data set, sorted."""
    from benchmark.data.source import list_datasets

    return list_datasets()


def _registered_names(values: list[str], key: str, where: str, known: list[str], what: str) -> list[str]:
    for i, value in enumerate(values):
        if value not in known:
            raise ParamsKeyError(
                f"{where}: {key}[{i}]: {value!r} is not allowed; must be {what}: {', '.join(known)}"
                + did_you_mean(value, known)
            )
    return values


def _import_modules(modules: list[str], where: str) -> None:
    from benchmark.methods import import_method_modules

    for i, module in enumerate(modules):
        try:
            import_method_modules([module])
        except ImportError as err:
            raise ParamsValueError(
                f"{where}: method_modules[{i}]: {module!r} is not allowed; must be an importable module ({err})"
            ) from None


def _method_params(
    entries: Mapping[str, Any], methods: list[str], sources: Mapping[str, Any], where: str
) -> dict[str, dict[str, Any]]:
    from benchmark.methods.catalog import list_methods

    known = list_methods()
    for name in entries:
        if name not in known:
            raise ParamsKeyError(
                f"{where}: method_params: {name!r} is not allowed; must be a registered method: {', '.join(known)}"
                + did_you_mean(name, known)
            )
    for name in methods:
        if name not in entries:
            raise ParamsKeyError(
                f"{where}: method_params.{name}: missing; every listed method needs an entry ({name}: {{}} for "
                "its defaults)"
            )
    return {
        name: _method_entry(name, values, f"method_params.{name}", sources, where) for name, values in entries.items()
    }


def _method_entry(method: str, values: Any, key: str, sources: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Constructor parameters of registered ``method`` at ``key`` (null -> ``{}``): only keys its
    constructor takes, with the annotated types, none that the data set sets."""
    from benchmark.methods.catalog import get_method_class

    values = values or {}
    cls = get_method_class(method)
    accepted, open_ = accepted_params(cls)
    for arg, value in values.items():
        if arg in getattr(cls, "dataset_facts", ()):
            raise ParamsValueError(
                f"{where}: {key}.{arg}: {value!r} is not allowed; {method} takes it from the data set, "
                "not from method_params"
            )
        if arg in DATASET_KEYS:
            facts = {
                "modalities": {d: dict(s.modalities) for d, s in sources.items()},
                "num_classes": {d: len(s.classes) for d, s in sources.items()},
                "ignore_index": {d: s.ignore_index for d, s in sources.items()},
                "class_weight": "the training labels, by train.class_weights",
            }[arg]
            raise ParamsValueError(
                f"{where}: {key}.{arg}: {value!r} is not allowed; set by the data set ({facts}), "
                f"not by method_params; allowed here: {sorted(k for k in accepted if k not in DATASET_KEYS)}"
            )
        if arg not in accepted:
            if open_:
                continue
            allowed = sorted(k for k in accepted if k not in DATASET_KEYS)
            raise ParamsKeyError(f"{where}: {key}: unknown key(s) [{arg!r}]; allowed: {allowed}")
        if not conforms(value, accepted[arg]):
            raise ParamsTypeError(f"{where}: {key}.{arg}: {value!r} is not allowed; must be {describe(accepted[arg])}")
    return dict(values)


def _variants(
    entries: Mapping[str, Variant], known: list[str], sources: Mapping[str, Any], where: str
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The ``variants`` section: ``name -> (registered method, its checked params)``."""
    out = {}
    for name, entry in entries.items():
        at = f"{where}: variants.{name}"
        if not name or name != name.lower() or not all(c.isalnum() or c in "-_" for c in name):
            raise ParamsValueError(f"{at}: the name is not allowed; use lower-case letters, digits, '-' or '_'")
        if name in known:
            raise ParamsValueError(f"{at}: the name is not allowed; it is a registered method's: pick another")
        if entry.method not in known:
            raise ParamsKeyError(
                f"{at}.method: {entry.method!r} is not allowed; must be a registered method: {', '.join(known)}"
                + did_you_mean(entry.method, known)
            )
        out[name] = (entry.method, _method_entry(entry.method, entry.params, f"variants.{name}.params", sources, where))
    return out


def resolve_protocols(entries: Mapping[str, ProtocolEntry], where: str) -> dict[str, Protocol]:
    """The ``protocols`` section (typed by :class:`ProtocolEntry`) -> ``{name: Protocol}`` with the
    built-in ones (``complete``, ``uniform``, ``size_uniform``, ``drop_one``) first. An entry gives
    its kind's keys (:data:`PROTOCOL_KEYS`) and no other; a staged one's ``first`` / ``then`` name
    built-in or defined protocols that are not staged."""
    key = "protocols"
    resolved = {name: builtin_protocol(name) for name in BUILTIN_PROTOCOLS}
    pending: dict[str, ProtocolEntry] = {}
    for name, entry in entries.items():
        at = f"{where}: {key}.{name}"
        if PROTOCOL_NAME.fullmatch(name) is None:
            raise ParamsValueError(
                f"{where}: {key}: name {name!r} is not allowed; must be lower-case letters, digits and _ "
                "(no -: a run is named <method>-<protocol>)"
            )
        if name in BUILTIN_PROTOCOLS:
            raise ParamsValueError(f"{at}: is a built-in protocol and cannot be redefined; pick another name")
        kind, given, takes = entry.kind, list(entry.model_fields_set), PROTOCOL_KEYS[entry.kind]
        unknown = [k for k in given if k not in takes]
        if unknown:
            raise ParamsKeyError(f"{at}: unknown key(s) {unknown} for kind {kind!r}; allowed: {list(takes)}")
        missing = [k for k in takes if k not in given]
        if missing:
            raise ParamsKeyError(f"{at}: missing {missing}; kind {kind!r} takes {list(takes)}")
        if kind == "bernoulli":
            resolved[name] = Protocol(name, kind, drop_prob=tuple(entry.drop_prob or ()))
        elif kind == "staged":
            pending[name] = entry
        else:
            resolved[name] = Protocol(name, kind)
    for name, entry in pending.items():
        stages = []
        for part in ("first", "then"):
            value = getattr(entry, part)
            if not isinstance(value, str) or value not in resolved or resolved[value].kind == "staged":  # no nesting
                allowed = [n for n, p in resolved.items() if p.kind != "staged"]
                raise ParamsValueError(
                    f"{where}: {key}.{name}.{part}: {value!r} is not allowed; must be a protocol that is not "
                    f"staged: {', '.join(allowed)}"
                )
            stages.append(resolved[value])
        resolved[name] = Protocol(name, "staged", fraction=entry.fraction, first=stages[0], then=stages[1])
    return resolved


def _check_runs_on_datasets(
    runs: list[str],
    variants: Mapping[str, tuple[str, dict[str, Any]]],
    method_params: Mapping[str, dict[str, Any]],
    sources: Mapping[str, DatasetSource],
    where: str,
) -> None:
    """Build, once per listed data set, every method of ``runs`` that takes facts from the data set
    (``dataset_facts``: the floors' rules, which are cheap to build), so that one the data set cannot
    serve (a missing band or class) is refused now, before any compute. The prepared normalisation is
    not known yet: mean 0 and std 1 stand in for it."""
    from benchmark.methods.catalog import create_method, get_method_class

    for run in runs:
        method = parse_run(run)[0]
        registered, own = variants[method] if method in variants else (method, method_params[method])
        wanted = getattr(get_method_class(registered), "dataset_facts", ())
        if not wanted:
            continue
        for name, source in sources.items():
            facts = {
                "dataset": name,
                "classes": list(source.classes),
                "bands": {m: list(source.bands.get(m, ())) for m in source.modalities},
                "normalisation": {m: {"mean": [0.0] * c, "std": [1.0] * c} for m, c in source.modalities.items()},
            }
            try:
                create_method(
                    registered,
                    modalities=dict(source.modalities),
                    num_classes=len(source.classes),
                    ignore_index=source.ignore_index,
                    **{key: facts[key] for key in wanted},
                    **own,
                )
            except (TypeError, ValueError) as err:
                raise ParamsValueError(f"{where}: runs: {run!r} on data set {name!r}: {err}") from None


def _check_drop_prob(protocols: Mapping[str, Protocol], sources: Mapping[str, Any], where: str) -> None:
    """Every ``bernoulli`` protocol of ``protocols`` (the ones the runs use; also inside a staged one)
    has one probability per modality of every listed data set."""
    for protocol in protocols.values():
        parts = [protocol] if protocol.kind != "staged" else [protocol.first, protocol.then]
        for part in parts:
            if part is None or part.drop_prob is None:
                continue
            for name, source in sources.items():
                modalities = list(source.modalities)
                if len(part.drop_prob) != len(modalities):
                    raise ParamsValueError(
                        f"{where}: protocols.{part.name}.drop_prob: {list(part.drop_prob)!r} is not allowed; must "
                        f"hold one probability per modality of every listed data set: {name} has {len(modalities)} "
                        f"modalities {modalities}"
                    )


def _check_protocol_names(protocols: Mapping[str, Protocol], methods: list[str], where: str) -> None:
    """No protocol is named like the last ``-`` part of a method (``mas`` would read ``sgma-mas`` as sgma under mas)."""
    tails = {m.rpartition("-")[2]: m for m in methods if "-" in m}
    for name in protocols:
        if name in tails:
            raise ParamsValueError(
                f"{where}: protocols.{name}: the name is not allowed; it ends the method name {tails[name]!r}, so "
                f"the run {tails[name]!r} would read as {tails[name].rpartition('-')[0]!r} under {name!r}: pick another"
            )


def _check_switch_steps(protocols: Mapping[str, Protocol], train: TrainConfig, where: str) -> None:
    """Every staged protocol of ``protocols`` (the ones the runs use) switches strictly inside the
    ``train.steps`` steps. A schedule given in epochs is checked by the trainer, which converts it."""
    if train.steps is not None:
        for name, protocol in protocols.items():
            protocol.check_switch(train.steps, f"{where}: protocols.{name}.fraction")


def _runs(runs: list[str], protocols: Mapping[str, Protocol], known: list[str], where: str) -> list[str]:
    """The ``runs`` list: each ``<method>-<protocol>`` of a registered method and a known protocol."""
    for i, run in enumerate(runs):
        at = f"{where}: runs[{i}]"
        if run in known:
            raise ParamsValueError(
                f"{at}: {run!r} is a method, not a run; must be <method>-<protocol>, e.g. {run}-complete "
                f"(protocols: {', '.join(protocols)})"
            )
        try:
            method, protocol = parse_run(run)
        except ValueError as err:
            raise ParamsValueError(f"{at}: {err}") from None
        if method not in known:
            raise ParamsKeyError(
                f"{at}: {run!r} is not allowed; method {method!r} is not registered: {', '.join(known)}"
                + did_you_mean(method, known)
            )
        if protocol not in protocols:
            raise ParamsKeyError(
                f"{at}: {run!r} is not allowed; protocol {protocol!r} is neither built in nor defined under "
                f"protocols: {', '.join(protocols)}" + did_you_mean(protocol, protocols)
            )
    return runs


def _check_scenario_modalities(scenarios: ScenarioConfig, sources: Mapping[str, Any], where: str) -> None:
    """Every name of ``scenarios.modalities`` is a modality of every listed data set (:func:`scenario_cases`)."""
    from benchmark.scenarios import scenario_cases

    for name, source in sources.items():
        try:
            scenario_cases(scenarios, list(source.modalities), source.sar_modalities, dataset=name)
        except FieldError as err:
            raise err.at(f"{where}: scenarios") from None


def _check_replaced_keys(params: Mapping[str, Any], where: str) -> None:
    """Keys of older files (``methods``, ``train.drop_prob``), each refused with what replaced it."""
    if "methods" in params and "runs" not in params:
        raise ParamsKeyError(
            f"{where}: methods: replaced by runs: list each method under a training protocol, e.g. "
            "runs: [muss-complete, muss-uniform] (docs/protocol.md)"
        )
    if isinstance(params.get("train"), Mapping) and "drop_prob" in params["train"]:
        raise ParamsKeyError(
            f"{where}: train.drop_prob: replaced by named training protocols: define one under protocols "
            "(e.g. moddrop: {kind: bernoulli, drop_prob: [0.5, 0.5, 0.5]}) and list runs as <method>-moddrop "
            "(docs/protocol.md)"
        )


def _check_report(report: ReportConfig, given: bool, runs: list[str], names: list[str], where: str) -> None:
    """``report.reference`` (``given``: written in the file, else the default) is a listed run, and
    ``report.ablation`` names registered methods or variants (``names``)."""
    if report.reference not in runs:
        default = "" if given else " (the default)"
        raise ParamsValueError(
            f"{where}: report.reference: {report.reference!r}{default} is not one of the runs {runs}; "
            "allowed: a listed run" + did_you_mean(report.reference, runs)
        )
    unknown = [m for m in report.ablation.values() if m not in names]
    if unknown:
        raise ParamsKeyError(
            f"{where}: report.ablation: method {unknown[0]!r} is not allowed; must be a registered method or a "
            f"variant: {', '.join(names)}" + did_you_mean(unknown[0], names)
        )


def load_config(path: str | Path) -> ValidatedParams:
    """Read params.yaml (:func:`~benchmark.config.load_params`) and validate it once: the typed
    configuration the train, evaluate and report stages start from."""
    return validate_params(load_params(path), str(path))


def validate_params(params: Mapping[str, Any], where: str) -> ValidatedParams:
    """Check the whole params mapping (see the module docstring): its structure by
    :func:`params_model`, then what refers to what; the first problem raises a
    :class:`~benchmark.config.ParamsError` naming ``where`` (the file), the key, the value and
    what is allowed. Imports ``method_modules``; builds each data-set source (reads no data file)."""
    from benchmark.data.section import checked_source
    from benchmark.methods.catalog import list_methods

    if not isinstance(params, Mapping):
        raise ParamsTypeError(f"{where}: {type(params).__name__} at the top level is not allowed; must be a mapping")
    _check_replaced_keys(params, where)
    try:
        typed = params_model().model_validate(params)
    except ValidationError as err:
        raise params_error(err, params_model(), params, where, joiner=": ") from None

    known_datasets = registered_datasets()
    datasets = _registered_names(typed.datasets, "datasets", where, known_datasets, "a registered data set")
    _import_modules(typed.method_modules or [], where)
    protocols = resolve_protocols(typed.protocols or {}, where)
    for name in datasets:
        if name not in params:
            raise ParamsKeyError(
                f"{where}: {name}: missing; every listed data set needs its section ({name}: null for its defaults)"
            )
    # every section present, listed or not, is built: a typo fails now, not on first use
    built = {name: checked_source(name, params[name], where) for name in known_datasets if name in params}
    sources = {name: built[name] for name in datasets}

    variants = _variants(typed.variants or {}, list_methods(), sources, where)
    names = [*list_methods(), *variants]  # what a run may train
    _check_protocol_names(protocols, names, where)
    runs = _runs(typed.runs, protocols, names, where)
    methods = list(dict.fromkeys(parse_run(run)[0] for run in runs))
    method_params = _method_params(typed.method_params or {}, [m for m in methods if m not in variants], sources, where)
    _check_runs_on_datasets(runs, variants, method_params, sources, where)
    train = typed.train
    used = {name: protocols[name] for name in dict.fromkeys(parse_run(r)[1] for r in runs)}  # by the runs
    _check_switch_steps(used, train, where)
    _check_drop_prob(used, sources, where)
    report = typed.report or ReportConfig()
    _check_report(report, bool((params.get("report") or {}).get("reference")), runs, names, where)
    scenarios = typed.scenarios or ScenarioConfig()
    _check_scenario_modalities(scenarios, sources, where)
    return ValidatedParams(
        datasets=list(datasets),
        runs=list(runs),
        methods=methods,
        protocols=protocols,
        seeds=list(typed.seeds),
        method_modules=list(typed.method_modules or []),
        method_params=method_params,
        variants=variants,
        sources=sources,
        train=train,
        evaluate=typed.evaluate or EvalConfig(),
        report=report,
        scenarios=scenarios,
    )
