"""Data sets: a registry of preparers that turn a source into the prepared format.

A data set registers ``prepare(params, out_dir) -> out_dir`` under its name with
:func:`register_dataset`; ``params`` is the data set's section of params.yaml.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmark.data.prepared import PreparedDataset, read_meta, write_prepared

Preparer = Callable[[Mapping[str, Any], Path], Path]
_PREPARERS: dict[str, Preparer] = {}
_BUILTIN_MODULES = ("benchmark.data.synthetic",)


def register_dataset(name: str) -> Callable[[Preparer], Preparer]:
    """Decorator registering a data set's ``prepare`` function under ``name``."""

    def decorator(fn: Preparer) -> Preparer:
        _PREPARERS[name] = fn
        return fn

    return decorator


def get_preparer(name: str) -> Preparer:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    try:
        return _PREPARERS[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(_PREPARERS))}") from None


__all__ = ["PreparedDataset", "get_preparer", "read_meta", "register_dataset", "write_prepared"]
