"""Train one run (a method under a training protocol) on one data set with one seed.

``python -m benchmark.train --dataset synthetic --run-name muss-complete --seed 0`` reads params.yaml and
writes ``models/<dataset>/<run>/seed<k>/``: ``model.pt`` (the DVC output) and
``checkpoint.pt`` (resumable state, kept between runs, used only when its fingerprint of data,
method, parameters, protocol and seed matches the current configuration); and
``results/<dataset>/<run>/seed<k>/train_log.jsonl`` (one JSON
object per step: ``step``, ``loss`` and its parts, ``lr``, ``images_per_s``), which the report
plots as training curves.

``torchrun --nproc_per_node N -m benchmark.train ...`` trains with N processes (PyTorch DDP): each
takes its rows of every global batch (``train.batch_size``, which N must divide), the gradients are
averaged, and process 0 writes the files. One process (no torchrun) runs as before. See docs/training.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from benchmark.config import (
    MODELS_DIR,
    RESULTS_DIR,
    FieldError,
    TrainConfig,
    prepared_dir,
    resolve_device,
    run_dir,
    run_parser,
)
from benchmark.data.prepared import PreparedDataset
from benchmark.data.source import get_dataset
from benchmark.efficiency import device_name, peak_memory_mb, synchronize
from benchmark.io import atomic_write, atomic_write_text, remove_stale_temps
from benchmark.methods import create_method, get_method_class
from benchmark.methods.contract import check_contract, check_step_result
from benchmark.protocol import Protocol, apply_availability, builtin_protocol
from benchmark.schema import load_config

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"

#: Throughput options (docs/training.md) left out of the run's fingerprint at these defaults, so a
#: checkpoint written before they existed still resumes; any other value is part of it.
FINGERPRINT_DEFAULTS: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator for everything drawn at ``step`` (the protocol's modality draws, flips):
    stateless, so resume is exact."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: derive numpy/python seeds from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The global-RNG seed of process ``rank`` > 0 from ``step`` on (a 63-bit int), so that the
    method-internal draws (SGMA's MAS modality, M3L's masks) of each process differ from rank 0's,
    which keeps the 1-process seeding."""
    return int.from_bytes(hashlib.sha256(f"rank-seed:{seed}:{rank}:{step}".encode()).digest()[:8], "big") >> 1


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process in a torchrun launch: ``rank`` of ``world_size`` processes, ``local_rank`` on
    its node. One process (no torchrun, or torchrun with one process) is ``Ranks(0, 1, 0)``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Process 0: it writes the log, the checkpoint and model.pt and shows the progress bar."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's rows ``[r*b/W, (r+1)*b/W)`` of a global batch of ``b = batch_size``."""
        per = batch_size // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


def launch_ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """The :class:`Ranks` that torchrun sets in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``); ``WORLD_SIZE`` unset or 1 is one process. A bad value is a ``ValueError``
    naming the variable."""
    environ = os.environ if environ is None else environ

    def read(name: str, default: str | None) -> int:
        text = environ.get(name, default)
        try:
            return int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"environment variable {name}={text!r}: must be an int (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK)"
            ) from None

    world = read("WORLD_SIZE", "1")
    if world <= 1:
        return Ranks()
    rank, local_rank = read("RANK", None), read("LOCAL_RANK", "0")
    if not 0 <= rank < world:
        raise ValueError(f"environment variable RANK={rank}: must be in [0, WORLD_SIZE) = [0, {world})")
    return Ranks(rank, world, local_rank)


def check_global_batch(batch_size: int, ranks: Ranks) -> None:
    """``train.batch_size`` is the global batch: the world size must divide it (a ``FieldError`` otherwise)."""
    world = ranks.world_size
    if batch_size % world:
        raise FieldError(
            "train",
            "batch_size",
            batch_size,
            f"a multiple of the world size {world}",
            f"is not divisible by the world size {world} (torchrun processes); allowed: a multiple of {world}, "
            "since the global batch is split evenly over the processes",
        )


