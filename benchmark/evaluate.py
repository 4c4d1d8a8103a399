"""Evaluate a trained method on every non-empty modality subset of a data set's test split.

``python -m benchmark.evaluate --dataset synthetic --method muss --seed 0`` reads
``models/<dataset>/<method>/seed<k>/model.pt`` and writes
``results/<dataset>/<method>/seed<k>/metrics.json``::

    {"dataset", "method", "seed", "family", "modalities": [...], "classes": [...],
     "subsets": {"rgb": {"miou", "mf1", "accuracy", "iou": {class: value}, "f1": {...}}, ...},
     "summary": {"avg", "top1", "last1", "top1_subset", "last1_subset"},
     "params", "gflops",                       # model size and cost of one inference
     "robustness": {"scales": [...], "subsets": {subset: {modality: [mean r per scale]}}}}

All scores are percent, from one confusion matrix per subset accumulated over the whole split.
``robustness`` appears only for methods whose ``predict`` output carries ``"robustness"``
maps (SGMA): the mean over all test images and pixels of each modality's weight at each
scale, per subset (exactly 0 for a missing modality). ``gflops`` is torch's FLOP count of one
inference on one tile with every modality available (see ``benchmark.efficiency``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark.config import (
    MODELS_DIR,
    RESULTS_DIR,
    EvalConfig,
    from_mapping,
    load_params,
    prepared_dir,
    resolve_device,
    run_dir,
    run_parser,
)
from benchmark.data.prepared import PreparedDataset
from benchmark.efficiency import inference_gflops, parameter_count
from benchmark.io import atomic_write_json
from benchmark.methods import import_method_modules
from benchmark.methods.contract import check_logits
from benchmark.metrics import ConfusionMatrix, segmentation_scores, summarize
from benchmark.models.backbones import STRIDES
from benchmark.protocol import apply_availability, enumerate_subsets, subset_mask, subset_name
from benchmark.train import MODEL_FILE, load_model

METRICS_FILE = "metrics.json"


class RobustnessMeter:
    """Running mean of robustness maps per scale: ``update([float[B, M, h_i, w_i]])``, ``mean -> float[S, M]``."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.count = 0

    def update(self, robustness: list[torch.Tensor]) -> None:
        # Mean over pixels per image first, so every image weighs the same at every scale.
        per_image = torch.stack([r.detach().double().mean(dim=(2, 3)) for r in robustness])  # [S, B, M]
        sums = per_image.sum(dim=1)
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += per_image.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        if self.sums is None:
            raise ValueError("no robustness maps were recorded")
        return self.sums / self.count


@torch.no_grad()
def evaluate_subsets(
    method: torch.nn.Module,
    dataset: PreparedDataset,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per subset name (in :func:`enumerate_subsets` order): the confusion matrix ``int64[K, K]``
    and, if the method reports robustness maps, their mean ``float64[S, M]`` (scale x modality;
    the second dict is empty otherwise)."""
    method_name = getattr(method, "method_name", type(method).__name__)
    modalities = list(dataset.modalities)
    subsets = enumerate_subsets(modalities)
    matrices = {subset_name(s): ConfusionMatrix(len(dataset.classes), dataset.ignore_index) for s in subsets}
    meters = {subset_name(s): RobustnessMeter() for s in subsets}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    method.eval()
    for inputs, target in tqdm(loader, desc="evaluate", disable=not progress, mininterval=1.0):
        inputs = {m: x.to(device) for m, x in inputs.items()}
        target = target.to(device)
        expected = (target.shape[0], len(dataset.classes), *target.shape[-2:])
        for subset in subsets:
            available = subset_mask(subset, modalities, target.shape[0]).to(device)
            output = method.predict(apply_availability(inputs, available, modalities), available)
            logits = check_logits(method_name, output, expected, "predict()")
            matrices[subset_name(subset)].update(logits, target)
            if output.get("robustness") is not None:
                meters[subset_name(subset)].update(output["robustness"])
    robustness = {name: meter.mean for name, meter in meters.items() if meter.count}
    return {name: cm.matrix for name, cm in matrices.items()}, robustness


def robustness_record(robustness: dict[str, torch.Tensor], modalities: list[str]) -> dict[str, Any]:
    """The metrics.json ``robustness`` entry from :func:`evaluate_subsets`' mean maps."""
    return {
        "scales": list(STRIDES),
        "subsets": {
            name: {m: [round(float(v), 6) for v in mean[:, i]] for i, m in enumerate(modalities)}
            for name, mean in robustness.items()
        },
    }


def metrics_record(
    matrices: dict[str, torch.Tensor],
    dataset: PreparedDataset,
    *,
    method: str,
    seed: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics.json record from per-subset confusion matrices."""
    subsets = {name: segmentation_scores(cm, dataset.classes) for name, cm in matrices.items()}
    return {
        "dataset": dataset.meta["dataset"],
        "method": method,
        "seed": seed,
        **(extra or {}),
        "modalities": list(dataset.modalities),
        "classes": list(dataset.classes),
        "subsets": subsets,
        "summary": summarize({name: scores["miou"] for name, scores in subsets.items()}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", type=Path, default=None, help="default models/<dataset>/<method>/seed<k>/model.pt")
    parser.add_argument(
        "--out", type=Path, default=None, help="default results/<dataset>/<method>/seed<k>/metrics.json"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    import_method_modules(params.get("method_modules") or [])
    config = from_mapping(EvalConfig, params.get("evaluate"), f"{args.params}: evaluate")
    device = resolve_device(config.device)
    dataset = PreparedDataset(args.data_dir or prepared_dir(args.dataset), args.split)
    model_path = args.model or run_dir(MODELS_DIR, args.dataset, args.method, args.seed) / MODEL_FILE
    method, record = load_model(model_path, device)
    if record["method"] != args.method:
        raise ValueError(f"{model_path}: holds method {record['method']!r}, not {args.method!r}")
    if dict(record["init"]["modalities"]) != dataset.modalities:
        raise ValueError(
            f"{model_path}: trained on modalities {record['init']['modalities']}, data has {dataset.modalities}"
        )
    matrices, robustness = evaluate_subsets(
        method, dataset, batch_size=config.batch_size, device=device, progress=not args.no_progress
    )
    extra = {
        "family": getattr(method, "family", "reference"),
        "train_steps": record["steps"],
        "train_seconds": round(float(record["train_seconds"]), 3),
        "params": parameter_count(method),
        "gflops": round(inference_gflops(method, dataset.modalities, dataset.tile_shape, device), 6),
    }
    if robustness:
        extra["robustness"] = robustness_record(robustness, list(dataset.modalities))
    metrics = metrics_record(matrices, dataset, method=args.method, seed=args.seed, extra=extra)
    out = args.out or run_dir(RESULTS_DIR, args.dataset, args.method, args.seed) / METRICS_FILE
    atomic_write_json(out, metrics)
    summary = metrics["summary"]
    print(
        f"{args.dataset} {args.method} seed{args.seed}: avg {summary['avg']:.2f}  top1 {summary['top1']:.2f}  "
        f"last1 {summary['last1']:.2f} mIoU -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
