"""Every built-in method: importing them all on first lookup (``list_methods``, ``create_method``).

For whoever needs the whole list (the check of params.yaml, the efficiency table, tests). A run's
stages do not import this module: they import their own method's module only
(:func:`benchmark.methods.registry.build_method`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from benchmark.methods.registry import build_method, import_method_modules, registered_class, registered_names

_BUILTIN_MODULES = (
    "baselines.imlt",
    "baselines.m3l",
    "baselines.magic",
    "baselines.muss",
    "benchmark.methods.sgma",
    "floors.ndwi",
    "floors.pixel_forest",
    "floors.sar_otsu",
)  # imported on first lookup; each module registers its methods
_discovered = False


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        import_method_modules(_BUILTIN_MODULES)


def list_methods() -> list[str]:
    """Names of all registered methods (the built-in ones and any imported so far), sorted."""
    _discover()
    return registered_names()


def get_method_class(name: str) -> type[nn.Module]:
    _discover()
    return registered_class(name)


def method_module(name: str) -> str:
    """The module that registers method ``name`` (what a run imports to build it)."""
    return get_method_class(name).__module__


def create_method(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered method: ``create_method("muss", modalities={...}, num_classes=6, ...)``."""
    _discover()
    return build_method(name, **kwargs)
