"""Multi-process training (DDP under torchrun): 2 CPU processes with gloo against 1 process.

The launches are real: ``python -m torch.distributed.run --nproc_per_node 2 -m benchmark.train``
on 127.0.0.1 and a free port, one thread per process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import REPO, TINY_PARAMS, configure_runs, write_params

from benchmark import checkpoint, train
from benchmark.config import FieldError, TrainConfig

# 6 steps of a global batch of 4 (2 rows per process), a checkpoint every 2 steps
# Unweighted loss: a class-weighted CE is a weighted mean per shard (divided by the shard's own sum of
# weights), so DDP's average of the shards' gradients is not the global batch's (docs/training.md).
TRAIN = {**TINY_PARAMS["train"], "steps": 6, "batch_size": 4, "checkpoint_every": 2, "class_weights": "none"}

# each process trains alone: DDP replaced by the bare module, so no gradient is averaged
NO_SYNC_SCRIPT = """
import sys
import benchmark.train as train
train.DistributedDataParallel = lambda module, **kwargs: module
sys.exit(train.main(sys.argv[1:]))
"""

# every process stops in its 4th optimiser step, as a killed job would; the last checkpoint is after step 2
CRASH_SCRIPT = """
import sys
import torch
import benchmark.train as train
calls = {"n": 0}
original = torch.optim.AdamW.step
def crashing_step(self, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 4:
        raise SystemExit(3)
    return original(self, *args, **kwargs)
torch.optim.AdamW.step = crashing_step
sys.exit(train.main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(target: list[str], args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc <target> <args>`` in the repository, on the loopback only."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # no network needed
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *target,
        *args,
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _train_args(params: Path, prepared: Path, out: Path, method: str) -> list[str]:
    config = configure_runs(params) / f"{method}-uniform.json"
    return ["--dataset", "synthetic", "--run-name", f"{method}-uniform", "--seed", "0", "--config", str(config)] + [
        "--data-dir",
        str(prepared),
        "--out",
        str(out),
        "--no-progress",
    ]


def _params(tmp_path: Path, method: str) -> Path:
    return write_params(
        tmp_path / "params.yaml",
        {
            **TINY_PARAMS,
            "runs": [f"{m}-uniform" for m in sorted({"muss", method})],
            "method_params": {"muss": {}, method: {}},
            "train": TRAIN,
        },
    )


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# Float rounding (other reduction orders, 1 thread against 2) reaches ~1e-5 after 6 AdamW steps
# of lr 3e-3; training without the gradient averaging ends ~1e-2 away.
RTOL, ATOL = 1e-4, 1e-4


def _assert_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=RTOL, atol=ATOL, msg=key)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_prepared, monkeypatch):
    # CE is a mean over non-ignored pixels per shard; it averages to the global mean only when the
    # shards hold as many such pixels: the tiny synthetic labels have no ignored pixel at all.
    labels = np.load(tiny_prepared / "train" / "label.npy")
    assert not (labels == 255).any()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    params = _params(tmp_path, "muss")
    single = train.train(tiny_prepared, "muss", {}, TrainConfig(**TRAIN), 0, tmp_path / "one", progress=False)

    proc = _torchrun(["-m", "benchmark.train"], _train_args(params, tiny_prepared, tmp_path / "two", "muss"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote ") == 1  # process 0 alone reports (and writes)
    record = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    assert record["world_size"] == 2 and record["batch_size"] == 4
    one, two = _state(single), record["state_dict"]
    assert one.keys() == two.keys()
    _assert_close(two, one)
    # the same global-batch loss per step in both logs (process 0 averages the processes' losses)
    log_one = (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()
    log_two = (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()
    loss_one = [json.loads(line)["loss"] for line in log_one]
    loss_two = [json.loads(line)["loss"] for line in log_two]
    assert [json.loads(line)["step"] for line in log_two] == list(range(6))
    assert loss_two == pytest.approx(loss_one, rel=1e-4)
    state = checkpoint.load_torch(tmp_path / "two" / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2

    # The tolerance is meaningful: the same launch with each process training alone on its
    # rows (no gradient averaging) ends far outside it.
    script = tmp_path / "no_sync.py"
    script.write_text(NO_SYNC_SCRIPT)
    proc = _torchrun([str(script)], _train_args(params, tiny_prepared, tmp_path / "alone", "muss"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alone = _state(tmp_path / "alone" / "model.pt")
    with pytest.raises(AssertionError):
        _assert_close(alone, one)
    assert _max_difference(one, alone) > 10 * ATOL  # measured: 1.6e-2 alone, 1.0e-5 with DDP


@pytest.mark.slow
def test_sgma_trains_under_two_processes_and_resumes_exactly(tmp_path, tiny_prepared, monkeypatch, capsys):
    # SGMA draws its MAS modality from the global RNG: each process draws its own (no match with
    # 1 process expected), and a resume restores each process's random state.
    params = _params(tmp_path, "sgma")
    proc = _torchrun(["-m", "benchmark.train"], _train_args(params, tiny_prepared, tmp_path / "full", "sgma"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    assert record["world_size"] == 2 and record["steps"] == 6
    assert all(torch.isfinite(v).all() for v in record["state_dict"].values() if v.is_floating_point())
    ranks_rng = checkpoint.load_torch(tmp_path / "full" / "checkpoint.pt")["rank_rng"]
    assert not torch.equal(ranks_rng[0]["torch_rng"], ranks_rng[1]["torch_rng"])  # own draws per process

    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    resumed = tmp_path / "resumed"
    proc = _torchrun([str(script)], _train_args(params, tiny_prepared, resumed, "sgma"))
    assert proc.returncode != 0 and checkpoint.load_torch(resumed / "checkpoint.pt")["step"] == 2
    shutil.copytree(resumed, tmp_path / "other_world")
    proc = _torchrun(["-m", "benchmark.train"], _train_args(params, tiny_prepared, resumed, "sgma"))
    assert proc.returncode == 0 and "resuming sgma seed 0 from step 2" in proc.stderr, proc.stderr
    for key, value in _state(resumed / "model.pt").items():
        torch.testing.assert_close(value, record["state_dict"][key], rtol=0, atol=0, msg=key)
    steps = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(6))

    # the checkpoint of 2 processes resumed by 1: it trains on, with a note on stderr
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    config = TrainConfig(**TRAIN)
    path = train.train(tiny_prepared, "sgma", {}, config, 0, tmp_path / "other_world", progress=False)
    err = capsys.readouterr().err
    assert "from step 2" in err and "written by 2 process(es), resumed by 1" in err
    saved = checkpoint.load_torch(path)
    assert saved["steps"] == 6 and all(bool(torch.isfinite(v).all()) for v in saved["state_dict"].values())
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "other_world" / "train_log.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(6))


def test_a_global_batch_the_processes_do_not_divide_is_refused_before_any_compute(tmp_path, tiny_prepared, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    config = TrainConfig(**{**TRAIN, "batch_size": 6})
    with pytest.raises(FieldError, match=r"train\.batch_size: 6 .*world size 4"):
        train.train(tiny_prepared, "muss", {}, config, 0, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_launch_ranks_read_torchrun_environment():
    assert train.launch_ranks({}) == train.Ranks(0, 1, 0)
    assert train.launch_ranks({"WORLD_SIZE": "1", "RANK": "0"}) == train.Ranks(0, 1, 0)  # torchrun, 1 process
    ranks = train.launch_ranks({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert ranks == train.Ranks(3, 4, 1) and not ranks.main and ranks.distributed
    assert ranks.rows(8) == slice(6, 8)
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        train.launch_ranks({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match=r"RANK=4: must be in \[0, WORLD_SIZE\)"):
        train.launch_ranks({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(ValueError, match="RANK=None"):
        train.launch_ranks({"WORLD_SIZE": "2"})


def test_shards_cover_the_global_batch_and_its_draws():
    full = list(train.StepBatchSampler(16, 4, 0, 0, 8))
    halves = [list(train.StepBatchSampler(16, 4, 0, 0, 8, train.Ranks(r, 2).rows(4))) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == full
    x = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).view(4, 2, 3, 3)
    target = torch.arange(4 * 3 * 3).view(4, 3, 3)
    flipped, flipped_target = train.random_flips({"a": x}, target, train.step_generator(0, 5))
    for rank in (0, 1):
        rows = train.Ranks(rank, 2).rows(4)
        part, part_target = train.random_flips(
            {"a": x[rows]}, target[rows], train.step_generator(0, 5), batch_size=4, rows=rows
        )
        assert torch.equal(part["a"], flipped["a"][rows]) and torch.equal(part_target, flipped_target[rows])


def test_rank_seeds_differ_by_rank_seed_and_step():
    seeds = {train.rank_seed(s, r, t) for s in (0, 1) for r in (1, 2) for t in (0, 6)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