def gather(obj: Any, ranks: Ranks) -> list[Any]:
    """Every process's ``obj`` in rank order (``all_gather_object``); ``[obj]`` in one process."""
    if not ranks.distributed:
        return [obj]
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def mean_over_ranks(loss: float, parts: Mapping[str, float], ranks: Ranks) -> tuple[float, dict[str, float]]:
    """The log's loss and parts averaged over the processes (equal shards: the global batch's
    values); a part only some processes report is averaged over those."""
    gathered = gather((loss, dict(parts)), ranks)
    keys = dict.fromkeys(key for _, p in gathered for key in p)  # every process's parts, in order
    mean = {key: statistics.fmean(p[key] for _, p in gathered if key in p) for key in keys}
    return statistics.fmean(total for total, _ in gathered), mean


def to_channels_last(method: nn.Module) -> None:
    """``train.channels_last``: every 4-D parameter and buffer in channels_last memory format (in place;
    tensors of other ranks, e.g. a ``Conv3d``'s 5-D weight, stay as they are)."""
    for tensor in (*method.parameters(), *method.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.to(memory_format=torch.channels_last)  # restrides even 1x1 kernels


def compile_parts(module: nn.Module) -> list[nn.Module]:
    """``train.compile``: ``torch.compile`` every direct child of ``module``, looking inside
    ``ModuleList`` / ``ModuleDict`` containers (never called themselves) for their elements;
    returns the compiled modules. ``nn.Module.compile`` keeps the state_dict keys, so checkpoints
    stay interchangeable with uncompiled runs."""
    compiled = []
    for child in module.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            compiled += compile_parts(child)
        else:
            child.compile()
            compiled.append(child)
    return compiled


class TrainingStep(nn.Module):
    """``forward`` is ``method.training_step``: what DistributedDataParallel wraps, since the
    trainer calls ``training_step`` (extra passes, teachers), not the method's ``forward``."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(
        self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.method.training_step(inputs, target, available)


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``train.precision``: bfloat16 autocast on ``device`` for ``"bf16"``, nothing for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index batches of steps ``start .. total-1``; epoch ``e`` is a permutation seeded
    by ``(seed, e)``, incomplete last batches are dropped. Same arguments, same batches.
    ``rows`` keeps those rows of each (global) batch: one process's shard under DDP."""

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start: int, total: int, rows: slice | None = None
    ) -> None:
        if num_samples < batch_size:
            raise ValueError(f"training split has {num_samples} samples, fewer than batch_size={batch_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.total, self.rows = start, total, rows
        self.per_epoch = num_samples // batch_size

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.total):
            epoch, position = divmod(step, self.per_epoch)
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            batch = order[position * self.batch_size : (position + 1) * self.batch_size]
            yield (batch if self.rows is None else batch[self.rows]).tolist()


def training_loader(
    dataset: PreparedDataset,
    config: TrainConfig,
    seed: int,
    device: torch.device,
    start: int,
    total: int,
    rows: slice | None = None,
) -> DataLoader:
    """The trainer's DataLoader: the batches of steps ``start .. total-1`` (:class:`StepBatchSampler`,
    this process's ``rows`` of each under DDP), ``train.num_workers`` workers, pinned memory on CUDA."""
    return DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(len(dataset), config.batch_size, seed, start, total, rows),
        num_workers=config.num_workers,
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # Its own generator: creating the loader's iterator must not draw from the global RNG,
        # which methods use during training (SGMA's MAS draws) and checkpoints restore exactly.
        generator=torch.Generator().manual_seed(seed),
    )


def poly_schedule(step: int, *, steps: int, warmup_steps: int, power: float) -> float:
    """LR multiplier: linear warm-up from 1e-6 to 1, then ``(1 - progress) ** power``."""
    if step < warmup_steps:
        return 1e-6 + (1 - 1e-6) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return max(0.0, 1.0 - progress) ** power


