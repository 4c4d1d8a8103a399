"""Shared fixtures: a tiny configuration of the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import TINY_PARAMS, write_params

from benchmark.methods.catalog import list_methods

# Every built-in method registered, for the tests that call benchmark.train.train(...) or rebuild a
# model in this process (the train stage imports its run's method module itself).
list_methods()


@pytest.fixture
def tiny_params(tmp_path: Path) -> Path:
    """A params.yaml for a pipeline that runs in seconds."""
    return write_params(tmp_path / "params.yaml", TINY_PARAMS)


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic data set, prepared once per test session."""
    from benchmark import prepare

    root = tmp_path_factory.mktemp("prepared")
    params = write_params(root / "params.yaml", TINY_PARAMS)
    out = root / "synthetic"
    assert prepare.main(["--dataset", "synthetic", "--params", str(params), "--out", str(out)]) == 0
    return out
