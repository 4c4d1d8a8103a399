"""Speed and memory of the benchmark's own code paths: ``python -m benchmark.perf``.

Prints one ``key=value`` per line, all measured in this run on this machine:

- ``eval_ratio_mM_<method>``: seconds to evaluate every one of the ``2^M - 1`` subsets with shared
  encoder features (the pipeline's path, :func:`benchmark.evaluate.evaluate_subsets`, its one-tile
  check included) divided by the seconds of one full-modality pass over the same batches
  (``evaluate_subsets`` with the full subset only); ``naive_ratio_mM_<method>`` the same for the
  naive path (one whole-model pass per subset). ``eval_ratio_mM`` / ``naive_ratio_mM``: the
  largest over the methods. M = 3 is the synthetic data set (rgb, dsm, nir), M = 4 adds ``sar``.
  Both include what the evaluator does besides the model (reading the memory-mapped tiles,
  argmax, confusion matrices), as the pipeline runs it; evaluation is fp32 whatever
  ``--precision`` says (``benchmark.evaluate`` has no autocast).
- ``train_step_ms_<method>``: the median milliseconds per step of :func:`benchmark.train.train`
  (data loading excluded, as in metrics.json; ``--precision``, ``--channels-last`` and
  ``--compile`` apply here; M3L in its mean-teacher phase, :data:`METHOD_PARAMS`),
  ``train_images_per_s_<method>``, and ``sgma_muss_step_ratio``.
- ``loader_images_per_s``: the training DataLoader alone (same sampler, workers, pinned memory),
  against ``model_images_per_s_max``, the fastest method's training images/s
  (``loader_headroom`` = their ratio; above 1 the loader keeps up).
- With ``--schedule-steps N`` (a study's whole schedule, e.g. 43200 for ``studies/paper-potsdam.yaml``):
  ``schedule_hours_<method>`` = N x the median step time / 3600, the projected training time of one
  run (data loading excluded, as the step times), and ``schedule_hours`` their sum: one seed of every
  method timed, trained one after the other on this device.
- ``eval_images_per_s_<method>``: the full-modality pass; ``peak_memory_mb`` (CUDA's peak
  allocation over the whole run, or the process's peak resident set size on a CPU).
- On a GPU with a known peak (or ``--peak-tflops``): ``train_mfu_<method>`` and
  ``eval_mfu_<method>``, model FLOPs utilisation = FLOPs counted by torch's FlopCounterMode for
  one training step (forward + backward) or one full-modality inference, times steps or images
  per second, over the peak dense bf16 FLOP/s.

Evaluation timings are the least of ``--repeats`` runs after one warm-up run. Data: the synthetic data set
at ``--size`` pixels, prepared into a temporary folder. The paper's setting on a GPU:
``python -m benchmark.perf --backbone pvt_v2_b2 --decoder-dim 768 --size 512 --precision bf16 --device cuda
--schedule-steps 43200`` (docs/paper.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from benchmark import errors
from benchmark.checkpoint import load_torch
from benchmark.config import PRECISIONS, TrainConfig, resolve_device
from benchmark.data import PreparedDataset, build_source
from benchmark.efficiency import device_name, inference_gflops, peak_memory_mb, synchronize
from benchmark.evaluate import evaluate_subsets
from benchmark.methods import import_method_modules
from benchmark.methods.catalog import create_method
from benchmark.protocol import apply_availability, draw_available
from benchmark.train import precision_context, train, training_loader

METHODS = ("muss", "m3l", "imlt", "magic", "sgma", "sgma-sgf", "sgma-mas")
#: Constructor arguments of the timed training runs: M3L is timed in its mean-teacher phase (teacher
#: pass + student), which is 200 of its 300 default steps, not in its supervised warm-up.
METHOD_PARAMS: dict[str, dict[str, Any]] = {"m3l": {"supervised_warmup": 0}}
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0}  # dense, SXM


def peak_tflops(device: torch.device) -> float | None:
    """The device's peak dense bf16 TFLOP/s from :data:`PEAK_BF16_TFLOPS` (by name), or None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756.0
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def prepare_synthetic(root: Path, modalities: int, size: int, num_train: int, num_test: int) -> Path:
    """The synthetic data set with 3 (rgb, dsm, nir) or 4 (+ sar) modalities, prepared under ``root``."""
    section = {"tile_size": size, "num_train": num_train, "num_test": num_test, "with_sar": modalities == 4}
    return build_source("synthetic", section).prepare(root / f"synthetic_m{modalities}")


