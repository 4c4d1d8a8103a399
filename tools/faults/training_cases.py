"""Training faults: a process killed at a random step, a process killed while it writes, a
non-finite loss. Each case runs the real entry points (``python -m benchmark.train``) on a tiny
synthetic data set prepared once per process.

- ``kill_resume``: train a random method (under a staged protocol: complete, then uniform) in a
  subprocess, SIGKILL it once its log reaches a random step, run the same command again; the
  resumed run must resume from its last checkpoint, log every step exactly once, leave no
  temporary file, and end with a ``model.pt`` whose weights are bit-identical to an uninterrupted
  run of the same seed, so its test-set confusion matrices on every subset are identical too.
- ``kill_during_write``: a subprocess rewrites one file (a torch checkpoint, a JSON or an
  ``.npz``) again and again through :mod:`benchmark.io`, alternating two versions of tens of MB;
  it is SIGKILLed at a random moment (most land mid-write). The file must then load and hold one
  complete version; :func:`benchmark.io.remove_stale_temps` clears the temporary file left behind.
- ``nonfinite_loss``: a method whose loss part ``aux`` turns NaN at a random step
  (:mod:`tools.faults.nan_method`): training must stop with an error naming the step, the
  method and the part, write no ``model.pt`` and keep only complete checkpoints of earlier steps.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmark.layout import CHECKPOINT_FILE, IMAGE_SCORES_FILE, LOG_FILE, METRICS_FILE, MODEL_FILE, PARAMS_FILE
from benchmark.protocol import run_name
from tools.faults import common
from tools.faults.common import NotSurvived, configure_runs, expect_error

# The tiny pipeline, trained a little longer so that kills land between checkpoints (every 3 steps).
TINY_PARAMS: dict[str, Any] = {
    **common.TINY_PARAMS,
    "train": {**common.TINY_PARAMS["train"], "steps": 12, "checkpoint_every": 3},
}
# Methods killed and resumed, with their tiny-run parameters: each keeps different state across steps.
RESUMED_METHODS: dict[str, dict[str, Any]] = {
    "muss": {},
    "sgma": {},  # draws its MAS modality from the global RNG
    "m3l": {"supervised_warmup": 2},  # EMA teacher, masked-student draws
    "imlt": {},  # hidden-modality and contrastive-location draws
    "magic": {},
}
KILL_TIMEOUT_S = 120.0
# Every run trains under a staged protocol (complete for the first half, then uniform subsets), so a
# kill lands in either phase and the resumed run must redraw the same masks on either side of the switch.
PROTOCOL = "halfway"
STAGED: dict[str, Any] = {"kind": "staged", "fraction": 0.5, "first": "complete", "then": "uniform"}


class _Project:
    """A folder with the tiny params and the prepared data set, plus the uninterrupted reference runs."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="benchmark-faults-"))
        atexit.register(shutil.rmtree, self.root, True)
        self.prepared = self.root / "prepared"
        self.references: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}
        params = self.params_file(self.root / PARAMS_FILE.name, "muss")
        from benchmark import prepare

        with contextlib.redirect_stdout(io.StringIO()):
            prepare.main(["--dataset", "synthetic", "--params", str(params), "--out", str(self.prepared)])

    def params_file(self, path: Path, method: str, method_params: dict[str, Any] | None = None, **changes) -> Path:
        params = copy.deepcopy(TINY_PARAMS)
        params["protocols"] = {PROTOCOL: STAGED}
        params["runs"] = [run_name(method, PROTOCOL)]
        params["report"]["reference"] = run_name(method, PROTOCOL)
        params["method_params"] = {method: RESUMED_METHODS.get(method, {}) if method_params is None else method_params}
        params.update(changes)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    def train_command(self, params: Path, method: str, out: Path) -> list[str]:
        run = [
            "--dataset",
            "synthetic",
            "--run-name",
            run_name(method, PROTOCOL),
            "--seed",
            "0",
            "--config",
            str(configure_runs(params) / f"{run_name(method, PROTOCOL)}.json"),
        ]
        return [
            sys.executable,
            "-m",
            "benchmark.train",
            *run,
            "--data-dir",
            str(self.prepared),
            "--out",
            str(out),
            "--no-progress",
        ]

    def reference(self, method: str) -> tuple[Path, dict[str, np.ndarray]]:
        """The uninterrupted run of ``method``: its model.pt and its confusion matrices per subset."""
        if method not in self.references:
            out = self.root / "reference" / method
            params = self.params_file(out / PARAMS_FILE.name, method)
            _run(self.train_command(params, method, out))
            self.references[method] = (out / MODEL_FILE, self.confusion(out / MODEL_FILE))
        return self.references[method]

    def confusion(self, model: Path) -> dict[str, np.ndarray]:
        from benchmark.checkpoint import load_model
        from benchmark.data.prepared import PreparedDataset
        from benchmark.evaluate import evaluate_subsets

        method, _ = load_model(model)
        evaluation = evaluate_subsets(method, PreparedDataset(self.prepared, "test"), batch_size=6)
        return {name: m.numpy() for name, m in evaluation.matrices.items()}


