"""The project's import graph (benchmark.imports): no circle among its modules."""

from __future__ import annotations

import graphlib

import pytest
from tiny import REPO

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


def test_the_installed_package_holds_no_tool_and_no_test() -> None:
    """``pip install .`` installs the pipeline (benchmark, baselines, floors), not tools/ (the fault
    harness) or tests/: what pyproject.toml's package list finds."""
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = find_packages(where=REPO, include=config["tool"]["setuptools"]["packages"]["find"]["include"])
    assert {"benchmark", "benchmark.data", "baselines", "floors"} <= set(found)
    assert not [p for p in found if p.split(".")[0] in ("tools", "tests")], found
    assert (REPO / "tools" / "faults" / "__main__.py").is_file()
