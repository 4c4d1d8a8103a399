"""params.yaml: loading, validation into typed configs, and the pipeline's fixed paths."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

PARAMS_FILE = Path("params.yaml")
DATA_DIR = Path("data")
MODELS_DIR = Path("models")
RESULTS_DIR = Path("results")

C = TypeVar("C")


def prepared_dir(dataset: str, data_dir: Path = DATA_DIR) -> Path:
    return data_dir / "prepared" / dataset


def run_dir(base: Path, dataset: str, method: str, seed: int) -> Path:
    """``<base>/<dataset>/<method>/seed<k>``: where one (dataset, method, seed) run lives."""
    return base / dataset / method / f"seed{seed}"


def run_parser(description: str) -> argparse.ArgumentParser:
    """Command-line parser with the arguments every per-run stage takes (train, evaluate)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--data-dir", type=Path, default=None, help="prepared data (default data/prepared/<dataset>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return params


def section(params: Mapping[str, Any], key: str, where: str) -> Any:
    """``params[key]`` or a KeyError naming the file and key."""
    if key not in params:
        raise KeyError(f"{where}: missing key {key!r}")
    return params[key]


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, arg) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def from_mapping(cls: type[C], values: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types.

    Errors name ``where`` (e.g. ``"params.yaml: train"``), the key and the bad value.
    """
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise KeyError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise TypeError(f"{where}.{key}: {value!r} is not a valid {hints[key]}")
        if isinstance(value, int) and not isinstance(value, bool) and hints[key] is float:
            values[key] = float(value)
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training recipe shared by every method (params.yaml ``train``)."""

    backbone: str = "tiny"  # "tiny" or a timm model name
    pretrained: bool = False  # ImageNet weights through timm (needs network or a cache)
    decoder_dim: int = 64  # all-MLP decoder width
    steps: int = 300  # optimiser steps
    batch_size: int = 8  # images per step
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01
    warmup_steps: int = 30  # linear warm-up from lr * 1e-6
    poly_power: float = 0.9  # polynomial decay after warm-up
    drop_prob: list[float] | None = None  # per-modality drop probability; None: uniform over subsets
    augment: bool = True  # random horizontal / vertical flips per sample
    checkpoint_every: int = 100  # steps between resumable checkpoints
    num_workers: int = 0  # DataLoader workers
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "checkpoint_every", "decoder_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"train.warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings (params.yaml ``evaluate``)."""

    batch_size: int = 16
    device: str = "auto"
    sample_tiles: int = 3  # test tiles whose predictions are kept for the report's qualitative panel

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"evaluate.batch_size must be >= 1, got {self.batch_size}")
        if self.sample_tiles < 0:
            raise ValueError(f"evaluate.sample_tiles must be >= 0, got {self.sample_tiles}")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Report settings (params.yaml ``report``)."""

    reference: str = "sgma"  # every method is compared with this one
    failure_probs: list[float] = dataclasses.field(default_factory=lambda: [0.05, 0.1, 0.2])  # p of E_p[mIoU]
    bootstrap_samples: int = 1000  # replicates of the paired bootstrap
    confidence: float = 0.95  # of the bootstrap interval
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        bad = [p for p in self.failure_probs if not 0 <= p < 1]
        if bad:
            raise ValueError(f"report.failure_probs: {bad[0]!r} is not a probability in [0, 1)")
        if self.bootstrap_samples < 1:
            raise ValueError(f"report.bootstrap_samples must be >= 1, got {self.bootstrap_samples}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"report.confidence must be in (0, 1), got {self.confidence}")


@dataclasses.dataclass(frozen=True)
class ScenarioConfig:
    """Corrupted-input scenarios run at evaluation besides the missing subsets (params.yaml
    ``scenarios``; docs/scenarios.md). Every modality stays available; one modality at a time is
    corrupted at each level of each kind. An empty level list turns a kind off."""

    seed: int = 0  # masks and noise are drawn from (seed, kind, modality, tile index): identical in every run
    modalities: list[str] | None = None  # modalities to corrupt, one at a time (None: every modality)
    block_size: int = 8  # px, side of the square blocks that block_missing zeroes
    block_missing: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 0.75])  # fraction zeroed
    pixel_missing: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 0.75])  # fraction zeroed
    gaussian: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 1.0])  # std, channel stds
    salt_pepper: list[float] = dataclasses.field(default_factory=lambda: [0.05, 0.1, 0.2])  # fraction of pixels
    speckle: list[float] = dataclasses.field(default_factory=lambda: [0.25, 0.5, 1.0])  # variance = 1 / looks

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"scenarios.block_size must be >= 1, got {self.block_size}")
        if self.modalities is not None and (not self.modalities or len(set(self.modalities)) != len(self.modalities)):
            raise ValueError(f"scenarios.modalities must be null or distinct names, got {self.modalities}")
        for kind in ("block_missing", "pixel_missing", "salt_pepper"):
            bad = [v for v in getattr(self, kind) if not 0 < v <= 1]
            if bad:
                raise ValueError(f"scenarios.{kind}: {bad[0]!r} is not a fraction in (0, 1]")
        for kind in ("gaussian", "speckle"):
            bad = [v for v in getattr(self, kind) if not v > 0]
            if bad:
                raise ValueError(f"scenarios.{kind}: {bad[0]!r} must be > 0")
        for kind in SCENARIO_KINDS:
            levels = getattr(self, kind)
            if len(set(levels)) != len(levels):
                raise ValueError(f"scenarios.{kind}: duplicated level in {levels}")


SCENARIO_KINDS = ("block_missing", "pixel_missing", "gaussian", "salt_pepper", "speckle")


def resolve_device(name: str) -> torch.device:  # noqa: F821 - torch imported lazily
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
