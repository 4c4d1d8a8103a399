"""Reading and writing the trainer's torch files, shared by the train and evaluate stages.

``model.pt`` holds the record of a trained run (the method's name and constructor arguments, its
``state_dict`` and the training figures); ``checkpoint.pt`` the resumable state of a run being
trained (weights, optimiser, scheduler, random state). Both are read with ``weights_only=True``:
tensors, numbers, strings and containers only, so a file cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.errors import DamagedFileError
from benchmark.io import atomic_write
from benchmark.methods import build_method


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically: a killed process leaves the old file or none."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` (tensors, numbers, strings and containers only: a file
    cannot run code); an unreadable or truncated file is a ``ValueError`` naming it."""
    try:
        record = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        raise DamagedFileError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err}); delete it") from None
    if not isinstance(record, dict):
        raise DamagedFileError(f"{path}: expected a dict, got {type(record).__name__}; delete it")
    return record


def rebuild_method(record: dict[str, Any], device: torch.device | str = "cpu") -> nn.Module:
    """The method of a ``model.pt`` record with its trained weights, on ``device`` (the mode it is built in);
    the record's ``method_module`` (the module that registers it) is imported first."""
    init = dict(record["init"])
    init["pretrained"] = False  # the weights come from the file
    name = record.get("registered_method", record["method"])
    method = build_method(name, record.get("method_module"), **init).to(device)
    method.load_state_dict(record["state_dict"])
    return method


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained method from ``model.pt`` -> (method in eval mode, the saved record)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: trained model not found (run dvc repro: its train stage writes it)")
    record = load_torch(path, device)
    return rebuild_method(record, device).eval(), record


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random state: ``torch_rng`` (the CPU generator's) and ``cuda_rng`` (every CUDA
    device's on a CUDA ``device``, else ``[]``), as a checkpoint stores it."""
    cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng}


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the random state that :func:`rng_state` returned (read back from a checkpoint)."""
    torch.set_rng_state(rng["torch_rng"].cpu())
    if rng.get("cuda_rng"):
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda_rng"]])


def restore_training(
    saved: dict[str, Any],
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Load a checkpoint's ``model``, ``optimizer`` and ``scheduler`` states (the random state is the caller's)."""
    method.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
