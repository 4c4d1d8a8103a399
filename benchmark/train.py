"""Train one run (a method under a training protocol) on one data set with one seed.

``python -m benchmark.train --dataset synthetic --run-name muss-complete --seed 0`` reads the run's
configuration ``configs/<run>.json`` (written by ``python -m benchmark.configure``, which checks
params.yaml; it imports the run's own method module and no other), and writes
``models/<dataset>/<run>/seed<k>/``: ``model.pt`` (the DVC output) and ``checkpoint.pt``
(resumable state, kept between runs, used only when its fingerprint of data, method, parameters,
protocol and seed matches the current configuration); and
``results/runs/<dataset>/<run>/seed<k>/train_log.jsonl`` (one JSON
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
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from benchmark import errors
from benchmark.augment import random_rescale
from benchmark.checkpoint import (
    load_torch,
    restore_rng,
    restore_training,
    rng_state,
    save_torch,
)
from benchmark.config import FieldError, TrainConfig, resolve_device, run_parser, stage_label
from benchmark.data.prepared import PreparedDataset
from benchmark.data.source import get_dataset
from benchmark.efficiency import device_name, peak_memory_mb, synchronize
from benchmark.errors import DamagedFileError
from benchmark.io import atomic_write_text, remove_stale_temps
from benchmark.layout import (
    CHECKPOINT_FILE,
    LOG_FILE,
    MODEL_FILE,
    MODELS_DIR,
    RUNS_DIR,
    prepared_dir,
    run_dir,
)
from benchmark.methods import accepted_params, build_method, registered_class
from benchmark.methods.contract import check_contract, check_step_result
from benchmark.protocol import Protocol, apply_availability, builtin_protocol
from benchmark.run_config import read_run_config

#: ``train`` options left out of the run's fingerprint at these defaults, so a checkpoint written
#: before they existed still resumes; any other value is part of it. The throughput options
#: (docs/training.md), the warm-up's start and the epoch fields (the fingerprint takes the recipe in
#: steps: :meth:`TrainConfig.in_steps`).
FINGERPRINT_DEFAULTS: dict[str, Any] = {
    key: TrainConfig.model_fields[key].default
    for key in ("precision", "channels_last", "compile", "warmup_start", "scale_range", "epochs", "warmup_epochs")
}


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
        dataset.as_stored(),  # compact values to the device, standardised there (prepare_batch)
        batch_sampler=StepBatchSampler(len(dataset), config.batch_size, seed, start, total, rows),
        num_workers=config.num_workers,
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # Its own generator: creating the loader's iterator must not draw from the global RNG,
        # which methods use during training (SGMA's MAS draws) and checkpoints restore exactly.
        generator=torch.Generator().manual_seed(seed),
    )


def poly_schedule(step: int, *, steps: int, warmup_steps: int, power: float, start: float = 1e-6) -> float:
    """LR multiplier: linear warm-up from ``start`` to 1 over ``warmup_steps``, then
    ``(1 - progress) ** power`` down to 0 at ``steps``."""
    if step < warmup_steps:
        return start + (1 - start) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return max(0.0, 1.0 - progress) ** power


def lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``config``'s warm-up + poly schedule (:func:`poly_schedule`) on ``optimizer``; ``config`` in steps."""
    steps, warmup = config.total_steps, config.warmup_steps
    if warmup is None:
        raise ValueError("train.warmup_steps is null (the warm-up is in epochs): convert with TrainConfig.in_steps")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: poly_schedule(
            s, steps=steps, warmup_steps=warmup, power=config.poly_power, start=config.warmup_start
        ),
    )


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
            raise DamagedFileError(f"{path}: line {number} is not a step record ({err}); delete it") from None
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
    cls = registered_class(registered)
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
    tile's modalities drawn by ``protocol`` as at step 0 -> (its figures, seconds). The log gets one
    line, ``{"fit": {figures}, "seconds": s, "tiles": n}``: there are no gradient steps (no curve)."""
    available = protocol.draw(len(dataset), len(dataset.modalities), step_generator(seed, 0), 0, 1)
    seed_everything(seed)
    if progress:
        print(f"fitting {getattr(method, 'method_name', type(method).__name__)} seed {seed}", file=sys.stderr)
    tick = time.perf_counter()
    figures = {k: float(v) for k, v in method.fit(dataset, available, seed).items()}
    seconds = time.perf_counter() - tick
    atomic_write_text(log_path, json.dumps({"fit": figures, "seconds": seconds, "tiles": len(dataset)}) + "\n")
    return figures, seconds


@dataclasses.dataclass
class Run:
    """One run set up to train (:func:`set_up`): its data, its method (built and seeded) and where
    its files go. ``builds``: the registered method that builds ``method_name``; ``run_id``: the
    fingerprint a checkpoint must carry to be resumed."""

    method_name: str
    builds: str
    init_kwargs: dict[str, Any]
    run_id: str
    dataset: PreparedDataset
    method: nn.Module
    config: TrainConfig
    protocol: Protocol
    seed: int
    ranks: Ranks
    device: torch.device
    out_dir: Path
    log_path: Path

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_FILE

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    @property
    def rows(self) -> slice | None:
        """This process's rows of each global batch under DDP; ``None`` (all) in one process."""
        return self.ranks.rows(self.config.batch_size) if self.ranks.distributed else None

    @property
    def fitted(self) -> bool:
        """A ``trained_by = "fit"`` method: fitted in one call, no optimiser or checkpoint."""
        return getattr(self.method, "trained_by", "gradient") == "fit"


