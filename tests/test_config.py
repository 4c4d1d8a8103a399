"""benchmark.config's helpers that are not the schema (tests/test_schema.py): the progress label."""

from __future__ import annotations

import itertools
from pathlib import Path

from tiny import TINY_PARAMS, write_params

from benchmark.config import field_comments, stage_label


def test_the_stage_label_counts_in_dvc_yamls_matrix_order(tmp_path: Path) -> None:
    """Position = the index in datasets x runs x seeds (dvc.yaml's matrix, expanded in that order)."""
    datasets, runs, seeds = ["synthetic", "potsdam"], ["muss-complete", "sgma-complete", "muss-uniform"], [0, 1]
    params = write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "datasets": datasets, "runs": runs, "seeds": seeds})
    order = list(itertools.product(datasets, runs, seeds))
    for position, (dataset, run, seed) in enumerate(order, 1):
        label = stage_label("train", dataset, run, seed, params)
        assert label == f"train {position}/12: {dataset} {run} seed {seed}"
    assert (
        stage_label("evaluate", "potsdam", "sgma-complete", 0, params) == "evaluate 9/12: potsdam sgma-complete seed 0"
    )


def test_the_stage_label_never_fails(tmp_path: Path) -> None:
    """A run the lists do not hold, no file, a file that is not YAML: the label without a position."""
    params = write_params(tmp_path / "params.yaml", TINY_PARAMS)
    assert stage_label("train", "synthetic", "sgma-complete", 0, params) == "train: synthetic sgma-complete seed 0"
    assert stage_label("train", "synthetic", "muss-uniform", 0, tmp_path / "none.yaml").startswith("train: ")
    (tmp_path / "bad.yaml").write_text("runs: [unclosed\n")
    assert stage_label("evaluate", "synthetic", "muss-uniform", 0, tmp_path / "bad.yaml").startswith("evaluate: ")


class _Commented:
    """Fields documented by a trailing comment, by the comment lines above, or not at all."""

    plain: int = 1  # trailing
    # above, first line
    # and second
    spread: str = "# not a comment"
    multi: dict = {  # on its first line: not the one ending the field
        "a": 1,
    }  # ending the field
    wrapped: int = 3  # inside the field's lines
    bare: int = 2
    method_like = 3  # no annotation: not a field
    typed: int = 4  # type: ignore[assignment]


def test_field_comments_read_the_trailing_comment_else_the_lines_above() -> None:
    assert field_comments(_Commented) == {
        "plain": "trailing",
        "spread": "above, first line and second",
        "multi": "ending the field",
        "wrapped": "inside the field's lines",
    }
    assert field_comments(type("Made", (), {"__annotations__": {"x": int}})) == {}  # no source: nothing
