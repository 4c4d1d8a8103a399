"""Data sets as classes (torchgeo-style) and their registry.

A data set states its facts as class attributes (``name``, ``classes``, ``modalities``,
``ignore_index``, ``homepage``, ``citation``; real data sets add their download addresses and
checksums), fetches or verifies its raw files with :meth:`DatasetSource.download` (the DVC
``download`` stage, into ``data/raw/<name>/`` with a ``manifest.json`` of what was verified) and
turns them into the prepared format with :meth:`DatasetSource.prepare` (the ``prepare`` stage).
The pipeline only calls ``build_source(name, params_section).download()`` and ``.prepare(out_dir)``.
Every data set's section may hold ``modalities: [...]``: the subset of its modalities to prepare
(and so to train and evaluate on), e.g. ``potsdam: {modalities: [rgb, dsm]}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from benchmark.config import Section, from_mapping
from benchmark.data.raster import Scene, write_scenes
from benchmark.errors import did_you_mean
from benchmark.io import atomic_write_json
from benchmark.layout import MANIFEST_FILE, RAW_DIR

__all__ = [
    "MANIFEST_FILE",
    "RAW_DIR",
    "DatasetSource",
    "build_source",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]

_REGISTRY: dict[str, type[DatasetSource]] = {}
_BUILTIN_MODULES = (
    "benchmark.data.synthetic",
    "benchmark.data.sen1floods11",
    "benchmark.data.isprs",
    "benchmark.data.dfc2023",
    "benchmark.data.deliver",
    "benchmark.data.earthmiss",
)

D = TypeVar("D", bound="type[DatasetSource]")


class DatasetSource:
    """A data set the pipeline can prepare.

    Args:
        params: the data set's section of params.yaml, built as ``config_type`` (an unknown key
            or a bad value is an error that names it).
        raw_dir: where the raw files live (default ``data/raw/<name>``).
    """

    name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]
    modalities: ClassVar[Mapping[str, int]]  # {name: channels}, in the data set's order
    ignore_index: ClassVar[int] = 255
    homepage: ClassVar[str] = ""  # where the data set is described and obtained
    citation: ClassVar[str] = ""  # what to cite when using it
    config_type: ClassVar[type[Section]]  # the typed params section (data sets made of scenes: tile_size, stride)
    config: Any  # the params section as config_type (set by __init__)
    bands: ClassVar[
        Mapping[str, tuple[str, ...]]
    ] = {}  # band names per modality, in channel order (rules read bands by name)
    display_bands: ClassVar[Mapping[str, tuple[int, ...]]] = {}  # 0-based channels previews show, per modality
    palette: ClassVar[tuple[str, ...] | None] = None  # hex colour per class for maps; None: the report's default
    # SAR-like modalities (the evaluation's speckle scenario) and their units: "db" (10 log10 of
    # intensity) or "linear" (intensity as stored)
    sar_modalities: ClassVar[Mapping[str, str]] = {}

    def __init__(self, params: Mapping[str, Any], raw_dir: Path | None = None) -> None:
        self.params = dict(params)
        self.config = from_mapping(self.config_type, params, self.name)
        self.raw_dir = Path(raw_dir) if raw_dir is not None else RAW_DIR / self.name

    def select_modalities(self, names: Any) -> None:
        """Keep only the modalities ``names`` (a non-empty list of distinct names of this data set's
        modalities, any order; they stay in the data set's order). A bad list is a ``ValueError``
        naming ``<name>.modalities``, the value and what is allowed."""
        allowed = f"a non-empty list of distinct modalities of {self.name}: {list(self.modalities)}"
        where = f"{self.name}.modalities"
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: {names!r} is not allowed; must be {allowed} (or null: all)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{where}: {names!r} repeats {repeated}; must be {allowed}")
        unknown = [n for n in names if n not in self.modalities]
        if unknown:
            raise ValueError(f"{where}: {unknown[0]!r} is not allowed; must be {allowed}")
        self.modalities = {m: c for m, c in self.modalities.items() if m in names}

    def download(self) -> Path:
        """Fetch (or, for manually obtained data, verify and extract) the raw files into
        ``raw_dir`` and write ``raw_dir/manifest.json``; return ``raw_dir``. The default suits an
        embedded data set: nothing to fetch, the manifest says so."""
        atomic_write_json(
            self.raw_dir / MANIFEST_FILE, {"dataset": self.name, "files": {}, "note": "embedded: nothing to fetch"}
        )
        return self.raw_dir

    def prepare(self, out_dir: Path) -> Path:
        """Write ``out_dir`` in the prepared format (:mod:`benchmark.data.prepared`); return it."""
        raise NotImplementedError

    def write_scenes(
        self,
        out_dir: Path,
        scenes: Sequence[Scene],
        source: Mapping[str, Any] | None = None,
        progress: bool = True,
        tags: Mapping[str, Sequence[str]] | None = None,
    ) -> Path:
        """Tile ``scenes`` into ``out_dir`` with this data set's classes and modalities and its
        params' ``tile_size`` and ``stride`` (``self.config``): the one tiling path of every
        data set made of scenes (:func:`benchmark.data.raster.write_scenes`; ``tags``: each
        scene's, e.g. its conditions)."""
        return write_scenes(
            out_dir,
            scenes,
            tile_size=self.config.tile_size,
            stride=self.config.stride,
            dataset=self.name,
            classes=self.classes,
            ignore_index=self.ignore_index,
            modalities=self.modalities,
            source=source,
            progress=progress,
            tags=tags,
        )


def register_dataset(name: str) -> Callable[[D], D]:
    """Class decorator registering a :class:`DatasetSource` under ``name``."""

    def decorator(cls: D) -> D:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_datasets() -> list[str]:
    """Names of every registered data set (the built-in ones and any imported since), sorted."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return sorted(_REGISTRY)


def build_source(name: str, section: Mapping[str, Any] | None, raw_dir: Path | None = None) -> DatasetSource:
    """Data set ``name`` built from its params.yaml section (null: defaults). The section's optional
    ``modalities`` (:meth:`DatasetSource.select_modalities`) is applied after the data set's own
    config is validated (which it is not part of)."""
    values = dict(section or {})
    selection = values.pop("modalities", None)
    source = get_dataset(name)(values, raw_dir)
    if selection is not None:
        source.select_modalities(selection)
    return source


def get_dataset(name: str) -> type[DatasetSource]:
    """The registered data set class called ``name`` (a KeyError lists the known ones)."""
    known = list_datasets()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(known)}{did_you_mean(name, known)}") from None
