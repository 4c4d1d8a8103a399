"""Model size and inference cost of the registered methods: parameters and GFLOPs.

FLOPs come from torch's own counter (``torch.utils.flop_counter.FlopCounterMode``) on one
``method.predict`` call with every modality available, so every method is measured the same way.

:func:`efficiency_record` builds the ``efficiency`` entry of metrics.json (``benchmark.evaluate``):
these figures, the inference latency and the training figures of ``model.pt``.

The table of every method (``python -m benchmark.efficiency``) is :mod:`benchmark.efficiency.__main__`:
the stages that measure one run import this module alone, not every method.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.methods import is_training_only

DEFAULT_CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}
INPUT_SEED = 0


def _inputs(
    channels: Mapping[str, int], size: tuple[int, int], device: str | torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One tile of fixed-seed normal noise per modality and an all-true availability mask."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    height, width = size
    inputs = {m: torch.randn(1, c, height, width, generator=generator).to(device) for m, c in channels.items()}
    return inputs, torch.ones(1, len(channels), dtype=torch.bool, device=device)


@contextmanager
def _inference_mode(method: nn.Module) -> Iterator[None]:
    """Eval mode under ``torch.no_grad``; every module's training flag is restored afterwards."""
    modes = {module: module.training for module in method.modules()}
    method.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def parameter_count(method: nn.Module) -> int:
    """Number of parameters the model infers with (trainable or not); a parameter shared by
    several modules counts once; the method's ``training_only_modules`` (an EMA teacher) do not count."""
    # named_parameters() yields each tensor once
    return sum(p.numel() for name, p in method.named_parameters() if not is_training_only(method, name))


def inference_gflops(
    method: nn.Module, channels: Mapping[str, int], size: tuple[int, int], device: str | torch.device = "cpu"
) -> float:
    """GFLOPs (1e9 FLOPs) of one ``method.predict(inputs, available)`` call on a batch of 1.

    ``inputs`` is ``{modality: float[1, C_m, H, W]}`` (fixed-seed normal noise, created on
    ``device``, where ``method`` must already live), ``available`` is ``bool[1, M]`` all true;
    ``size`` is ``(H, W)`` in pixels. The method runs in eval mode under ``torch.no_grad``; the
    training flag of each of its modules is restored afterwards. The return value of
    ``predict`` is ignored.

    Counting is torch's: one multiply-add is 2 FLOPs (papers that report MACs as "FLOPs"
    give half this number), and only ops with a registered formula count (convolutions,
    matrix products, attention); softmax, norms, activations, interpolation and bias adds
    are not counted.
    """
    inputs, available = _inputs(channels, size, device)
    with _inference_mode(method), FlopCounterMode(display=False) as counter:
        method.predict(inputs, available)
    return counter.get_total_flops() / 1e9


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a clock read after it is true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_latency_ms(
    method: nn.Module,
    channels: Mapping[str, int],
    size: tuple[int, int],
    device: str | torch.device = "cpu",
    *,
    repeats: int = 10,
    warmup: int = 2,
) -> float:
    """Median wall time in milliseconds of one ``method.predict`` on one tile of ``size`` with every
    modality available (batch of 1, eval mode, ``torch.no_grad``), after ``warmup`` untimed calls.
    On CUDA the device is synchronised around each call. Training flags are restored afterwards."""
    device = torch.device(device)
    inputs, available = _inputs(channels, size, device)
    times = []
    with _inference_mode(method):
        for i in range(warmup + repeats):
            synchronize(device)
            tick = time.perf_counter()
            method.predict(inputs, available)
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - tick)
    return 1000.0 * statistics.median(times)


def peak_memory_mb(device: str | torch.device = "cpu") -> float:
    """Peak memory of this process so far, MiB: on CUDA the peak tensor memory torch allocated on
    ``device`` (``torch.cuda.max_memory_allocated``); on CPU the peak resident set size of the
    process (``getrusage`` ``ru_maxrss``: everything, Python and data included)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def device_name(device: str | torch.device) -> str:
    """What ran the computation, e.g. ``cpu (x86_64, 2 threads)`` or ``cuda (NVIDIA H100 80GB HBM3)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} threads)"


def efficiency_record(
    method: nn.Module,
    channels: Mapping[str, int],
    tile_shape: tuple[int, int],
    trained: Mapping[str, Any],
    device: str | torch.device,
) -> dict[str, Any]:
    """The metrics.json ``efficiency`` entry of a trained ``method`` on tiles of ``tile_shape`` (H, W)
    with ``channels`` per modality: its size and cost (:func:`parameter_count`, :func:`inference_gflops`;
    ``None`` for a method computed outside torch, ``counts_flops = False``), the training figures of
    its ``model.pt`` record ``trained`` (seconds per step and images/s from the median step time),
    its inference latency (:func:`inference_latency_ms`) and this process's peak memory so far."""
    seconds, step = float(trained["train_seconds"]), trained.get("median_step_seconds")
    torch_measured = bool(getattr(method, "counts_flops", True))
    return {
        "tile_shape": list(tile_shape),
        # a method computed outside torch (a floor) has neither torch parameters nor countable FLOPs: not measured
        "params": parameter_count(method) if torch_measured else None,
        "gflops": round(inference_gflops(method, channels, tile_shape, device), 6) if torch_measured else None,
        "train_steps": trained["steps"],
        "train_batch_size": trained.get("batch_size"),
        "train_seconds": round(seconds, 3),
        "train_seconds_per_step": round(step, 6) if step else None,
        "train_images_per_s": round(trained["batch_size"] / step, 3) if step and trained.get("batch_size") else None,
        "train_peak_memory_mb": trained.get("peak_memory_mb"),
        "train_device": trained.get("device"),
        "inference_ms_per_image": round(inference_latency_ms(method, channels, tile_shape, device), 4),
        "eval_peak_memory_mb": round(peak_memory_mb(device), 1),
        "eval_device": device_name(device),
    }
