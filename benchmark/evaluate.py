"""Evaluate a trained method on every non-empty modality subset of a data set's test split.

``python -m benchmark.evaluate --dataset synthetic --method muss --seed 0`` reads
``models/<dataset>/<method>/seed<k>/model.pt`` and writes
``results/<dataset>/<method>/seed<k>/metrics.json``::

    {"dataset", "method", "seed", "family", "modalities": [...], "classes": [...],
     "subsets": {"rgb": {"miou", "mf1", "accuracy", "iou": {class: value}, "f1": {...}}, ...},
     "summary": {"avg", "top1", "last1", "top1_subset", "last1_subset"}}

All scores are percent, from one confusion matrix per subset accumulated over the whole split.
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
from benchmark.io import atomic_write_json
from benchmark.methods import import_method_modules
from benchmark.metrics import ConfusionMatrix, segmentation_scores, summarize
from benchmark.protocol import apply_availability, enumerate_subsets, subset_mask, subset_name
from benchmark.train import MODEL_FILE, load_model

METRICS_FILE = "metrics.json"


@torch.no_grad()
def evaluate_subsets(
    method: torch.nn.Module,
    dataset: PreparedDataset,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Confusion matrix ``int64[K, K]`` per subset name, in :func:`enumerate_subsets` order."""
    modalities = list(dataset.modalities)
    subsets = enumerate_subsets(modalities)
    matrices = {subset_name(s): ConfusionMatrix(len(dataset.classes), dataset.ignore_index) for s in subsets}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    method.eval()
    for inputs, target in tqdm(loader, desc="evaluate", disable=not progress, mininterval=1.0):
        inputs = {m: x.to(device) for m, x in inputs.items()}
        target = target.to(device)
        for subset in subsets:
            available = subset_mask(subset, modalities, target.shape[0]).to(device)
            logits = method.predict(apply_availability(inputs, available, modalities), available)
            matrices[subset_name(subset)].update(logits, target)
    return {name: cm.matrix for name, cm in matrices.items()}


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
    matrices = evaluate_subsets(
        method, dataset, batch_size=config.batch_size, device=device, progress=not args.no_progress
    )
    extra = {
        "family": getattr(method, "family", "reference"),
        "train_steps": record["steps"],
        "train_seconds": round(float(record["train_seconds"]), 3),
    }
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
