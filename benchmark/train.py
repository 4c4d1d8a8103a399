"""Train one method on one data set with one seed, under random modality dropout.

``python -m benchmark.train --dataset synthetic --method muss --seed 0`` reads params.yaml and
writes ``models/<dataset>/<method>/seed<k>/``: ``model.pt`` (the DVC output) and
``checkpoint.pt`` (resumable state, kept between runs, used only when its fingerprint matches
the current configuration); and ``results/<dataset>/<method>/seed<k>/train_log.jsonl`` (one JSON
object per step: ``step``, ``loss`` and its parts, ``lr``, ``images_per_s``), which the report
plots as training curves.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from benchmark.config import (
    MODELS_DIR,
    RESULTS_DIR,
    TrainConfig,
    prepared_dir,
    resolve_device,
    run_dir,
    run_parser,
)
from benchmark.data.prepared import PreparedDataset
from benchmark.efficiency import device_name, peak_memory_mb, synchronize
from benchmark.io import atomic_write, atomic_write_text, remove_stale_temps
from benchmark.methods import create_method
from benchmark.methods.contract import check_contract, check_step_result
from benchmark.protocol import apply_availability, draw_available
from benchmark.schema import load_config

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator for everything drawn at ``step`` (dropout, flips): stateless, so resume is exact."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: derive numpy/python seeds from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index batches of steps ``start .. total-1``; epoch ``e`` is a permutation seeded
    by ``(seed, e)``, incomplete last batches are dropped. Same arguments, same batches."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, total: int) -> None:
        if num_samples < batch_size:
            raise ValueError(f"training split has {num_samples} samples, fewer than batch_size={batch_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.total = start, total
        self.per_epoch = num_samples // batch_size

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.total):
            epoch, position = divmod(step, self.per_epoch)
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            yield order[position * self.batch_size : (position + 1) * self.batch_size].tolist()


def poly_schedule(step: int, *, steps: int, warmup_steps: int, power: float) -> float:
    """LR multiplier: linear warm-up from 1e-6 to 1, then ``(1 - progress) ** power``."""
    if step < warmup_steps:
        return 1e-6 + (1 - 1e-6) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return max(0.0, 1.0 - progress) ** power


def random_flips(
    inputs: Mapping[str, torch.Tensor], target: torch.Tensor, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Flip each sample horizontally and/or vertically with probability 1/2 each."""
    flips = torch.rand(target.shape[0], 2, generator=generator) < 0.5

    def apply(x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 1)
        h = flips[:, 0].view(shape).to(x.device)
        v = flips[:, 1].view(shape).to(x.device)
        x = torch.where(h, x.flip(-1), x)
        return torch.where(v, x.flip(-2), x)

    return {m: apply(x) for m, x in inputs.items()}, apply(target)


def fingerprint(payload: Mapping[str, Any]) -> str:
    """sha256 of a canonical JSON dump: identifies a training configuration."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` (tensors, numbers, strings and containers only: a file
    cannot run code); an unreadable or truncated file is a ``ValueError`` naming it."""
    try:
        record = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err}); delete it") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a dict, got {type(record).__name__}; delete it")
    return record


