"""The project's import graph (benchmark.imports): no circle among its modules."""

from __future__ import annotations

import graphlib

from benchmark.imports import import_graph


def test_no_module_imports_itself_through_others() -> None:
    """A circle (config -> schema -> scenarios -> config, say) makes a module's meaning depend on the
    import order; every module, its function-level imports included, sits in a strict order."""
    graph = import_graph()
    assert "benchmark.schema" in graph["benchmark.configure"] and "benchmark.config" in graph["benchmark.schema"]
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"import circle: {' -> '.join(err.args[1])}") from None


def test_a_circle_is_found() -> None:
    """The check can fail: config importing schema would close a circle (schema imports config)."""
    graph = {**import_graph(), "benchmark.config": {"benchmark.schema"}}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return
    raise AssertionError("config -> schema -> config not found")