@dataclasses.dataclass
class Optimisation:
    """What updates a gradient-trained run's weights: AdamW over its trainable parameters, the poly
    schedule, and ``step_fn`` (:class:`TrainingStep`, wrapped in DDP under torchrun)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step_fn: nn.Module


@dataclasses.dataclass
class TrainingState:
    """Where a gradient-trained run stands: ``step`` (the next step to take), ``train_seconds`` (the
    steps' time so far, s), ``peak_mb`` (the peak memory of the processes before this one, MiB) and
    ``step_seconds`` (each step's time, s). Restored from a checkpoint on resume."""

    step: int = 0
    train_seconds: float = 0.0
    peak_mb: float = 0.0
    step_seconds: list[float] = dataclasses.field(default_factory=list)


def run_fingerprint(
    method_name: str,
    builds: str,
    init_kwargs: Mapping[str, Any],
    config: TrainConfig,
    protocol: Protocol,
    seed: int,
    dataset: PreparedDataset,
) -> str:
    """The run's :func:`fingerprint`: method, constructor arguments, ``train`` section (throughput
    options at their :data:`FINGERPRINT_DEFAULTS` left out), protocol, seed and data."""
    train_key = {k: v for k, v in vars(config).items() if k not in FINGERPRINT_DEFAULTS or v != FINGERPRINT_DEFAULTS[k]}
    return fingerprint(
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


def set_up(
    data_root: Path,
    method_name: str,
    method_params: Mapping[str, Any],
    config: TrainConfig,
    seed: int,
    out_dir: Path,
    *,
    protocol: Protocol,
    log_path: Path | None,
    registered: str | None,
    ranks: Ranks,
    device: torch.device,
) -> Run:
    """The training split, the method built on ``device`` from seed ``seed`` (every process the
    same initial weights) and the output folder (created): the part of a run that fitted and
    gradient-trained methods share."""
    dataset = PreparedDataset(data_root, "train")
    config = schedule_in_steps(config, len(dataset), protocol, ranks)
    builds = registered or method_name
    init_kwargs = method_init(dataset, config, method_params, builds)
    run_id = run_fingerprint(method_name, builds, init_kwargs, config, protocol, seed, dataset)
    seed_everything(seed)
    method = build_method(builds, **init_kwargs).to(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path is not None else out_dir / LOG_FILE
    return Run(
        method_name=method_name,
        builds=builds,
        init_kwargs=init_kwargs,
        run_id=run_id,
        dataset=dataset,
        method=method,
        config=config,
        protocol=protocol,
        seed=seed,
        ranks=ranks,
        device=device,
        out_dir=out_dir,
        log_path=log_path,
    )


def schedule_in_steps(config: TrainConfig, num_train: int, protocol: Protocol, ranks: Ranks) -> TrainConfig:
    """``config`` with its schedule in steps for ``num_train`` training tiles (:meth:`TrainConfig.in_steps`;
    process 0 says how epochs converted), its staged protocol checked against the steps."""
    converted = config.in_steps(num_train)
    if converted is not config and ranks.main:
        print(
            f"schedule: {config.epochs or '-'} epochs, warm-up {config.warmup_epochs or '-'} epochs of "
            f"{config.steps_per_epoch(num_train)} steps ({num_train} training tiles // batch {config.batch_size}) = "
            f"{converted.steps} steps, warm-up {converted.warmup_steps}",
            file=sys.stderr,
        )
    protocol.check_switch(converted.total_steps, f"protocols.{protocol.name}.fraction")
    return converted


def run_record(run: Run) -> dict[str, Any]:
    """The ``model.pt`` fields a fitted run starts with (the gradient-trained record of :func:`finish`
    holds the same ones, its ``state_dict`` among them)."""
    return {
        "method": run.method_name,
        "registered_method": run.builds,
        "method_module": type(run.method).__module__,  # what evaluate imports to rebuild it
        "protocol": run.protocol.record(),
        "init": run.init_kwargs,
        "fingerprint": run.run_id,
        "seed": run.seed,
        "dataset": run.dataset.meta["dataset"],
    }


def set_up_optimisation(run: Run) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """After the shared initial weights: process ``rank`` > 0 reseeds (its method-internal draws, SGMA's
    MAS and M3L's masks, must differ), the ``train`` throughput options apply, then AdamW over the
    trainable parameters (an EMA teacher is not optimised) with the warm-up + poly schedule."""
    config, method = run.config, run.method
    if run.ranks.rank > 0:
        seed_everything(rank_seed(run.seed, run.ranks.rank))
    if config.channels_last:
        to_channels_last(method)
    if config.compile:
        compile_parts(method)
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    return optimizer, lr_schedule(optimizer, config)


def restore_checkpoint(
    run: Run,
    saved: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> TrainingState:
    """Resume from the checkpoint ``saved`` of this run: weights, optimiser and schedule, and each
    process's own random state (a fresh seed for a process the checkpoint holds none of: one written
    by another number of processes) -> the state it was saved in."""
    ranks = run.ranks
    restore_training(saved, run.method, optimizer, scheduler)
    saved_world = saved.get("world_size", 1)
    if ranks.main or saved_world == ranks.world_size:  # each process's own random state
        restore_rng(saved if ranks.main else saved["rank_rng"][ranks.rank])
    else:  # no saved state for this rank: a fresh seed, as at the start
        seed_everything(rank_seed(run.seed, ranks.rank, saved["step"]))
    state = TrainingState(
        step=saved["step"],
        train_seconds=saved["train_seconds"],
        peak_mb=saved.get("peak_memory_mb", 0.0),  # the peak of the processes before this one
        step_seconds=list(saved.get("step_seconds", [])),
    )
    if ranks.main:
        print(f"resuming {run.method_name} seed {run.seed} from step {state.step}", file=sys.stderr)
        if saved_world != ranks.world_size:
            print(
                f"note: {run.checkpoint_path} was written by {saved_world} process(es), resumed by "
                f"{ranks.world_size}: processes 1..{ranks.world_size - 1} reseed their random draws, "
                "so the result is not bit-identical to an uninterrupted run",
                file=sys.stderr,
            )
    return state


def resume(
    run: Run, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
) -> TrainingState:
    """The state training starts from: the checkpoint's when its fingerprint is this run's
    (:func:`restore_checkpoint`), else step 0. Process 0 first removes what a killed run left
    and afterwards cuts the step log to the steps before the start."""
    ranks = run.ranks
    if ranks.main:  # what a killed run may have left
        for path in (run.checkpoint_path, run.model_path, run.log_path):
            remove_stale_temps(path)
    state = TrainingState()
    if run.checkpoint_path.exists():
        saved = load_torch(run.checkpoint_path, run.device)
        if saved.get("fingerprint") == run.run_id:
            state = restore_checkpoint(run, saved, optimizer, scheduler)
    if ranks.distributed:  # every process must resume from the same step (one checkpoint file for all)
        starts = gather(state.step, ranks)
        if len(set(starts)) > 1:
            raise RuntimeError(
                f"{run.checkpoint_path}: the processes would resume from different steps {starts} (by rank); every "
                "process must read the same checkpoint: put the output folder on a file system all nodes share"
            )
    if ranks.main:
        log_lines = read_log(run.log_path, state.step) if state.step else []
        atomic_write_text(run.log_path, "".join(line + "\n" for line in log_lines))
    return state


def step_module(run: Run) -> nn.Module:
    """What the steps call: :class:`TrainingStep` (which looks ``training_step`` up when called),
    wrapped in DistributedDataParallel under torchrun."""
    step_fn: nn.Module = TrainingStep(run.method)
    if run.ranks.distributed:
        # DDP averages the gradients over the processes: with equal shards and per-sample-mean losses,
        # the global batch's gradient. find_unused_parameters: some steps leave parameters out (the
        # stem of a modality no sample of a shard has, a method's branch that runs on some steps only).
        step_fn = DistributedDataParallel(
            step_fn,
            device_ids=[run.device.index] if run.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    return step_fn


#: One step's ``(inputs {modality: float[B, C, H, W]}, target int64[B, H, W], available bool[B, M])``.
Batch = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]


def prepare_batch(run: Run, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, step: int) -> Batch:
    """A loaded batch (as stored) as step ``step`` trains on it: on the device and standardised there,
    rescaled (``train.scale_range``) and flipped (``train.augment``), the protocol's modality draw
    applied, channels_last (``train.channels_last``). Every draw comes from :func:`step_generator` and
    is made for the global batch, so each process's rows get what a 1-process run gives them; the
    global RNG is not touched."""
    config, rows, device = run.config, run.rows, run.device
    generator = step_generator(run.seed, step)
    inputs = run.dataset.standardise({m: x.to(device, non_blocking=True) for m, x in inputs.items()})
    target = target.to(device, non_blocking=True)
    if config.scale_range is not None:
        ignore = run.dataset.ignore_index
        inputs, target = random_rescale(
            inputs, target, generator, config.scale_range, ignore, batch_size=config.batch_size, rows=rows
        )
    if config.augment:
        inputs, target = random_flips(inputs, target, generator, batch_size=config.batch_size, rows=rows)
    modalities = list(run.dataset.modalities)
    available = run.protocol.draw(config.batch_size, len(modalities), generator, step, config.total_steps)
    available = (available if rows is None else available[rows]).to(device)
    inputs = apply_availability(inputs, available, modalities)
    if config.channels_last:
        inputs = {m: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for m, x in inputs.items()}
    return inputs, target, available


def timed_batches(run: Run, loader: DataLoader, start: int) -> Iterator[tuple[int, float, Batch]]:
    """``(step, clock, batch)`` for each loaded batch from step ``start`` on: the clock
    (``time.perf_counter``) is read before the batch is prepared (:func:`prepare_batch`), so a
    step's time counts its preparation, not its loading."""
    for step, (inputs, target) in enumerate(loader, start):
        tick = time.perf_counter()
        yield step, tick, prepare_batch(run, inputs, target, step)


def check_first_batch(run: Run, batch: Batch, step: int) -> None:
    """The method contract (:func:`check_contract`) on the first batch, before any step. The check
    leaves no trace: the random state (CPU and the training CUDA device) and the buffers (e.g.
    BatchNorm statistics) are as they were, so the steps draw what they would without it."""
    method = run.method
    cuda_devices = [run.device] if run.device.type == "cuda" else []
    buffers = {name: b.clone() for name, b in method.named_buffers()}
    with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
        check_contract(run.method_name, method, *batch, len(run.dataset.classes), step)
        for name, b in method.named_buffers():
            b.copy_(buffers[name])


def optimiser_step(
    run: Run, optimisation: Optimisation, batch: Batch, step: int
) -> tuple[torch.Tensor, dict[str, float], float]:
    """One step on ``batch``: the loss (:func:`check_step_result`), its gradient, the AdamW and
    schedule updates, the method's after-step hook (an EMA teacher) -> ``(total, parts, lr)`` of this
    process: the loss (a scalar tensor), its parts, the rate the step used. Returns once the device
    has done the work."""
    optimizer = optimisation.optimizer
    with precision_context(run.config.precision, run.device):
        result = optimisation.step_fn(*batch)
    total, parts = check_step_result(run.method_name, result, step), result[1]
    lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    # gradient clipping goes here: between the backward pass and optimizer.step()
    optimizer.step()
    optimisation.scheduler.step()
    run.method.after_optimizer_step()
    synchronize(run.device)  # on CUDA the step is queued work until here
    return total, parts, lr


def step_record(
    run: Run, step: int, loss: float, parts: Mapping[str, float], lr: float, images: int, seconds: float
) -> dict[str, Any]:
    """The step log's line of ``step`` (``images`` rows of this process in ``seconds``): loss and parts
    averaged over the processes, lr, and the model throughput of the global batch, data loading excluded."""
    if run.ranks.distributed:
        loss, parts = mean_over_ranks(loss, parts, run.ranks)
    return {"step": step, "loss": loss, **parts, "lr": lr, "images_per_s": images * run.ranks.world_size / seconds}


def check_finite_weights(run: Run, step: int) -> None:
    """``FloatingPointError`` naming the parameters of ``run``'s method holding a NaN or an infinity
    after ``step`` steps: such a state is never saved (a NaN where a kernel only meets padding
    leaves the loss finite and shows only at evaluation)."""
    named = list(run.method.named_parameters())
    counts = torch.stack([(~torch.isfinite(p.detach())).sum() for _, p in named]).tolist()  # one device sync
    bad = [f"{name} ({n} of {p.numel()} values)" for (name, p), n in zip(named, counts) if n]
    if bad:
        hint = ""
        if run.config.precision == "bf16" and run.device.type == "cpu":
            hint = (
                "; with precision bf16 on a CPU, PyTorch's convolution backward on 1-pixel feature maps writes NaN "
                "now and then: use larger tiles or precision fp32"
            )
        raise FloatingPointError(
            f"method {run.method_name!r}: non-finite weights after step {step}: {', '.join(bad)}; not saved (a "
            f"checkpoint on disk holds the last finite state){hint}"
        )


def save_checkpoint(run: Run, optimisation: Optimisation, state: TrainingState, log: TextIO) -> None:
    """Write ``checkpoint.pt`` (process 0, after flushing the step log ``log``): the state to resume
    ``state`` from, every process's random state among it under DDP; the processes then wait for it.
    Weights with a NaN or an infinity are refused first (:func:`check_finite_weights`)."""
    ranks = run.ranks
    check_finite_weights(run, state.step)
    peak = max(gather(max(state.peak_mb, peak_memory_mb(run.device)), ranks))  # over the processes
    rng = rng_state(run.device)
    rank_rng = gather(rng, ranks)
    if ranks.main:
        log.flush()
        saved = {
            "fingerprint": run.run_id,
            "step": state.step,
            "train_seconds": state.train_seconds,
            "peak_memory_mb": peak,
            "step_seconds": state.step_seconds,
            "model": run.method.state_dict(),
            "optimizer": optimisation.optimizer.state_dict(),
            "scheduler": optimisation.scheduler.state_dict(),
            **rng,
        }
        if ranks.distributed:  # every process's random state, restored by a resume with as many
            saved.update(world_size=ranks.world_size, rank_rng=rank_rng)
        save_torch(run.checkpoint_path, saved)
    if ranks.distributed:
        dist.barrier()


def train_steps(run: Run, optimisation: Optimisation, state: TrainingState, progress: bool) -> None:
    """Steps ``state.step .. train.steps - 1``, updating ``state``: the contract check on the first
    batch, then per step the update, its log line (process 0's ``log_path``) and a checkpoint every
    ``train.checkpoint_every`` steps and at the end."""
    config, ranks = run.config, run.ranks
    loader = training_loader(run.dataset, config, run.seed, run.device, state.step, config.total_steps, run.rows)
    run.method.train()
    bar = tqdm(
        total=config.total_steps,
        initial=state.step,
        desc=f"train {run.method_name} s{run.seed}",
        disable=not (progress and ranks.main),
        mininterval=1.0,
    )
    batches = timed_batches(run, loader, state.step)
    first = next(batches, None)
    if first is not None:  # before the first step, on its batch
        check_first_batch(run, first[2], first[0])
        batches = itertools.chain([first], batches)
    # line-buffered: `tail -f` shows each step; only process 0 writes the log
    with run.log_path.open("a", encoding="utf-8", buffering=1) if ranks.main else open(os.devnull, "w") as log:
        for step, tick, batch in batches:
            total, parts, lr = optimiser_step(run, optimisation, batch, step)
            seconds = time.perf_counter() - tick
            state.train_seconds += seconds
            state.step_seconds.append(seconds)
            state.step = step + 1
            record = step_record(run, step, float(total.detach()), parts, lr, batch[1].shape[0], seconds)
            log.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.0f}", refresh=False)
            bar.update(1)
            # a validation pass goes here: every k steps, under torch.no_grad() and run.method.eval()
            if state.step % config.checkpoint_every == 0 or state.step == config.total_steps:
                save_checkpoint(run, optimisation, state, log)
    bar.close()


def finish(run: Run, state: TrainingState) -> Path:
    """Write ``model.pt`` (process 0; the others wait for it): the record of :func:`run_record`, the
    trained ``state_dict`` and the training figures -> its path."""
    ranks, config = run.ranks, run.config
    peak = max(gather(max(state.peak_mb, peak_memory_mb(run.device)), ranks))
    if not ranks.main:
        dist.barrier()  # returns once process 0 has written model.pt
        return run.model_path
    identity = run_record(run)
    record = {
        **{key: identity[key] for key in ("method", "registered_method", "method_module", "protocol", "init")},
        "state_dict": run.method.state_dict(),
        **{key: identity[key] for key in ("fingerprint", "seed", "dataset")},
        "steps": config.total_steps,
        "batch_size": config.batch_size,
        "train_seconds": state.train_seconds,
        # the median step: robust to the first steps' warm-up and to other processes' hiccups
        "median_step_seconds": statistics.median(state.step_seconds) if state.step_seconds else None,
        "peak_memory_mb": peak,
        "device": device_name(run.device),
    }
    if ranks.distributed:
        record["world_size"] = ranks.world_size
    save_torch(run.model_path, record)
    if ranks.distributed:
        dist.barrier()
    return run.model_path


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

    The parts: :func:`set_up`, then :func:`fit_run` for a fitted method, else
    :func:`set_up_optimisation`, :func:`resume`, :func:`train_steps` (:func:`optimiser_step`,
    :func:`save_checkpoint`) and :func:`finish`.
    """
    ranks = launch_ranks()
    check_global_batch(config.batch_size, ranks)  # before any compute
    protocol = protocol or builtin_protocol("uniform")
    with process_group(ranks, resolve_device(config.device)) as device:
        run = set_up(
            data_root,
            method_name,
            method_params,
            config,
            seed,
            out_dir,
            protocol=protocol,
            log_path=log_path,
            registered=registered,
            ranks=ranks,
            device=device,
        )
        if run.fitted:
            return fit_run(run.method, run.dataset, protocol, run_record(run), out_dir, run.log_path, ranks, progress)
        optimizer, scheduler = set_up_optimisation(run)
        state = resume(run, optimizer, scheduler)
        train_steps(run, Optimisation(optimizer, scheduler, step_module(run)), state, progress)
        return finish(run, state)


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
        save_torch(
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


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__.splitlines()[0], params=False)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default models/<dataset>/<run>/seed<k>)")
    args = parser.parse_args(argv)
    config = read_run_config(args.run_name, args.config)
    registered_class(config.registered_method, config.method_module)  # imports the run's method, no other
    if launch_ranks().main:
        print(stage_label("train", args.dataset, args.run_name, args.seed), flush=True)  # progress on stdout
    data_root = args.data_dir or prepared_dir(args.dataset)
    out = args.out or run_dir(MODELS_DIR, args.dataset, args.run_name, args.seed)
    log = (args.out / LOG_FILE) if args.out else run_dir(RUNS_DIR, args.dataset, args.run_name, args.seed) / LOG_FILE
    path = train(
        data_root,
        config.method,
        config.method_params,
        config.train,
        args.seed,
        out,
        protocol=config.protocol,
        log_path=log,
        progress=not args.no_progress,
        registered=config.registered_method,
    )
    if launch_ranks().main:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    errors.run(main)