def random_flips(
    inputs: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    generator: torch.Generator,
    *,
    batch_size: int | None = None,
    rows: slice | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Flip each sample horizontally and/or vertically with probability 1/2 each. Under DDP the
    tensors hold ``rows`` of a global batch of ``batch_size``: the flips are drawn for the whole
    batch, so each row is flipped as in a 1-process run."""
    flips = torch.rand(batch_size or target.shape[0], 2, generator=generator) < 0.5
    if rows is not None:
        flips = flips[rows]

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


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[torch.device]:
    """The device this process trains on, inside the torchrun process group when ``ranks`` is
    distributed: joined (NCCL on CUDA, using ``cuda:LOCAL_RANK``; gloo otherwise) on entry and left
    on exit, also on an error; a caller's own group is used and left to the caller. One process:
    ``device`` as it is, no group."""
    if not ranks.distributed:
        yield device
        return
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"environment variable LOCAL_RANK={ranks.local_rank}: this process sees only "
                f"{torch.cuda.device_count()} CUDA device(s); launch at most that many processes per node"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)  # NCCL and all_gather_object use the current device
    owns_group = not dist.is_initialized()  # a caller's own process group is left to the caller
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        if owns_group:
            dist.destroy_process_group()


def dataset_facts(dataset: PreparedDataset) -> dict[str, Any]:
    """What a method may ask of the data set (``dataset_facts`` of the method contract): ``dataset``
    (its name), ``classes``, ``bands`` (``{modality: band names}`` its source declares, empty when
    unknown) and ``normalisation`` (meta.json's)."""
    name = dataset.meta["dataset"]
    try:
        source_bands = get_dataset(name).bands
    except KeyError:  # prepared by a source that is not registered here
        source_bands = {}
    return {
        "dataset": name,
        "classes": list(dataset.classes),
        "bands": {m: list(source_bands.get(m, ())) for m in dataset.modalities},
        "normalisation": dataset.meta.get("normalisation") or {},
    }


def tile_class_counts(labels: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Labelled pixels of each class in each tile, ``int64[N, K]``, of ``labels`` (int[N, H, W]), read
    tile by tile (a memory-mapped split never loads whole); ValueError when no pixel is labelled."""
    counts = np.stack(
        [np.bincount(t[t != ignore_index].astype(np.int64), minlength=num_classes)[:num_classes] for t in labels]
    )
    if not counts.any():
        raise ValueError("the training split holds no labelled pixel")
    return counts


def median_frequency_weights(labels: np.ndarray, num_classes: int, ignore_index: int) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus 2015, as SegNet): ``w_c = median(f) / f_c`` with
    ``f_c`` = pixels of class ``c`` / labelled pixels of the tiles in which ``c`` appears, the median
    over the classes that appear; a class absent from ``labels`` (int[N, H, W]) gets weight 0;
    rounded to 6 decimals."""
    counts = tile_class_counts(labels, num_classes, ignore_index)
    pixels = counts.sum(axis=0)
    exposure = np.where(counts > 0, counts.sum(axis=1, keepdims=True), 0).sum(axis=0)  # of the tiles holding c
    present = pixels > 0
    frequency = pixels[present] / exposure[present]
    weights = np.zeros(num_classes)
    weights[present] = np.median(frequency) / frequency
    return [round(float(w), 6) for w in weights]


def enet_weights(labels: np.ndarray, num_classes: int, ignore_index: int, c: float = 1.02) -> list[float]:
    """ENet's class weighting (Paszke et al. 2016): ``w_c = 1 / ln(c + p_c)`` with ``p_c`` the share of
    class ``c`` among the labelled pixels of ``labels`` (int[N, H, W]), ``c = 1.02`` (bounds the
    weight of a rare class at 1 / ln(1.02) ~ 50); rounded to 6 decimals."""
    pixels = tile_class_counts(labels, num_classes, ignore_index).sum(axis=0)
    return [round(float(w), 6) for w in 1.0 / np.log(c + pixels / pixels.sum())]


CLASS_WEIGHT_SCHEMES = {"median_frequency": median_frequency_weights, "enet": enet_weights}


def class_weight(dataset: PreparedDataset, config: TrainConfig) -> list[float] | None:
    """The cross-entropy's class weights of ``train.class_weights`` on the training split ``dataset``."""
    if config.class_weights == "none":
        return None
    return CLASS_WEIGHT_SCHEMES[config.class_weights](dataset.labels, len(dataset.classes), dataset.ignore_index)


def method_init(
    dataset: PreparedDataset, config: TrainConfig, method_params: Mapping[str, Any], registered: str
) -> dict[str, Any]:
    """The constructor arguments of the registered method ``registered`` on the training split
    ``dataset``: the data set's facts (the ``dataset_facts`` it declares among them), the ``train``
    section's architecture and class weights (for a method whose constructor takes ``class_weight``),
    then the method's own parameters (which may override the architecture)."""
    from benchmark.schema import accepted_params

    cls = get_method_class(registered)
    facts = dataset_facts(dataset)
    accepted, open_ = accepted_params(cls)
    weights = class_weight(dataset, config) if "class_weight" in accepted or open_ else None
    return {
        "modalities": dataset.modalities,
        "num_classes": len(dataset.classes),
        **{key: facts[key] for key in getattr(cls, "dataset_facts", ())},
        "backbone": config.backbone,
        "pretrained": config.pretrained,
        "decoder_dim": config.decoder_dim,
        "ignore_index": dataset.ignore_index,
        **({"class_weight": weights} if weights is not None else {}),
        **dict(method_params),
    }


def fit_once(
    method: nn.Module,
    dataset: PreparedDataset,
    protocol: Protocol,
    seed: int,
    log_path: Path,
    progress: bool,
) -> tuple[dict[str, float], float]:
    """A ``trained_by = "fit"`` method (the method contract): ``fit`` once on the training split, every
    tile's modalities drawn by ``protocol`` as at step 0 -> (its figures, seconds). The step log is
    left empty: there are no gradient steps."""
    available = protocol.draw(len(dataset), len(dataset.modalities), step_generator(seed, 0), 0, 1)
    seed_everything(seed)
    atomic_write_text(log_path, "")
    if progress:
        print(f"fitting {getattr(method, 'method_name', type(method).__name__)} seed {seed}", file=sys.stderr)
    tick = time.perf_counter()
    figures = method.fit(dataset, available, seed)
    return {k: float(v) for k, v in figures.items()}, time.perf_counter() - tick


def train(
    data_root: Path,
    method_name: str,
    method_params: Mapping[str, Any],
    config: TrainConfig,
    seed: int,
    out_dir: Path,
    *,
    protocol: Protocol | None = None,
    log_path: Path | None = None,
    progress: bool = True,
    registered: str | None = None,
) -> Path:
    """Train and write ``out_dir/model.pt``; resume from ``out_dir/checkpoint.pt`` when it matches.
    The step log goes to ``log_path`` (default ``out_dir/train_log.jsonl``). ``protocol`` draws each
    sample's available modalities per step (default ``uniform``; the pipeline passes the run's own).
    ``registered``: the registered method that builds ``method_name`` when that is a variant
    (params.yaml ``variants``; default ``method_name`` itself).

    Launched by torchrun with ``WORLD_SIZE`` > 1, every process runs this: it joins the process
    group (NCCL on CUDA, using ``cuda:LOCAL_RANK``; gloo otherwise), trains its rows of each global
    batch under DistributedDataParallel and leaves the group at the end, also on an error. An error
    on one process only (the contract check or a non-finite loss on its rows) ends that process;
    torchrun then stops the others, which would otherwise wait in the next collective: a caller
    that set up its own process group needs the backend's timeout or its own watchdog.
    """
    ranks = launch_ranks()
    check_global_batch(config.batch_size, ranks)  # before any compute
    protocol = protocol or builtin_protocol("uniform")
    with process_group(ranks, resolve_device(config.device)) as device:
        dataset = PreparedDataset(data_root, "train")
        builds = registered or method_name
        init_kwargs = method_init(dataset, config, method_params, builds)
        train_key = {
            k: v for k, v in vars(config).items() if k not in FINGERPRINT_DEFAULTS or v != FINGERPRINT_DEFAULTS[k]
        }
        run_id = fingerprint(
            {
                "method": method_name,
                **({"registered_method": builds} if builds != method_name else {}),
                "init": init_kwargs,
                "train": train_key,
                "protocol": protocol.record(),
                "seed": seed,
                "data": dataset.meta,
            }
        )
        seed_everything(seed)
        method = create_method(builds, **init_kwargs).to(device)
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path = Path(log_path) if log_path is not None else out_dir / LOG_FILE
        if getattr(method, "trained_by", "gradient") == "fit":  # fitted in one call: no optimiser or checkpoint
            record = {
                "method": method_name,
                "registered_method": builds,
                "protocol": protocol.record(),
                "init": init_kwargs,
                "fingerprint": run_id,
                "seed": seed,
                "dataset": dataset.meta["dataset"],
            }
            return fit_run(method, dataset, protocol, record, out_dir, log_path, ranks, progress)
        if ranks.rank > 0:  # same initial weights; the method's own draws (SGMA's MAS, M3L's masks) must differ
            seed_everything(rank_seed(seed, ranks.rank))
        if config.channels_last:
            to_channels_last(method)
        if config.compile:
            compile_parts(method)
        trainable = [p for p in method.parameters() if p.requires_grad]  # an EMA teacher is not optimised
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: poly_schedule(s, steps=config.steps, warmup_steps=config.warmup_steps, power=config.poly_power),
        )

        checkpoint_path = out_dir / CHECKPOINT_FILE
        if ranks.main:  # what a killed run may have left
            for path in (checkpoint_path, out_dir / MODEL_FILE, log_path):
                remove_stale_temps(path)
        start, train_seconds, peak_mb, step_seconds = 0, 0.0, 0.0, []
        if checkpoint_path.exists():
            state = load_torch(checkpoint_path, device)
            if state.get("fingerprint") == run_id:
                method.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                saved_world = state.get("world_size", 1)
                if ranks.main or saved_world == ranks.world_size:  # each process's own random state
                    rng = state if ranks.main else state["rank_rng"][ranks.rank]
                    torch.set_rng_state(rng["torch_rng"].cpu())
                    if rng.get("cuda_rng"):
                        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda_rng"]])
                else:  # no saved state for this rank: a fresh seed, as at the start
                    seed_everything(rank_seed(seed, ranks.rank, state["step"]))
                start, train_seconds = state["step"], state["train_seconds"]
                peak_mb = state.get("peak_memory_mb", 0.0)  # the peak of the processes before this one
                step_seconds = list(state.get("step_seconds", []))
                if ranks.main:
                    print(f"resuming {method_name} seed {seed} from step {start}", file=sys.stderr)
                    if saved_world != ranks.world_size:
                        print(
                            f"note: {checkpoint_path} was written by {saved_world} process(es), resumed by "
                            f"{ranks.world_size}: processes 1..{ranks.world_size - 1} reseed their random draws, "
                            "so the result is not bit-identical to an uninterrupted run",
                            file=sys.stderr,
                        )
        if ranks.distributed:  # every process must resume from the same step (one checkpoint file for all)
            starts = gather(start, ranks)
            if len(set(starts)) > 1:
                raise RuntimeError(
                    f"{checkpoint_path}: the processes would resume from different steps {starts} (by rank); every "
                    "process must read the same checkpoint: put the output folder on a file system all nodes share"
                )
        if ranks.main:
            log_lines = read_log(log_path, start) if start else []
            atomic_write_text(log_path, "".join(line + "\n" for line in log_lines))
        step_fn: nn.Module = TrainingStep(method)  # looks training_step up when called: after the contract check
        if ranks.distributed:
            # DDP averages the gradients over the processes: with equal shards and per-sample-mean losses,
            # the global batch's gradient. find_unused_parameters: some steps leave parameters out (the
            # stem of a modality no sample of a shard has, a method's branch that runs on some steps only).
            step_fn = DistributedDataParallel(
                step_fn,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        rows = ranks.rows(config.batch_size) if ranks.distributed else None

        loader = training_loader(dataset, config, seed, device, start, config.steps, rows)
        modalities = list(dataset.modalities)
        method.train()
        bar = tqdm(
            total=config.steps,
            initial=start,
            desc=f"train {method_name} s{seed}",
            disable=not (progress and ranks.main),
            mininterval=1.0,
        )
        step = start
        # line-buffered: `tail -f` shows each step; only process 0 writes the log
        with log_path.open("a", encoding="utf-8", buffering=1) if ranks.main else open(os.devnull, "w") as log:
            for inputs, target in loader:
                tick = time.perf_counter()
                generator = step_generator(seed, step)
                inputs = {m: x.to(device, non_blocking=True) for m, x in inputs.items()}
                target = target.to(device, non_blocking=True)
                if config.augment:
                    inputs, target = random_flips(inputs, target, generator, batch_size=config.batch_size, rows=rows)
                # drawn for the global batch, so each process's rows get the masks of a 1-process run
                available = protocol.draw(config.batch_size, len(modalities), generator, step, config.steps)
                available = (available if rows is None else available[rows]).to(device)
                inputs = apply_availability(inputs, available, modalities)
                if config.channels_last:
                    inputs = {
                        m: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                        for m, x in inputs.items()
                    }
                if step == start:  # the check must leave no trace: random state and buffers as they were
                    cuda_devices = [device] if device.type == "cuda" else []
                    buffers = {name: b.clone() for name, b in method.named_buffers()}  # e.g. BatchNorm statistics
                    with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
                        check_contract(method_name, method, inputs, target, available, len(dataset.classes), step)
                        for name, b in method.named_buffers():
                            b.copy_(buffers[name])
                with precision_context(config.precision, device):
                    result = step_fn(inputs, target, available)
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
                loss = float(total.detach())
                if ranks.distributed:
                    loss, parts = mean_over_ranks(loss, parts, ranks)
                record = {
                    "step": step - 1,
                    "loss": loss,
                    **parts,
                    "lr": lr,
                    # model throughput of the global batch, data loading excluded
                    "images_per_s": target.shape[0] * ranks.world_size / seconds,
                }
                log.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.0f}", refresh=False)
                bar.update(1)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    peak = max(gather(max(peak_mb, peak_memory_mb(device)), ranks))  # over the processes
                    cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
                    rank_rng = gather({"torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng}, ranks)
                    if ranks.main:
                        log.flush()
                        state = {
                            "fingerprint": run_id,
                            "step": step,
                            "train_seconds": train_seconds,
                            "peak_memory_mb": peak,
                            "step_seconds": step_seconds,
                            "model": method.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "torch_rng": torch.get_rng_state(),
                            "cuda_rng": cuda_rng,
                        }
                        if ranks.distributed:  # every process's random state, restored by a resume with as many
                            state.update(world_size=ranks.world_size, rank_rng=rank_rng)
                        _save_torch(checkpoint_path, state)
                    if ranks.distributed:
                        dist.barrier()
        bar.close()
        model_path = out_dir / MODEL_FILE
        peak = max(gather(max(peak_mb, peak_memory_mb(device)), ranks))
        if not ranks.main:
            dist.barrier()  # returns once process 0 has written model.pt
            return model_path
        record = {
            "method": method_name,
            "registered_method": builds,
            "protocol": protocol.record(),
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
            "peak_memory_mb": peak,
            "device": device_name(device),
        }
        if ranks.distributed:
            record["world_size"] = ranks.world_size
        _save_torch(model_path, record)
        if ranks.distributed:
            dist.barrier()
        return model_path


def fit_run(
    method: nn.Module,
    dataset: PreparedDataset,
    protocol: Protocol,
    record: dict[str, Any],
    out_dir: Path,
    log_path: Path,
    ranks: Ranks,
    progress: bool,
) -> Path:
    """Fit a ``trained_by = "fit"`` method (:func:`fit_once`) and write ``model.pt`` with the record every
    run has (``steps`` 0, no step times). A rerun fits again (seconds); under torchrun process 0
    fits and writes while the others wait."""
    model_path = out_dir / MODEL_FILE
    if ranks.main:
        remove_stale_temps(model_path)
        figures, seconds = fit_once(method, dataset, protocol, record["seed"], log_path, progress)
        device = next(iter(method.buffers()), torch.zeros(())).device
        _save_torch(
            model_path,
            {
                **record,
                "state_dict": method.state_dict(),
                "fit": figures,
                "steps": 0,
                "batch_size": None,
                "train_seconds": seconds,
                "median_step_seconds": None,
                "peak_memory_mb": peak_memory_mb(device),
                "device": device_name(device),
            },
        )
    if ranks.distributed:
        dist.barrier()
    return model_path


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained method from ``model.pt`` -> (method in eval mode, the saved record)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: trained model not found (run the train stage)")
    record = load_torch(path, device)
    init = dict(record["init"])
    init["pretrained"] = False  # the weights come from the file
    method = create_method(record.get("registered_method", record["method"]), **init).to(device)
    method.load_state_dict(record["state_dict"])
    return method.eval(), record


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default models/<dataset>/<run>/seed<k>)")
    args = parser.parse_args(argv)
    params = load_config(args.params)  # validated: imports method_modules, checks method_params
    method, protocol = params.run_parts(args.run_name)
    registered, method_params = params.method_spec(method)
    data_root = args.data_dir or prepared_dir(args.dataset)
    out = args.out or run_dir(MODELS_DIR, args.dataset, args.run_name, args.seed)
    log = (args.out / LOG_FILE) if args.out else run_dir(RESULTS_DIR, args.dataset, args.run_name, args.seed) / LOG_FILE
    path = train(
        data_root,
        method,
        method_params,
        params.train,
        args.seed,
        out,
        protocol=protocol,
        log_path=log,
        progress=not args.no_progress,
        registered=registered,
    )
    if launch_ranks().main:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