def read_log(path: Path, before: int) -> list[str]:
    """The lines of the step log ``path`` for steps ``< before``. A last line cut short by a killed
    process is dropped; a damaged line elsewhere is a ``ValueError`` naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            if number == len(lines):  # written when the process was killed
                break
            raise ValueError(f"{path}: line {number} is not a step record ({err})") from None
        if step < before:
            kept.append(line)
    return kept


def train(
    data_root: Path,
    method_name: str,
    method_params: Mapping[str, Any],
    config: TrainConfig,
    seed: int,
    out_dir: Path,
    *,
    log_path: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train and write ``out_dir/model.pt``; resume from ``out_dir/checkpoint.pt`` when it matches.
    The step log goes to ``log_path`` (default ``out_dir/train_log.jsonl``)."""
    dataset = PreparedDataset(data_root, "train")
    init_kwargs = {
        "modalities": dataset.modalities,
        "num_classes": len(dataset.classes),
        "backbone": config.backbone,
        "pretrained": config.pretrained,
        "decoder_dim": config.decoder_dim,
        "ignore_index": dataset.ignore_index,
        **dict(method_params),
    }
    run_id = fingerprint(
        {"method": method_name, "init": init_kwargs, "train": vars(config), "seed": seed, "data": dataset.meta}
    )
    device = resolve_device(config.device)
    seed_everything(seed)
    method = create_method(method_name, **init_kwargs).to(device)
    trainable = [p for p in method.parameters() if p.requires_grad]  # an EMA teacher is not optimised
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: poly_schedule(s, steps=config.steps, warmup_steps=config.warmup_steps, power=config.poly_power),
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    log_path = Path(log_path) if log_path is not None else out_dir / LOG_FILE
    for path in (checkpoint_path, out_dir / MODEL_FILE, log_path):  # what a killed run may have left
        remove_stale_temps(path)
    start, train_seconds, peak_mb, step_seconds = 0, 0.0, 0.0, []
    if checkpoint_path.exists():
        state = load_torch(checkpoint_path, device)
        if state.get("fingerprint") == run_id:
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"].cpu())
            if state.get("cuda_rng"):
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
            start, train_seconds = state["step"], state["train_seconds"]
            peak_mb = state.get("peak_memory_mb", 0.0)  # the peak of the processes before this one
            step_seconds = list(state.get("step_seconds", []))
            print(f"resuming {method_name} seed {seed} from step {start}", file=sys.stderr)
    log_lines = read_log(log_path, start) if start else []
    atomic_write_text(log_path, "".join(line + "\n" for line in log_lines))

    loader = DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(len(dataset), config.batch_size, seed, start, config.steps),
        num_workers=config.num_workers,
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # Its own generator: creating the loader's iterator must not draw from the global RNG,
        # which methods use during training (SGMA's MAS draws) and checkpoints restore exactly.
        generator=torch.Generator().manual_seed(seed),
    )
    modalities = list(dataset.modalities)
    method.train()
    bar = tqdm(
        total=config.steps, initial=start, desc=f"train {method_name} s{seed}", disable=not progress, mininterval=1.0
    )
    step = start
    with log_path.open("a", encoding="utf-8", buffering=1) as log:  # line-buffered: `tail -f` shows each step
        for inputs, target in loader:
            tick = time.perf_counter()
            generator = step_generator(seed, step)
            inputs = {m: x.to(device, non_blocking=True) for m, x in inputs.items()}
            target = target.to(device, non_blocking=True)
            if config.augment:
                inputs, target = random_flips(inputs, target, generator)
            available = draw_available(target.shape[0], len(modalities), generator, config.drop_prob).to(device)
            inputs = apply_availability(inputs, available, modalities)
            if step == start:  # the check must leave no trace: random state and buffers as they were
                cuda_devices = [device] if device.type == "cuda" else []
                buffers = {name: b.clone() for name, b in method.named_buffers()}  # e.g. BatchNorm statistics
                with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
                    check_contract(method_name, method, inputs, target, available, len(dataset.classes), step)
                    for name, b in method.named_buffers():
                        b.copy_(buffers[name])
            result = method.training_step(inputs, target, available)
            total, parts = check_step_result(method_name, result, step), result[1]
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            scheduler.step()
            method.after_optimizer_step()
            synchronize(device)  # on CUDA the step is queued work until here
            seconds = time.perf_counter() - tick
            train_seconds += seconds
            step_seconds.append(seconds)
            step += 1
            record = {
                "step": step - 1,
                "loss": float(total.detach()),
                **parts,
                "lr": lr,
                "images_per_s": target.shape[0] / seconds,  # model throughput, data loading excluded
            }
            log.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.0f}", refresh=False)
            bar.update(1)
            if step % config.checkpoint_every == 0 or step == config.steps:
                log.flush()
                _save_torch(
                    checkpoint_path,
                    {
                        "fingerprint": run_id,
                        "step": step,
                        "train_seconds": train_seconds,
                        "peak_memory_mb": max(peak_mb, peak_memory_mb(device)),
                        "step_seconds": step_seconds,
                        "model": method.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                    },
                )
    bar.close()
    model_path = out_dir / MODEL_FILE
    _save_torch(
        model_path,
        {
            "method": method_name,
            "init": init_kwargs,
            "state_dict": method.state_dict(),
            "fingerprint": run_id,
            "seed": seed,
            "dataset": dataset.meta["dataset"],
            "steps": config.steps,
            "batch_size": config.batch_size,
            "train_seconds": train_seconds,
            # the median step: robust to the first steps' warm-up and to other processes' hiccups
            "median_step_seconds": statistics.median(step_seconds) if step_seconds else None,
            "peak_memory_mb": max(peak_mb, peak_memory_mb(device)),
            "device": device_name(device),
        },
    )
    return model_path


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained method from ``model.pt`` -> (method in eval mode, the saved record)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: trained model not found (run the train stage)")
    record = load_torch(path, device)
    init = dict(record["init"])
    init["pretrained"] = False  # the weights come from the file
    method = create_method(record["method"], **init).to(device)
    method.load_state_dict(record["state_dict"])
    return method.eval(), record


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default models/<dataset>/<method>/seed<k>)"
    )
    args = parser.parse_args(argv)
    params = load_config(args.params)  # validated: imports method_modules, checks method_params
    method_params = params.method_params.get(args.method, {})
    data_root = args.data_dir or prepared_dir(args.dataset)
    out = args.out or run_dir(MODELS_DIR, args.dataset, args.method, args.seed)
    log = (args.out / LOG_FILE) if args.out else run_dir(RESULTS_DIR, args.dataset, args.method, args.seed) / LOG_FILE
    path = train(
        data_root, args.method, method_params, params.train, args.seed, out, log_path=log, progress=not args.no_progress
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
