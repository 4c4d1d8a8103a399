"""Training faults made to happen: SIGKILL and resume, SIGKILL mid-write, a non-finite loss."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmark.checkpoint import load_torch
from benchmark.train import read_log
from tools.faults import training_cases
from tools.faults.common import NotSurvived

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("method", "kill_at"), [("sgma", 5), ("m3l", 8), ("imlt", 1)])
def test_killed_training_resumes_bit_identical(tmp_path, method, kill_at):
    """SIGKILL once the log holds ``kill_at`` steps; checkpoints every 3 steps, so the run resumes
    from 3 or 6 (or 0 for a kill before the first checkpoint) and must end bit-identical."""
    resumed_from = training_cases.kill_and_resume(method, kill_at, tmp_path)
    assert resumed_from in (0, 3, 6, 9) and resumed_from <= kill_at + 1


def test_kill_and_resume_detects_a_different_result(tmp_path, monkeypatch):
    """The comparison can fail: against a reference whose matrices differ, the case reports it."""
    project = training_cases.project()
    model, confusion = project.reference("muss")
    changed = {k: v.copy() for k, v in confusion.items()}
    changed["rgb"][0, 0] += 1
    monkeypatch.setitem(project.references, "muss", (model, changed))
    with pytest.raises(NotSurvived, match="confusion matrices differ"):
        training_cases.kill_and_resume("muss", 4, tmp_path)


@pytest.mark.parametrize("kind", training_cases.WRITTEN_KINDS)
def test_kill_mid_write_leaves_a_complete_file(tmp_path, kind):
    """Kills at several moments, until one lands mid-write (a temporary file is left); each must
    leave a complete file. Most kills land mid-write, so 8 misses in a row are very unlikely."""
    for i, delay in enumerate(np.linspace(0.03, 0.45, 8)):
        if training_cases.kill_writer(kind, float(delay), tmp_path / str(i)):
            return
    pytest.fail("no kill landed mid-write: the test did not make the fault happen")


def test_kill_mid_write_catches_a_writer_that_is_not_atomic(tmp_path):
    """The same kill against a plain ``torch.save(obj, path)`` leaves a damaged file, and the case says so."""
    plain = training_cases._WRITER.replace(
        'atomic_write(path, lambda tmp: torch.save({"version": version, "blob": blob}, tmp))',
        'torch.save({"version": version, "blob": blob}, path)',
    )
    assert plain != training_cases._WRITER
    outcomes = []
    for i, delay in enumerate((0.05, 0.11, 0.23, 0.37)):
        try:
            training_cases.kill_writer("torch", delay, tmp_path / str(i), writer=plain)
            outcomes.append("survived")
        except NotSurvived:
            outcomes.append("damaged")
    assert "damaged" in outcomes


@pytest.mark.parametrize("nan_step", [0, 7])
def test_nonfinite_loss_stops_with_the_step_method_and_part(tmp_path, nan_step):
    training_cases.nan_at_step(nan_step, tmp_path)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert checkpoint.exists() == (nan_step >= 3)  # the checkpoints before the failure are kept
    if checkpoint.exists():
        assert load_torch(checkpoint)["step"] == 6


def test_nonfinite_case_fails_when_training_ignores_the_nan(tmp_path, monkeypatch):
    from benchmark import train

    monkeypatch.setattr(train, "check_step_result", lambda name, result, step: result[0])
    with pytest.raises(NotSurvived, match="no error raised"):
        training_cases.nan_at_step(2, tmp_path)


def test_read_log_drops_a_cut_last_line_and_names_a_damaged_one(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.9}\n{"step": 2, "lo')
    assert [line[:10] for line in read_log(log, 5)] == ['{"step": 0', '{"step": 1']
    assert len(read_log(log, 1)) == 1
    log.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"train_log.jsonl: line 2"):
        read_log(log, 5)


def test_damaged_checkpoint_is_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"checkpoint.pt: not a readable checkpoint"):
        load_torch(path)


def test_faults_cli_prints_survived_per_kind(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tools.faults", "--cycles", "1", "--kinds", "kill_resume", "nonfinite_loss"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(training_cases.Path(training_cases.__file__).parents[2])},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["kill_resume: survived 1/1", "nonfinite_loss: survived 1/1"]


def test_random_draws_differ_per_cycle():
    from tools.faults.__main__ import run_kind

    seen = []
    run_kind("probe", lambda rng, workdir: seen.append(int(rng.integers(1 << 30))), 3, 0, 0)
    assert len(set(seen)) == 3 and np.all(np.array(seen) >= 0)
