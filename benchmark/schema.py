"""The whole params.yaml checked at once, before any compute (:func:`validate_params`).

:func:`benchmark.config.load_params` calls it, so every stage (download, prepare, train, evaluate,
report) refuses a bad file at start; :func:`load_config` returns its typed result, which the
train, evaluate and report stages use instead of building their sections again. The first problem raises a
:class:`~benchmark.config.ParamsError` (also a ``KeyError``, ``TypeError`` or ``ValueError``) whose
message reads ``<file>: <dotted.key>: <value> ... <what is allowed>``. Checked:

- top level: a mapping with ``datasets``, ``methods``, ``seeds`` and ``train``; optional
  ``method_modules``, ``method_params``, ``evaluate``, ``report``, ``scenarios``; any other key must
  be the section of a registered data set (listed in ``datasets`` or not);
- ``datasets`` / ``methods`` / ``seeds``: non-empty lists without repeats of registered data sets,
  registered methods (after importing ``method_modules``) and ints >= 0;
- every data-set section present (a listed data set's is required; null means its defaults): no
  size <= 0, and its source class builds from it (the source's typed config; no file is read);
  its optional ``modalities`` is a non-empty list of distinct modalities of that data set;
  the source's facts agree (one palette colour per class, display bands within the channels);
- ``method_params``: one entry per listed method (null or a mapping), only keys its constructor
  takes, with the annotated types; keys the data set sets (``modalities``, ``num_classes``,
  ``ignore_index``) are refused;
- ``train`` / ``evaluate`` / ``report`` / ``scenarios``: their typed configs
  (:func:`~benchmark.config.from_mapping`); ``train.drop_prob`` holds one probability per modality
  of every listed data set; ``report.reference`` is a listed method; every name of
  ``scenarios.modalities`` is a modality of every listed data set.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.config import (
    EvalConfig,
    FieldError,
    ParamsError,
    ParamsKeyError,
    ParamsTypeError,
    ParamsValueError,
    ReportConfig,
    ScenarioConfig,
    TrainConfig,
    _matches,
    describe,
    from_mapping,
    load_params,
)

if TYPE_CHECKING:
    from benchmark.data import DatasetSource

REQUIRED_KEYS = ("datasets", "methods", "seeds", "train")
OPTIONAL_KEYS = ("method_modules", "method_params", "evaluate", "report", "scenarios")
# constructor arguments the pipeline takes from the data set; a method_params entry may not set them
DATASET_KEYS = ("modalities", "num_classes", "ignore_index")
# sizes of a data-set section that must be >= 1 (checked before the source's own checks)
SIZE_KEYS = ("tile_size", "stride", "num_train", "num_test", "block_size", "workers")
SEED_KEYS = ("seed", "split_seed")  # seeds of a data-set section: ints >= 0 (numpy refuses negative seeds)


@dataclasses.dataclass(frozen=True)
class ValidatedParams:
    """A params.yaml that passed :func:`validate_params`, as typed values."""

    datasets: list[str]
    methods: list[str]
    seeds: list[int]
    method_modules: list[str]
    method_params: dict[str, dict[str, Any]]  # every entry of the file (registered methods), null -> {}
    sources: dict[str, DatasetSource]  # listed data set -> its DatasetSource instance (built from its section)
    train: TrainConfig
    evaluate: EvalConfig
    report: ReportConfig
    scenarios: ScenarioConfig


def registered_datasets() -> list[str]:
    """Names of every registered data set, sorted."""
    from benchmark.data.source import list_datasets

    return list_datasets()


def _name_list(params: Mapping[str, Any], key: str, where: str, allow_empty: bool = False) -> list[Any]:
    value = params.get(key) if allow_empty else params[key]
    if value is None and allow_empty:
        return []
    what = "a list" if allow_empty else "a non-empty list"
    if not isinstance(value, list):
        raise ParamsTypeError(f"{where}: {key}: {value!r} is not allowed; must be {what} (one item per line: - item)")
    if not value and not allow_empty:
        raise ParamsValueError(f"{where}: {key}: [] is not allowed; must be {what}")
    repeated = sorted({repr(v) for v in value if value.count(v) > 1})
    if repeated:
        raise ParamsValueError(f"{where}: {key}: {value!r} repeats {', '.join(repeated)}; allowed: each item once")
    return value


def _registered_names(values: list[Any], key: str, where: str, known: list[str], what: str) -> list[str]:
    for i, value in enumerate(values):
        if not isinstance(value, str) or value not in known:
            raise ParamsKeyError(f"{where}: {key}[{i}]: {value!r} is not allowed; must be {what}: {', '.join(known)}")
    return values


def _seeds(params: Mapping[str, Any], where: str) -> list[int]:
    seeds = _name_list(params, "seeds", where)
    for i, seed in enumerate(seeds):
        if not _matches(seed, int):
            raise ParamsTypeError(f"{where}: seeds[{i}]: {seed!r} is not allowed; must be an int >= 0")
        if seed < 0:
            raise ParamsValueError(f"{where}: seeds[{i}]: {seed!r} is not allowed; must be an int >= 0")
    return seeds


def _import_modules(modules: list[Any], where: str) -> None:
    from benchmark.methods import import_method_modules

    for i, module in enumerate(modules):
        if not isinstance(module, str) or not module:
            raise ParamsTypeError(f"{where}: method_modules[{i}]: {module!r} is not allowed; must be a module name")
        try:
            import_method_modules([module])
        except ImportError as err:
            raise ParamsValueError(
                f"{where}: method_modules[{i}]: {module!r} is not allowed; must be an importable module ({err})"
            ) from None


def _reraise_from_source(err: Exception, name: str, where: str) -> ParamsError:
    """A data-set source's own error, located in this file (its messages say ``params.yaml: <name>``)."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    message = message.removeprefix("params.yaml: ")
    if not message.startswith(name):
        message = f"{name}: {message}"
    kind = ParamsKeyError if isinstance(err, KeyError) else ParamsTypeError if isinstance(err, TypeError) else None
    return (kind or ParamsValueError)(f"{where}: {message}")