_PROJECT: _Project | None = None


def project() -> _Project:
    """The process's tiny project (prepared on first use)."""
    global _PROJECT
    if _PROJECT is None:
        _PROJECT = _Project()
    return _PROJECT


def _env() -> dict[str, str]:
    """The subprocesses import this checkout's package, whatever the working folder."""
    root = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


def _run(command: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise NotSurvived(f"{' '.join(command[1:4])} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


@contextlib.contextmanager
def _process(command: list[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """Run ``command`` (text pipes as given in ``popen``); on leaving, kill it if still running and close its pipes."""
    proc = subprocess.Popen(command, env=_env(), text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _kill_when(command: list[str], ready: Callable[[], bool]) -> None:
    """Start ``command``, SIGKILL it as soon as ``ready()`` holds (polled every 2 ms)."""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    with _process(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        while not ready():
            if proc.poll() is not None:
                raise NotSurvived(
                    f"the process ended (exit {proc.returncode}) before the kill point: {proc.stderr.read()[-1500:]}"
                )
            if time.monotonic() > deadline:
                raise NotSurvived("the kill point was never reached")
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)


def _log_steps(path: Path) -> int:
    """Complete lines in the step log (the last one may be cut short)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _temps(folder: Path) -> list[str]:
    from benchmark.io import is_temp

    return sorted(p.name for p in folder.iterdir() if is_temp(p.name))


def kill_resume(rng: np.random.Generator, workdir: Path) -> str:
    """SIGKILL training of a random method at a random step, resume, compare with the uninterrupted run."""
    method = str(rng.choice(sorted(RESUMED_METHODS)))
    kill_at = int(rng.integers(1, TINY_PARAMS["train"]["steps"]))
    resumed_from = kill_and_resume(method, kill_at, workdir)
    return f"{method} killed after step {kill_at - 1} was logged, resumed from step {resumed_from}"


def kill_and_resume(method: str, kill_at: int, workdir: Path) -> int:
    """Kill ``method``'s training once its log holds ``kill_at`` steps (so inside step ``kill_at`` or
    just after), run it again, compare with the uninterrupted run; return the step it resumed from."""
    import torch

    from benchmark.checkpoint import load_torch

    p = project()
    steps = TINY_PARAMS["train"]["steps"]
    reference_model, reference_confusion = p.reference(method)
    out = workdir / "run"
    params = p.params_file(workdir / PARAMS_FILE.name, method)
    command = p.train_command(params, method, out)
    log = out / LOG_FILE
    _kill_when(command, lambda: _log_steps(log) >= kill_at)
    if (out / MODEL_FILE).exists():
        raise NotSurvived(f"model.pt exists after a kill at step {kill_at} of {steps}")
    checkpoint = out / CHECKPOINT_FILE
    resumed_from = int(load_torch(checkpoint)["step"]) if checkpoint.exists() else 0  # must load: never truncated
    proc = _run(command)
    if resumed_from and f"from step {resumed_from}" not in proc.stderr:
        raise NotSurvived(f"did not resume from the checkpoint of step {resumed_from}: {proc.stderr[-500:]}")
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    if logged != list(range(steps)):
        raise NotSurvived(f"{log}: steps {logged}, expected 0..{steps - 1} once each")
    if _temps(out):
        raise NotSurvived(f"{out}: temporary files left: {_temps(out)}")
    a = load_torch(reference_model)["state_dict"]
    b = load_torch(out / MODEL_FILE)["state_dict"]
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if differ or set(a) != set(b):
        raise NotSurvived(f"{method} killed at step {kill_at}: weights differ from the uninterrupted run: {differ[:5]}")
    confusion = p.confusion(out / MODEL_FILE)
    if any(not np.array_equal(confusion[k], reference_confusion[k]) for k in reference_confusion):
        raise NotSurvived(f"{method} killed at step {kill_at}: test confusion matrices differ")
    return resumed_from


_WRITER = textwrap.dedent(
    """
    import json
    import sys
    import numpy as np
    import torch
    from benchmark.io import atomic_write, atomic_write_npz, atomic_write_text
    kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    texts = [json.dumps({"version": v, "blob": [v] * size}) for v in (0, 1)] if kind == "json" else []
    version = 0
    while True:
        if kind == "torch":
            blob = torch.full((size,), float(version))
            atomic_write(path, lambda tmp: torch.save({"version": version, "blob": blob}, tmp))
        elif kind == "json":  # the text is made once: the loop's time is the writing
            atomic_write_text(path, texts[version])
        else:
            atomic_write_npz(path, {"version": np.array(version), "blob": np.random.rand(size // 4) + version})
        if version == 0:
            print("ready", flush=True)
        version = 1 - version
    """
)


def _check_complete(kind: str, path: Path) -> None:
    """``path`` must hold one complete version written by ``_WRITER``."""
    try:
        if kind == "torch":
            from benchmark.checkpoint import load_torch

            record = load_torch(path)
            ok = bool((record["blob"] == float(record["version"])).all())
        elif kind == "json":
            record = json.loads(path.read_text())
            ok = set(record["blob"]) == {record["version"]}
        else:
            with np.load(path) as data:
                version, blob = int(data["version"]), data["blob"]
            ok = bool(((blob >= version) & (blob < version + 1)).all())
    except Exception as err:
        raise NotSurvived(f"{path}: damaged after the kill ({type(err).__name__}: {err})") from err
    if not ok:
        raise NotSurvived(f"{path}: mixes two versions")


def kill_during_write(rng: np.random.Generator, workdir: Path) -> str:
    """SIGKILL a process that keeps rewriting one file at a random moment; the file must stay complete."""
    kind = str(rng.choice(WRITTEN_KINDS))
    mid_write = kill_writer(kind, float(rng.uniform(0.0, 0.5)), workdir)
    return f"{kind} file, killed {'mid-write' if mid_write else 'between writes'}"


WRITTEN_KINDS = ("torch", "json", "npz")


def kill_writer(kind: str, delay_s: float, workdir: Path, writer: str | None = None) -> bool:
    """Kill the rewriting process ``delay_s`` seconds after its first complete write; check the file.
    Returns whether the kill left a temporary file (it landed mid-write). ``writer``: the script run
    (default the one writing through :mod:`benchmark.io`)."""
    from benchmark.io import remove_stale_temps

    path = workdir / {"torch": CHECKPOINT_FILE, "json": METRICS_FILE, "npz": IMAGE_SCORES_FILE}[kind]
    size = 4_000_000  # values: 16 MB as float32, tens of MB as JSON text
    command = [sys.executable, "-c", writer or _WRITER, kind, str(path), str(size)]
    with _process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        if proc.stdout.readline().strip() != "ready":
            raise NotSurvived(f"writer did not start: {proc.stderr.read()[-500:]}")
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
    _check_complete(kind, path)
    mid_write = bool(_temps(workdir))
    remove_stale_temps(path)
    if _temps(workdir):
        raise NotSurvived(f"{workdir}: temporary files remain after remove_stale_temps: {_temps(workdir)}")
    return mid_write


def nonfinite_loss(rng: np.random.Generator, workdir: Path) -> str:
    """A loss part turns NaN at a random step: a clear error, and nothing written as if finished."""
    nan_step = int(rng.integers(0, TINY_PARAMS["train"]["steps"]))
    nan_at_step(nan_step, workdir)
    return f"NaN at step {nan_step}"


def nan_at_step(nan_step: int, workdir: Path) -> None:
    """Train ``nan-muss`` whose ``aux`` loss part is NaN at ``nan_step``; check the error and the files."""
    from benchmark import train
    from benchmark.checkpoint import load_torch

    p = project()
    params = p.params_file(
        workdir / PARAMS_FILE.name,
        "nan-muss",
        {"nan_step": nan_step},
        method_modules=["tools.faults.nan_method"],
    )
    out = workdir / "run"
    argv = p.train_command(params, "nan-muss", out)[3:]
    with contextlib.redirect_stdout(io.StringIO()):  # the stage's progress line: not the harness's output
        expect_error(lambda: train.main(argv), FloatingPointError, ["'nan-muss'", f"step {nan_step}", "aux="])
    if (out / MODEL_FILE).exists():
        raise NotSurvived("model.pt was written although training failed")
    checkpoint = out / CHECKPOINT_FILE
    if checkpoint.exists() and load_torch(checkpoint)["step"] > nan_step:
        raise NotSurvived(f"checkpoint of a step after the failure at step {nan_step}")
    logged = [json.loads(line)["step"] for line in (out / LOG_FILE).read_text().splitlines()]
    if logged != list(range(nan_step)):
        raise NotSurvived(f"log holds steps {logged}, expected 0..{nan_step - 1}")
    if _temps(out):
        raise NotSurvived(f"{out}: temporary files left: {_temps(out)}")


CASES: dict[str, Callable[[np.random.Generator, Path], str | None]] = {
    "kill_resume": kill_resume,
    "kill_during_write": kill_during_write,
    "nonfinite_loss": nonfinite_loss,
}
