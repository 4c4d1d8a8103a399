"""Method registry (timm-style): ``@register_method("name")`` and ``create_method("name", ...)``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}
_BUILTIN_MODULES = (
    "baselines",
    "benchmark.methods.sgma",
    "floors",
)  # imported on first lookup; each module registers its methods
_discovered = False

T = TypeVar("T", bound=type[nn.Module])


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator registering a method under ``name`` (lower case, digits, ``-``, ``_``)."""
    if not name or name != name.lower() or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"method name {name!r}: use lower-case letters, digits, '-' or '_'")

    def decorator(cls: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"method {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        _REGISTRY[name] = cls
        cls.method_name = name
        return cls

    return decorator


def import_method_modules(modules: Iterable[str]) -> None:
    """Import modules whose ``@register_method`` decorators add methods (e.g. a user's own file)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"cannot import method module {module!r}: {err}") from err


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        import_method_modules(_BUILTIN_MODULES)


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[nn.Module]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def create_method(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered method: ``create_method("muss", modalities={...}, num_classes=6, ...)``."""
    cls = get_method_class(name)
    try:
        method = cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"method {name!r}: bad parameters {sorted(kwargs)}: {err}") from err
    except ValueError as err:  # a parameter out of its range: the method's message names it
        raise ValueError(f"method {name!r}: {err}") from err
    if not isinstance(method, nn.Module):
        raise TypeError(f"method {name!r}: {cls.__qualname__} must be a torch.nn.Module (subclass SegmentationMethod)")
    return method
