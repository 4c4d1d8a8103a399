"""User mistakes are one line and exit status 2; bugs keep their traceback (benchmark.errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny import TINY_PARAMS, configure_runs, write_params

from benchmark import errors
from benchmark.config import ParamsKeyError

REPO = Path(__file__).resolve().parents[1]


def _mistake(argv: list[str]) -> int:
    raise ParamsKeyError(f"params.yaml: runs[0]: {argv[0]!r} is not allowed;\n  must be a listed run")


def _bug(argv: list[str]) -> int:
    return 1 // 0


def test_a_user_mistake_is_one_line_and_status_2(capsys, monkeypatch) -> None:
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exited:
        errors.run(_mistake, ["sgmaa-complete"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err == (
        "error: params.yaml: runs[0]: 'sgmaa-complete' is not allowed; | must be a listed run "
        "(details: --debug or IMSS_DEBUG=1)\n"
    )


def test_debug_flag_or_environment_keeps_the_traceback(monkeypatch) -> None:
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    with pytest.raises(ParamsKeyError):
        errors.run(_mistake, ["x", "--debug"])
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    with pytest.raises(ParamsKeyError):
        errors.run(_mistake, ["x"])


def test_a_bug_is_not_a_user_mistake() -> None:
    with pytest.raises(ZeroDivisionError):
        errors.run(_bug, [])


def test_the_status_of_main_is_the_exit_status() -> None:
    with pytest.raises(SystemExit) as exited:
        errors.run(lambda argv: 0 if argv == ["--flag"] else 5, ["--flag", "--debug"])  # --debug is taken out
    assert exited.value.code == 0


def _workspace(tmp_path: Path) -> Path:
    write_params(tmp_path / "params.yaml", TINY_PARAMS)
    return tmp_path


def _bad_steps(tmp_path: Path) -> None:
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["train"]["steps"] = -5
    write_params(tmp_path / "params.yaml", params)


def _configured(tmp_path: Path) -> None:
    configure_runs(tmp_path / "params.yaml")  # the runs' configs/<run>.json, as dvc repro's first stage


def _potsdam_listed(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "datasets": ["potsdam"], "potsdam": None})


RUN = ["--dataset", "synthetic", "--seed", "0"]
CASES = {  # case: (command, its arguments, how to break the workspace first, what the line must say)
    "configure": ("configure", [], _bad_steps, "params.yaml: train.steps: -5 is not allowed; must be an int >= 1"),
    "download-unknown": ("download", ["--dataset", "mars"], None, "params.yaml: missing key 'mars'"),
    "download-archive": ("download", ["--dataset", "potsdam"], _potsdam_listed, "potsdam: 3 archive(s) missing: | "),
    "prepare": ("prepare", ["--dataset", "potsdam"], None, "params.yaml: missing key 'potsdam'"),
    "train": ("train", [*RUN, "--run-name", "sgmaa-complete"], None, "run 'sgmaa-complete' is not configured; list"),
    "evaluate": ("evaluate", [*RUN, "--run-name", "muss-uniform"], _configured, "prepared data set not found"),
    "report": ("report", [], None, "metrics.json: not found"),
    "diagnose": ("diagnose", ["--dataset", "synthetic", "--run-name", "muss-complete"], None, "is not listed"),
}


@pytest.mark.slow  # starts one Python process per command
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_stage_command_prints_a_user_mistake_as_one_line(tmp_path: Path, case: str) -> None:
    command, args, breaks, says = CASES[case]
    cwd = _workspace(tmp_path)
    if breaks is not None:
        breaks(cwd)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmark.{command}", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_did_you_mean_names_the_closest_known_name_or_nothing() -> None:
    assert errors.did_you_mean("smga", ["muss", "sgma", "magic"]) == "; did you mean 'sgma'?"
    assert errors.did_you_mean("sgma-complete", ["sgma-complete", "sgma-uniform"]) == "; did you mean 'sgma-complete'?"
    assert errors.did_you_mean("potsdam", ["muss", "sgma"]) == ""
    assert errors.did_you_mean(3, []) == ""
