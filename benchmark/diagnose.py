"""Diagnose a method's fusion: gradient norms per component, robustness entropy, MAS distribution.

``python -m benchmark.diagnose --dataset synthetic --run-name sgma-complete [--model PATH] [--steps 5]``
builds the run's method (its ``method_params`` entry or variant in params.yaml) freshly initialised
from ``--seed``, or loads a trained ``model.pt`` with ``--model``, and prints:

- **gradient norms**: for each of ``--steps`` training steps (AdamW with the ``train`` section's
  lr, weight decay and schedule, batches of the train split, available modalities drawn by the
  run's protocol), the L2 norm of the gradient of each component's parameters and its RMS per
  element (``norm / sqrt(n)``; compare with Adam's eps 1e-8). Components are the method's
  ``parameter_groups`` (label -> fnmatch patterns of parameter names, first match wins), or one per
  top-level sub-module;
- **robustness entropy** (methods whose ``predict`` returns ``"robustness"`` maps): per subset of
  2+ modalities and per scale, the mean over test pixels of ``H(r) / log k`` (``k`` available
  modalities): 1 is uniform weights, 0 one modality taking all the weight;
- **MAS distribution** (methods whose ``sampling_probabilities`` returns one): per subset of 2+
  modalities, the mean probability of drawing each modality over the test tiles.

The robustness and MAS figures are measured on the model as it is after the gradient steps
(``--steps 0``: the model as built or loaded). ``--out`` writes everything as JSON. Nothing of the
workspace is changed.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmark import errors
from benchmark.checkpoint import load_model
from benchmark.config import TrainConfig
from benchmark.data.prepared import PreparedDataset
from benchmark.io import atomic_write_json
from benchmark.layout import PARAMS_FILE, prepared_dir
from benchmark.methods.catalog import create_method
from benchmark.models.backbones import STRIDES
from benchmark.protocol import Protocol, apply_availability, enumerate_subsets, subset_mask, subset_name
from benchmark.schema import load_config
from benchmark.train import lr_schedule, method_init, seed_everything, step_generator


def component_of(name: str, groups: Mapping[str, Sequence[str]]) -> str:
    """The component of parameter ``name``: the first label of ``groups`` with a matching pattern, else
    the first part of the name (its top-level sub-module)."""
    for label, patterns in groups.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return label
    return name.split(".", 1)[0]


def gradient_norms(method: nn.Module) -> dict[str, dict[str, float]]:
    """``{component: {"norm", "rms", "params"}}`` of the current ``.grad`` of the trainable parameters (a
    parameter without a gradient counts as 0), components in the order their first parameter comes."""
    squares: dict[str, float] = {}
    counts: dict[str, int] = {}
    groups = getattr(method, "parameter_groups", {}) or {}
    for name, p in method.named_parameters():
        if not p.requires_grad:
            continue
        label = component_of(name, groups)
        grad = 0.0 if p.grad is None else float(p.grad.detach().double().pow(2).sum())
        squares[label] = squares.get(label, 0.0) + grad
        counts[label] = counts.get(label, 0) + p.numel()
    return {k: {"norm": math.sqrt(v), "rms": math.sqrt(v / counts[k]), "params": counts[k]} for k, v in squares.items()}


def gradient_steps(
    method: nn.Module, dataset: PreparedDataset, config: TrainConfig, protocol: Protocol, seed: int, steps: int
) -> list[dict[str, dict[str, float]]]:
    """Take ``steps`` training steps (the trainer's optimiser and schedule, no augmentation) and return
    :func:`gradient_norms` before each optimiser update."""
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = lr_schedule(optimiser, config)
    loader = DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    modalities = list(dataset.modalities)
    method.train()
    norms = []
    for step, (inputs, target) in zip(range(steps), _cycle(loader)):
        available = protocol.draw(
            target.shape[0], len(modalities), step_generator(seed, step), step, config.total_steps
        )
        optimiser.zero_grad(set_to_none=True)
        total, _ = method.training_step(apply_availability(inputs, available, modalities), target, available)
        total.backward()
        norms.append(gradient_norms(method))
        optimiser.step()
        method.after_optimizer_step()
        schedule.step()
    return norms


def _cycle(loader: DataLoader):
    """The batches of ``loader`` again and again."""
    while True:
        yield from loader


def robustness_entropy(robustness: Sequence[torch.Tensor], available: torch.Tensor) -> torch.Tensor:
    """``H(r) / log k`` per image and scale, ``float64[B, L]``, of maps ``[float[B, M, h_l, w_l]]`` over
    the ``k`` available modalities of each sample (``available: bool[B, M]``, every ``k >= 2``),
    averaged over the pixels."""
    k = available.sum(dim=1).double()
    if bool((k < 2).any()):
        raise ValueError("robustness entropy needs 2+ available modalities per sample")
    mask = available.view(*available.shape, 1, 1)
    per_scale = []
    for r in robustness:
        p = r.detach().double()
        terms = torch.where(mask & (p > 0), -p * p.clamp_min(1e-300).log(), 0.0)
        per_scale.append(terms.sum(dim=1).mean(dim=(1, 2)) / k.log())
    return torch.stack(per_scale, dim=1)


@torch.no_grad()
def fusion_statistics(
    method: nn.Module, dataset: PreparedDataset, batch_size: int, batches: int | None = None
) -> dict[str, Any]:
    """Mean robustness entropy per subset of 2+ modalities and scale, and mean MAS probability per
    subset and modality, over the first ``batches`` test batches (all by default); a statistic the
    method does not provide is left out."""
    modalities = list(dataset.modalities)
    subsets = [s for s in enumerate_subsets(modalities) if len(s) >= 2]
    entropy: dict[str, list[torch.Tensor]] = {subset_name(s): [] for s in subsets}
    sampling: dict[str, list[torch.Tensor]] = {subset_name(s): [] for s in subsets}
    method.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for index, (inputs, _) in enumerate(loader):
        if batches is not None and index >= batches:
            break
        for subset in subsets:
            available = subset_mask(subset, modalities, next(iter(inputs.values())).shape[0])
            output = method(apply_availability(inputs, available, modalities), available)
            if output.get("robustness") is not None:
                entropy[subset_name(subset)].append(robustness_entropy(output["robustness"], available))
            probabilities = method.sampling_probabilities(output, available)
            if probabilities is not None:
                sampling[subset_name(subset)].append(probabilities.detach().double())
    result: dict[str, Any] = {}
    if any(entropy.values()):
        result["robustness_entropy"] = {s: torch.cat(v).mean(dim=0).tolist() for s, v in entropy.items()}
    if any(sampling.values()):
        result["mas_probabilities"] = {
            s: dict(zip(modalities, torch.cat(v).mean(dim=0).tolist())) for s, v in sampling.items()
        }
    return result


def build_method(args: argparse.Namespace) -> tuple[nn.Module, str, Protocol, TrainConfig, PreparedDataset]:
    """The method to diagnose (fresh from the run's params, or ``--model``), with what the steps need."""
    params = load_config(args.params)
    method_name, protocol = params.run_parts(args.run_name)
    dataset = PreparedDataset(args.data_dir or prepared_dir(args.dataset), "train")
    config = params.train.in_steps(len(dataset))
    if args.model is not None:
        method, record = load_model(args.model)
        if record["method"] != method_name:
            raise ValueError(f"{args.model}: holds method {record['method']!r}, not {method_name!r}")
        return method, str(args.model), protocol, config, dataset
    registered, method_params = params.method_spec(method_name)
    seed_everything(args.seed)
    init = method_init(dataset, config, method_params, registered)
    return create_method(registered, **init), "fresh", protocol, config, dataset


def diagnose(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the command prints, as JSON-ready values."""
    method, source, protocol, config, train_split = build_method(args)
    norms = gradient_steps(method, train_split, config, protocol, args.seed, args.steps)
    test_split = PreparedDataset(args.data_dir or prepared_dir(args.dataset), "test")
    record = {
        "dataset": args.dataset,
        "run": args.run_name,
        "model": source,
        "seed": args.seed,
        "protocol": protocol.record(),
        "gradients": {
            label: {key: [step[label][key] for step in norms] for key in ("norm", "rms")} | {"params": entry["params"]}
            for label, entry in (norms[0].items() if norms else [])
        },
        "scales": list(STRIDES),
    }
    record.update(fusion_statistics(method, test_split, config.batch_size, args.batches))
    return record


def print_report(record: Mapping[str, Any]) -> None:
    """The tables of :func:`diagnose`'s record on stdout."""
    print(f"{record['dataset']} {record['run']} ({record['model']}, seed {record['seed']})")
    if record["gradients"]:
        frame = pd.DataFrame(
            {label: entry["norm"] for label, entry in record["gradients"].items()},
        ).T
        frame.columns = [f"step {i}" for i in frame.columns]
        rms = pd.Series({label: np.mean(entry["rms"]) for label, entry in record["gradients"].items()})
        frame["mean rms"] = rms
        frame["params"] = pd.Series({label: entry["params"] for label, entry in record["gradients"].items()})
        print("\ngradient L2 norm per component (mean rms: per element, over the steps)")
        print(frame.to_string(float_format=lambda v: f"{v:.3g}"))
    if "robustness_entropy" in record:
        frame = pd.DataFrame(record["robustness_entropy"], index=[f"stride {s}" for s in record["scales"]]).T
        print("\nrobustness entropy H(r) / log k (1: uniform weights, 0: one modality)")
        print(frame.to_string(float_format=lambda v: f"{v:.3f}"))
    if "mas_probabilities" in record:
        print("\nMAS sampling distribution (mean over test tiles)")
        print(pd.DataFrame(record["mas_probabilities"]).T.to_string(float_format=lambda v: f"{v:.3f}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run-name", required=True, help="<method>-<protocol>, as listed under runs")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--data-dir", type=Path, default=None, help="prepared data (default data/prepared/<dataset>)")
    parser.add_argument("--model", type=Path, default=None, help="a trained model.pt (default: freshly initialised)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5, help="training steps whose gradients are measured")
    parser.add_argument("--batches", type=int, default=None, help="test batches for the robustness figures (all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.steps < 0:
        parser.error(f"--steps {args.steps}: must be >= 0")
    record = diagnose(args)
    print_report(record)
    if args.out is not None:
        atomic_write_json(args.out, record)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    errors.run(main)
