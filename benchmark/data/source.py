"""Data sets as classes (torchgeo-style) and their registry.

A data set states its facts as class attributes (``name``, ``classes``, ``modalities``,
``ignore_index``; real data sets add their download addresses and checksums) and turns its
source into the prepared format with :meth:`DatasetSource.prepare`. The pipeline only calls
``get_dataset(name)(params).prepare(out_dir)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

_REGISTRY: dict[str, type[DatasetSource]] = {}
_BUILTIN_MODULES = ("benchmark.data.synthetic",)

D = TypeVar("D", bound="type[DatasetSource]")


class DatasetSource:
    """A data set the pipeline can prepare.

    Args:
        params: the data set's section of params.yaml (validated by the subclass; an unknown
            key is an error that names it).
    """

    name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]
    modalities: ClassVar[Mapping[str, int]]  # {name: channels}, in the data set's order
    ignore_index: ClassVar[int] = 255

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def prepare(self, out_dir: Path) -> Path:
        """Write ``out_dir`` in the prepared format (:mod:`benchmark.data.prepared`); return it."""
        raise NotImplementedError


def register_dataset(name: str) -> Callable[[D], D]:
    """Class decorator registering a :class:`DatasetSource` under ``name``."""

    def decorator(cls: D) -> D:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def get_dataset(name: str) -> type[DatasetSource]:
    """The registered data set class called ``name`` (a KeyError lists the known ones)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