def build_source(name: str, values: Any, where: str) -> DatasetSource:
    """The data set ``name``'s source built from its params section ``values`` (null: defaults), after
    checking that no size is <= 0 and no seed < 0; errors name ``<where>: <name>.<key>``. Builds only: reads no file."""
    from benchmark.data import build_source as build_data_source

    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParamsTypeError(f"{where}: {name}: {values!r} is not allowed; must be a mapping (or null: defaults)")
    for key in SIZE_KEYS:
        value = values.get(key)
        if _matches(value, int) and value < 1:
            raise ParamsValueError(f"{where}: {name}.{key}: {value!r} is not allowed; must be an int >= 1")
    for key in SEED_KEYS:
        value = values.get(key)
        if _matches(value, int) and value < 0:
            raise ParamsValueError(f"{where}: {name}.{key}: {value!r} is not allowed; must be an int >= 0")
    try:
        source = build_data_source(name, values)
    except (KeyError, TypeError, ValueError) as err:
        raise _reraise_from_source(err, name, where) from None
    check_source_facts(source, where)
    return source


def check_source_facts(source: DatasetSource, where: str) -> None:
    """A data set's class attributes agree: one palette colour per class, display bands within the
    modality's channels (a mismatch is a bug of the data-set class, reported before any compute)."""
    name, classes = source.name, list(source.classes)
    if source.palette is not None and len(source.palette) != len(classes):
        raise ParamsValueError(
            f"{where}: {name}: palette {list(source.palette)!r} has {len(source.palette)} colours for "
            f"{len(classes)} classes {classes}; allowed: one colour per class"
        )
    every = {**type(source).modalities, **source.modalities}  # before a `modalities` selection
    for modality, bands in source.display_bands.items():
        channels = every.get(modality)
        if channels is None or any(not 0 <= b < channels for b in bands):
            raise ParamsValueError(
                f"{where}: {name}: display bands {modality!r}: {list(bands)!r} are not allowed; must be channels "
                f"of one of the modalities {every}"
            )


def accepted_params(cls: type) -> tuple[dict[str, Any], bool]:
    """Keyword arguments the constructor of method class ``cls`` takes -> ({name: annotation}, open).

    Follows ``**kwargs`` up the class hierarchy (a subclass passing them on to ``super().__init__``)
    until an ``__init__`` without ``**kwargs``. ``open`` is True when ``**kwargs`` reach
    ``torch.nn.Module`` or ``object``, which take no keyword arguments: the method consumes them
    itself, so any key is accepted."""
    names: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object or klass.__module__.split(".")[0] == "torch":
            return names, True
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # an annotation that does not resolve: check names only
            hints = {}
        params = list(inspect.signature(init).parameters.values())[1:]
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names[p.name] = hints.get(p.name, Any)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
    return names, True


