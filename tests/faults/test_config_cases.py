"""Fault kind ``bad_config``: every mutation of the tiny params is refused by the train stage
before it computes or writes anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny import TINY_PARAMS

from benchmark.config import ParamsError, load_params
from tools.faults.common import NotSurvived
from tools.faults.config_cases import BASE_PARAMS, CASES, MUTATIONS, Mutation, _dump, run_mutation


def test_base_params_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(_dump(BASE_PARAMS))
    assert load_params(path) == TINY_PARAMS


def test_there_are_enough_distinct_mutations() -> None:
    assert len(MUTATIONS) >= 12
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_every_mutation_is_refused_before_compute(mutation: Mutation, tmp_path: Path) -> None:
    err = run_mutation(mutation, tmp_path)
    assert isinstance(err, ParamsError) and isinstance(err, mutation.error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_vague_error_does_not_survive(tmp_path: Path) -> None:
    """The check can fail: an error that does not name the expected value is not a survival."""
    wrong = Mutation("zero_batch_size", MUTATIONS[0].text, KeyError, ("methods[1]", "'not-the-value'"))
    with pytest.raises(NotSurvived, match="'not-the-value'"):
        run_mutation(wrong, tmp_path)


def test_case_draws_a_mutation(tmp_path: Path) -> None:
    CASES["bad_config"](np.random.default_rng(0), tmp_path)
    assert (tmp_path / "params.yaml").is_file()
