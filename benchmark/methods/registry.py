"""Method registry (timm-style): ``@register_method("name")`` on a class, then
``build_method("name", ...)`` once its module is imported.

The registry knows only the methods whose modules were imported: a run imports its own method's
module alone (``configs/<run>.json`` names it), so a method's code is a dependency only of the runs
that use it. :mod:`benchmark.methods.catalog` imports every built-in method (``list_methods``,
``create_method``).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}

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


def registered_names() -> list[str]:
    """Names of the methods registered so far (by the modules imported so far), sorted."""
    return sorted(_REGISTRY)


def registered_class(name: str, module: str | None = None) -> type[nn.Module]:
    """The class registered as ``name``, after importing ``module`` (the one that registers it) if given."""
    if module is not None:
        import_method_modules([module])
    try:
        return _REGISTRY[name]
    except KeyError:
        where = f"module {module!r} does not register it" if module else "import the module that registers it"
        raise KeyError(f"unknown method {name!r} ({where}); registered: {', '.join(sorted(_REGISTRY))}") from None


def build_method(name: str, module: str | None = None, **kwargs: Any) -> nn.Module:
    """Build the method registered as ``name`` (importing ``module`` first if given):
    ``build_method("muss", "baselines.muss", modalities={...}, num_classes=6, ...)``."""
    cls = registered_class(name, module)
    try:
        method = cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"method {name!r}: bad parameters {sorted(kwargs)}: {err}") from err
    except ValueError as err:  # a parameter out of its range: the method's message names it
        raise ValueError(f"method {name!r}: {err}") from err
    if not isinstance(method, nn.Module):
        raise TypeError(f"method {name!r}: {cls.__qualname__} must be a torch.nn.Module (subclass SegmentationMethod)")
    return method


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