def _method_params(
    params: Mapping[str, Any], methods: list[str], sources: Mapping[str, Any], where: str
) -> dict[str, dict[str, Any]]:
    from benchmark.methods import get_method_class, list_methods

    entries = params.get("method_params")
    if entries is None:
        entries = {}
    if not isinstance(entries, Mapping):
        raise ParamsTypeError(
            f"{where}: method_params: {entries!r} is not allowed; must be a mapping of method name -> its parameters"
        )
    known = list_methods()
    for name in entries:
        if name not in known:
            raise ParamsKeyError(
                f"{where}: method_params: {name!r} is not allowed; must be a registered method: {', '.join(known)}"
            )
    for name in methods:
        if name not in entries:
            raise ParamsKeyError(
                f"{where}: method_params.{name}: missing; every listed method needs an entry ({name}: {{}} for "
                "its defaults)"
            )
    out: dict[str, dict[str, Any]] = {}
    for name, values in entries.items():
        key = f"method_params.{name}"
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ParamsTypeError(f"{where}: {key}: {values!r} is not allowed; must be a mapping (or {{}})")
        accepted, open_ = accepted_params(get_method_class(name))
        for arg, value in values.items():
            if arg in DATASET_KEYS:
                facts = {
                    "modalities": {d: dict(s.modalities) for d, s in sources.items()},
                    "num_classes": {d: len(s.classes) for d, s in sources.items()},
                    "ignore_index": {d: s.ignore_index for d, s in sources.items()},
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
            if not _matches(value, accepted[arg]):
                raise ParamsTypeError(
                    f"{where}: {key}.{arg}: {value!r} is not allowed; must be {describe(accepted[arg])}"
                )
        out[name] = dict(values)
    return out


def _check_drop_prob(train: TrainConfig, sources: Mapping[str, Any], where: str) -> None:
    if train.drop_prob is None:
        return
    for name, source in sources.items():
        modalities = list(source.modalities)
        if len(train.drop_prob) != len(modalities):
            raise ParamsValueError(
                f"{where}: train.drop_prob: {train.drop_prob!r} is not allowed; must hold one probability per "
                f"modality of every listed data set: {name} has {len(modalities)} modalities {modalities}"
            )


def _check_scenario_modalities(scenarios: ScenarioConfig, sources: Mapping[str, Any], where: str) -> None:
    """Every name of ``scenarios.modalities`` is a modality of every listed data set (:func:`scenario_cases`)."""
    from benchmark.scenarios import scenario_cases

    for name, source in sources.items():
        try:
            scenario_cases(scenarios, list(source.modalities), source.sar_modalities, dataset=name)
        except FieldError as err:
            raise err.at(f"{where}: scenarios") from None


def load_config(path: str | Path) -> ValidatedParams:
    """Read params.yaml (:func:`~benchmark.config.load_params`) and validate it once: the typed
    configuration the train, evaluate and report stages start from."""
    return validate_params(load_params(path, validate=False), str(path))


def validate_params(params: Mapping[str, Any], where: str) -> ValidatedParams:
    """Check the whole params mapping (see the module docstring); the first problem raises a
    :class:`~benchmark.config.ParamsError` naming ``where`` (the file), the key, the value and
    what is allowed. Imports ``method_modules``; builds each data-set source (reads no data file)."""
    from benchmark.methods import list_methods

    if not isinstance(params, Mapping):
        raise ParamsTypeError(f"{where}: {type(params).__name__} at the top level is not allowed; must be a mapping")
    known_datasets = registered_datasets()
    for key in REQUIRED_KEYS:
        if key not in params:
            raise ParamsKeyError(f"{where}: {key}: missing; required top-level keys: {list(REQUIRED_KEYS)}")
    unknown = [k for k in params if k not in REQUIRED_KEYS + OPTIONAL_KEYS and k not in known_datasets]
    if unknown:
        raise ParamsKeyError(
            f"{where}: unknown key(s) {unknown}; allowed: {list(REQUIRED_KEYS + OPTIONAL_KEYS)} "
            f"or a data set's section ({', '.join(known_datasets)})"
        )

    datasets = _registered_names(
        _name_list(params, "datasets", where), "datasets", where, known_datasets, "a registered data set"
    )
    method_modules = _name_list(params, "method_modules", where, allow_empty=True)
    _import_modules(method_modules, where)
    methods = _registered_names(
        _name_list(params, "methods", where), "methods", where, list_methods(), "a registered method"
    )
    seeds = _seeds(params, where)

    for name in datasets:
        if name not in params:
            raise ParamsKeyError(
                f"{where}: {name}: missing; every listed data set needs its section ({name}: null for its defaults)"
            )
    sources = {}
    for name in known_datasets:  # every section present, listed or not: a typo fails now, not on first use
        if name in params:
            source = build_source(name, params[name], where)
            if name in datasets:
                sources[name] = source
    sources = {name: sources[name] for name in datasets}

    method_params = _method_params(params, methods, sources, where)
    train = from_mapping(TrainConfig, params["train"], f"{where}: train")
    _check_drop_prob(train, sources, where)
    evaluate = from_mapping(EvalConfig, params.get("evaluate"), f"{where}: evaluate")
    report = from_mapping(ReportConfig, params.get("report"), f"{where}: report")
    if report.reference not in methods:
        default = "" if (params.get("report") or {}).get("reference") else " (the default)"
        raise ParamsValueError(
            f"{where}: report.reference: {report.reference!r}{default} is not one of the methods {methods}; "
            "allowed: a listed method"
        )
    scenarios = from_mapping(ScenarioConfig, params.get("scenarios"), f"{where}: scenarios")
    _check_scenario_modalities(scenarios, sources, where)
    return ValidatedParams(
        datasets=list(datasets),
        methods=list(methods),
        seeds=list(seeds),
        method_modules=list(method_modules),
        method_params=method_params,
        sources=sources,
        train=train,
        evaluate=evaluate,
        report=report,
        scenarios=scenarios,
    )
