"""The configure stage: a run file per run, and the note about a workspace of the old results layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import TINY_PARAMS, write_params

from benchmark import configure


def test_writes_one_file_per_run_and_removes_the_others(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", TINY_PARAMS)
    out = tmp_path / "configs"
    out.mkdir()
    (out / "gone-complete.json").write_text("{}")
    assert configure.main(["--params", str(params), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["muss-uniform.json"]
    record = json.loads((out / "muss-uniform.json").read_text())
    assert record["method"] == "muss" and record["protocol"]["name"] == "uniform"


def test_old_results_layout_gets_one_line_and_nothing_is_touched(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path / "params.yaml", TINY_PARAMS)
    assert configure.main(["--params", str(params)]) == 0
    assert capsys.readouterr().err == ""  # no results/ yet
    old = tmp_path / "results" / "synthetic" / "muss-uniform" / "seed0" / "metrics.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    (tmp_path / "results" / "leaderboard.md").write_text("old")
    (tmp_path / "results" / "runs").mkdir()  # the new layout's folders are not reported
    assert configure.main(["--params", str(params)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: results/ holds leaderboard.md, synthetic/: ")
    assert "results/runs/ and results/report/" in err and "nothing was moved or deleted" in err
    assert old.read_text() == "{}" and (tmp_path / "results" / "leaderboard.md").read_text() == "old"


@pytest.mark.parametrize("count", [7, 9])
def test_a_long_list_is_cut(tmp_path: Path, count: int) -> None:
    for i in range(count):
        (tmp_path / f"d{i}").mkdir()
    note = configure.legacy_note(tmp_path)
    assert note is not None and "d5/, ..." in note and "d6" not in note


def test_a_method_file_no_configure_dep_covers_gets_a_note(tmp_path: Path, capsys) -> None:
    """tools/faults/nan_method.py is digested into its runs' configs, but dvc.yaml's configure
    stage does not depend on tools/faults/: editing it would rerun nothing, and a note says so."""
    params = {
        **TINY_PARAMS,
        "runs": ["nan-muss-uniform"],
        "method_modules": ["tools.faults.nan_method"],
        "method_params": {"nan-muss": {"nan_step": 3}},
        "report": {**TINY_PARAMS["report"], "reference": "nan-muss-uniform"},
    }
    path = write_params(tmp_path / "params.yaml", params)
    assert configure.main(["--params", str(path), "--out", str(tmp_path / "configs")]) == 0  # cwd: the repository
    (line,) = capsys.readouterr().err.splitlines()
    files = "tools/__init__.py, tools/faults/__init__.py, tools/faults/nan_method.py"
    assert line.startswith(f"note: method files {files} are ")
    assert "not under any dep of the configure stage in dvc.yaml" in line and "user_methods/" in line
    record = json.loads((tmp_path / "configs" / "nan-muss-uniform.json").read_text())
    assert "tools/faults/nan_method.py" in record["method_files"]
    write_params(path, TINY_PARAMS)  # muss: baselines/ is a dep, no note
    assert configure.main(["--params", str(path), "--out", str(tmp_path / "configs")]) == 0
    assert capsys.readouterr().err == ""
