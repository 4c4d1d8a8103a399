"""One data set's section of params.yaml, read and checked on its own: what the download and
prepare stages need.

The whole file is the configure stage's to check (:func:`benchmark.schema.validate_params`, which
runs before every other stage and calls :func:`checked_source` for every data-set section). The
data stages check just their own section, so they import no method, model or protocol: editing a
baseline does not rerun them (tests/test_dvc_deps.py keeps dvc.yaml's deps to what they import).
Errors read ``<file>: <dataset>.<key>: <value> is not allowed; <what is>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.config import (
    FieldError,
    ParamsError,
    ParamsKeyError,
    ParamsTypeError,
    ParamsValueError,
    load_params,
    section,
)
from benchmark.data.source import DatasetSource, build_source


def in_file(err: Exception, where: str) -> ParamsError:
    """A data set's own error (``<name>[.<key>]: ...``, a ``KeyError``, ``TypeError`` or
    ``ValueError``) located in the params file ``where``, of the same kind."""
    if isinstance(err, FieldError):
        return err.at(f"{where}: {err.where}")
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    kind = ParamsKeyError if isinstance(err, KeyError) else ParamsTypeError if isinstance(err, TypeError) else None
    return (kind or ParamsValueError)(f"{where}: {message}")


def checked_source(name: str, values: Any, where: str, raw_dir: Path | None = None) -> DatasetSource:
    """The data set ``name``'s source built from its params section ``values`` (null: defaults);
    errors name ``<where>: <name>.<key>``. Builds only: reads no file."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParamsTypeError(f"{where}: {name}: {values!r} is not allowed; must be a mapping (or null: defaults)")
    try:
        source = build_source(name, values, raw_dir)
    except (KeyError, TypeError, ValueError) as err:
        raise in_file(err, where) from None
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


def load_source(path: str | Path, name: str, raw_dir: Path | None = None) -> DatasetSource:
    """Data set ``name`` of the params file ``path``: its section read (YAML only, the rest of the
    file unchecked) and built by :func:`checked_source` (``raw_dir``: default ``data/raw/<name>``)."""
    params = load_params(path)
    return checked_source(name, section(params, name, str(path)), str(path), raw_dir)
