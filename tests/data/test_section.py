"""One data set's section read and checked on its own (benchmark.data.section): the data stages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TINY_PARAMS, write_params

from benchmark.data.section import load_source
from benchmark.schema import validate_params

REPO = Path(__file__).resolve().parents[2]


def test_a_section_is_checked_without_the_rest_of_the_file(tmp_path: Path) -> None:
    params = {**TINY_PARAMS, "runs": ["no-such-method-complete"], "train": "not a mapping"}
    path = write_params(tmp_path / "params.yaml", params)
    source = load_source(path, "synthetic")
    assert source.name == "synthetic" and source.config.num_train == TINY_PARAMS["synthetic"]["num_train"]
    with pytest.raises(TypeError, match=r"train: 'not a mapping' is not allowed; must be a mapping"):  # the whole
        validate_params(params, str(path))


@pytest.mark.parametrize(
    ("section", "error", "message"),
    [
        ({"num_train": 0}, ValueError, "synthetic.num_train: 0 is not allowed; must be an int >= 1"),
        ({"seed": -1}, ValueError, "synthetic.seed: -1 is not allowed; must be an int >= 0"),
        ([1, 2], TypeError, "synthetic: [1, 2] is not allowed; must be a mapping"),
        ({"no_such_key": 1}, KeyError, "synthetic"),
    ],
)
def test_a_bad_section_is_one_line_naming_the_file_and_key(tmp_path: Path, section, error, message) -> None:
    path = write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "synthetic": section})
    with pytest.raises(error) as info:
        load_source(path, "synthetic")
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_missing_section_or_unknown_data_set_is_named(tmp_path: Path) -> None:
    path = write_params(tmp_path / "params.yaml", {k: v for k, v in TINY_PARAMS.items() if k != "synthetic"})
    with pytest.raises(KeyError, match=rf"{re.escape(str(path))}: missing key 'synthetic'"):
        load_source(path, "synthetic")
    path = write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "mars": {}})
    with pytest.raises(KeyError, match="unknown data set 'mars'"):
        load_source(path, "mars")


@pytest.mark.slow  # starts a Python process
def test_the_data_stages_import_no_method_model_or_protocol() -> None:
    """What tests/test_dvc_deps.py reads statically, at run time: importing the two stages loads no
    method, model, floor or protocol module (so their deps leave them out)."""
    code = (
        "import sys, benchmark.download, benchmark.prepare; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('baselines', 'floors', 'user_methods') "
        "or m.startswith(('benchmark.methods', 'benchmark.models', 'benchmark.protocol', 'benchmark.schema'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