def timed(run: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Least seconds of ``run()`` over ``repeats`` calls after one warm-up call (the least is the
    least disturbed by other processes: every run does the same work)."""
    run()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        tick = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - tick)
    return min(seconds)


def evaluation_times(
    method: torch.nn.Module,
    dataset: PreparedDataset,
    batch_size: int,
    device: torch.device,
    repeats: int,
) -> dict[str, float]:
    """Seconds of one full-modality pass, of every subset with shared features, and of every subset naively
    (fp32, as ``benchmark.evaluate`` runs)."""
    every = [list(dataset.modalities)]

    def run(**kwargs: Any) -> Callable[[], Any]:
        def go() -> Any:
            return evaluate_subsets(method, dataset, batch_size=batch_size, device=device, **kwargs)

        return go

    return {
        "full": timed(run(subsets=every, shared_encoder=False), device, repeats),
        "shared": timed(run(), device, repeats),
        "naive": timed(run(shared_encoder=False), device, repeats),
    }


def train_step_flops(method: torch.nn.Module, dataset: PreparedDataset, batch_size: int, device: torch.device) -> int:
    """FLOPs of one ``training_step`` + backward on a batch of ``dataset`` (random subsets), as torch counts them."""
    inputs, target = next(iter(DataLoader(dataset, batch_size=batch_size)))
    modalities = list(dataset.modalities)
    available = draw_available(target.shape[0], len(modalities), torch.Generator().manual_seed(0)).to(device)
    inputs = apply_availability({m: x.to(device) for m, x in inputs.items()}, available, modalities)
    method.train()
    counter = FlopCounterMode(display=False)
    with counter:
        total, _ = method.training_step(inputs, target.to(device), available)
        total.backward()
    method.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def loader_images_per_s(dataset: PreparedDataset, config: TrainConfig, device: torch.device, steps: int) -> float:
    """Images per second of the training DataLoader alone (the trainer's sampler, workers and pinned memory)."""
    loader = training_loader(dataset, config, 0, device, 0, steps)
    tick, images = time.perf_counter(), 0
    for inputs, target in loader:
        images += target.shape[0]
        for x in (*inputs.values(), target):
            x.to(device, non_blocking=True)
    synchronize(device)
    return images / (time.perf_counter() - tick)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the module docstring, in print order."""
    device = resolve_device(args.device)
    figures: dict[str, Any] = {
        "device": device_name(device),
        "backbone": args.backbone,
        "size": args.size,
        "precision": args.precision,
        "eval_batch_size": args.eval_batch_size,
        "eval_tiles": args.eval_tiles,
        "train_batch_size": args.train_batch_size,
        "train_steps": args.train_steps,
    }
    common = {"backbone": args.backbone, "pretrained": False, "decoder_dim": args.decoder_dim}
    peak = args.peak_tflops or peak_tflops(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="benchmark-perf-") as tmp:
        root = Path(tmp)
        for m in (3, 4):
            data = prepare_synthetic(root, m, args.size, args.train_batch_size * 4, args.eval_tiles)
            test = PreparedDataset(data, "test")
            ratios, naive = {}, {}
            for name in args.methods:
                torch.manual_seed(0)
                init = {"modalities": test.modalities, "num_classes": len(test.classes), **common}
                method = create_method(name, **init).to(device).eval()
                times = evaluation_times(method, test, args.eval_batch_size, device, args.repeats)
                ratios[name], naive[name] = times["shared"] / times["full"], times["naive"] / times["full"]
                figures[f"eval_full_s_m{m}_{name}"] = round(times["full"], 6)
                figures[f"eval_shared_s_m{m}_{name}"] = round(times["shared"], 6)
                figures[f"eval_naive_s_m{m}_{name}"] = round(times["naive"], 6)
                figures[f"eval_ratio_m{m}_{name}"] = round(ratios[name], 3)
                figures[f"naive_ratio_m{m}_{name}"] = round(naive[name], 3)
                if m == 3:
                    figures[f"eval_images_per_s_{name}"] = round(len(test) / times["full"], 2)
                    if peak:
                        flops = inference_gflops(method, test.modalities, test.tile_shape, device) * 1e9
                        figures[f"eval_mfu_{name}"] = round(flops * len(test) / times["full"] / (peak * 1e12), 4)
            figures[f"eval_ratio_m{m}"] = round(max(ratios.values()), 3)
            figures[f"naive_ratio_m{m}"] = round(max(naive.values()), 3)
            if m == 3:
                figures.update(training_figures(args, data, common, device, peak))
    figures["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    return figures


def training_figures(
    args: argparse.Namespace, data: Path, common: dict[str, Any], device: torch.device, peak: float | None
) -> dict[str, Any]:
    """Step times per method through :func:`benchmark.train.train`, the SGMA/MuSS ratio and loader throughput."""
    config = TrainConfig(
        **common,
        steps=args.train_steps,
        batch_size=args.train_batch_size,
        warmup_steps=0,
        checkpoint_every=args.train_steps,
        num_workers=args.num_workers,
        device=str(device),
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    figures: dict[str, Any] = {}
    train_set = PreparedDataset(data, "train")
    step_ms = {}
    with tempfile.TemporaryDirectory(prefix="benchmark-perf-train-") as tmp:
        for name in args.methods:
            path = train(data, name, METHOD_PARAMS.get(name, {}), config, 0, Path(tmp) / name, progress=False)
            step = load_torch(path)["median_step_seconds"]
            step_ms[name] = step * 1000
            figures[f"train_step_ms_{name}"] = round(step_ms[name], 2)
            figures[f"train_images_per_s_{name}"] = round(args.train_batch_size / step, 2)
            if args.schedule_steps:
                figures[f"schedule_hours_{name}"] = round(args.schedule_steps * step / 3600, 3)
            if peak:
                torch.manual_seed(0)
                init = {"modalities": train_set.modalities, "num_classes": len(train_set.classes), **common}
                init.update(METHOD_PARAMS.get(name, {}))
                method = create_method(name, **init).to(device)
                with precision_context(args.precision, device):
                    flops = train_step_flops(method, train_set, args.train_batch_size, device)
                figures[f"train_mfu_{name}"] = round(flops / step / (peak * 1e12), 4)
    if args.schedule_steps:
        figures["schedule_hours"] = round(args.schedule_steps * sum(step_ms.values()) / 1000 / 3600, 3)
    if "sgma" in step_ms and "muss" in step_ms:
        figures["sgma_muss_step_ratio"] = round(step_ms["sgma"] / step_ms["muss"], 3)
    loader = loader_images_per_s(train_set, config, device, max(args.train_steps, 20))
    fastest = max(args.train_batch_size * 1000 / ms for ms in step_ms.values())
    figures["loader_images_per_s"] = round(loader, 1)
    figures["model_images_per_s_max"] = round(fastest, 1)
    figures["loader_headroom"] = round(loader / fastest, 2)
    return figures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.perf", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tiny", help="'tiny' or a timm model name (default tiny)")
    p.add_argument("--decoder-dim", type=int, default=64)
    p.add_argument("--size", type=int, default=64, help="tile height = width in pixels (default 64)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--channels-last", action="store_true", help="train in channels_last memory format")
    p.add_argument("--compile", action="store_true", help="train with torch.compile")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--eval-tiles", type=int, default=50, help="test tiles (default 50, the default data set's)")
    p.add_argument("--eval-batch-size", type=int, default=25)
    p.add_argument("--train-batch-size", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=20, help="steps per method (the median step is reported)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument(
        "--schedule-steps", type=int, default=None, help="project the training time of a schedule of this many steps"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per evaluation figure (the least is printed)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for the MFU")
    p.add_argument("--method-modules", nargs="*", default=[], help="modules registering more methods")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for key in (
        "size",
        "eval_tiles",
        "eval_batch_size",
        "train_batch_size",
        "train_steps",
        "repeats",
        "schedule_steps",
    ):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser().error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    import_method_modules(args.method_modules)
    for key, value in measure(args).items():
        print(f"{key}={value}", flush=True)
    return 0


if __name__ == "__main__":
    errors.run(main)
