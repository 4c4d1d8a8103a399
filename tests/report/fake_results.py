"""A small hand-made results folder for the report tests: per-image confusion matrices drawn
from a seeded generator, and the files the evaluate and train stages would write from them.

Scores are computed here directly from the counts (``TP / (TP + FP + FN)`` per class, mean over
the classes present), independently of ``benchmark.metrics``. With ``scenarios`` each run also
gets a ``scenarios`` block (corrupted inputs): one confusion matrix per kind, corrupted modality
and level, drawn with a pixel accuracy that falls with the level, scored the same way.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np

DATASET = "toy"
MODALITIES = ["rgb", "dsm"]
SUBSETS = ["rgb", "dsm", "rgb+dsm"]
CLASSES = ["road", "roof", "tree"]
IMAGES = 12
PIXELS = 64  # per image
# run (<method>-<protocol>) -> (family, seeds, accuracy per subset): the chance a pixel is predicted right
METHODS = {
    "alpha-complete": ("reference", [0, 1], [0.70, 0.50, 0.80]),
    "beta-complete": ("joint", [0, 1], [0.60, 0.55, 0.85]),
    "sgma-complete": ("sgma", [0, 1], [0.72, 0.52, 0.81]),
}
# kind -> (levels, corrupted modalities): speckle only on dsm (the pretend SAR modality), kinds in
# benchmark.config.SCENARIO_KINDS order, levels not evenly spaced
SCENARIOS = {
    "block_missing": ([0.25, 0.5], ["rgb", "dsm"]),
    "gaussian": ([0.25, 0.5, 1.0], ["rgb", "dsm"]),
    "speckle": ([0.5], ["dsm"]),
}
SCENARIO_SEED = 5
BLOCK_SIZE = 4


def subset_names(modalities: list[str]) -> list[str]:
    return ["+".join(c) for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]


def image_confusions(accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """int64[N, K, K]: per image, PIXELS targets drawn uniformly, each predicted right with ``accuracy``."""
    k = len(CLASSES)
    out = np.zeros((IMAGES, k, k), dtype=np.int64)
    for n in range(IMAGES):
        target = rng.integers(0, k, PIXELS)
        wrong = (target + rng.integers(1, k, PIXELS)) % k
        pred = np.where(rng.random(PIXELS) < accuracy, target, wrong)
        np.add.at(out[n], (target, pred), 1)
    return out


def direct_iou(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU in percent of one [K, K] matrix, NaN where the class is absent everywhere."""
    iou = []
    for c in range(matrix.shape[0]):
        tp = matrix[c, c]
        union = matrix[c, :].sum() + matrix[:, c].sum() - tp
        iou.append(100.0 * tp / union if union else float("nan"))
    return np.array(iou)


def direct_miou(matrix: np.ndarray) -> float:
    return float(np.nanmean(direct_iou(matrix)))


def direct_mf1(matrix: np.ndarray) -> float:
    """Mean over the classes present of 2 TP / (2 TP + FP + FN), percent."""
    tp = np.diag(matrix).astype(float)
    denom = 2 * tp + (matrix.sum(0) - tp) + (matrix.sum(1) - tp)
    return float(np.nanmean(np.where(denom > 0, 100.0 * 2 * tp / np.maximum(denom, 1), np.nan)))


def scenario_block(accuracy: float, clean_miou: float, rng: np.random.Generator, scenarios: dict) -> dict:
    """A metrics.json ``scenarios`` block: per kind, modality and level the scores of a confusion
    matrix drawn with pixel accuracy ``accuracy * (1 - 0.3 * level / (1 + level))`` (lower with the level)."""
    kinds = {}
    mious = []
    for kind, (levels, modalities) in scenarios.items():
        per_modality = {}
        for modality in modalities:
            scores: dict[str, list[float]] = {"miou": [], "mf1": [], "accuracy": []}
            for level in levels:
                matrix = image_confusions(accuracy * (1 - 0.3 * level / (1 + level)), rng).sum(axis=0)
                scores["miou"].append(direct_miou(matrix))
                scores["mf1"].append(direct_mf1(matrix))
                scores["accuracy"].append(100.0 * np.trace(matrix) / matrix.sum())
            per_modality[modality] = scores
            mious += scores["miou"]
        kinds[kind] = {"levels": list(levels), "modalities": per_modality}
    return {
        "seed": SCENARIO_SEED,
        "block_size": BLOCK_SIZE,
        "clean_miou": clean_miou,
        "kinds": kinds,
        "avg": float(np.mean(mious)),
    }


def tags_block(confusion: np.ndarray, tags: dict[str, list[int]]) -> dict:
    """The ``tags`` block of a run: per tag, every subset's mIoU over the tag's images (``direct_miou``)."""
    out = {}
    for tag, images in tags.items():
        miou = {name: direct_miou(per_image[images].sum(axis=0)) for name, per_image in zip(SUBSETS, confusion)}
        values = list(miou.values())
        summary = {"avg": float(np.mean(values)), "top1": max(values), "last1": min(values)}
        out[tag] = {"tiles": len(images), "miou": miou, "summary": summary}
    return out


def write_results(
    root: Path,
    methods: dict = METHODS,
    with_logs: bool = True,
    scenarios: dict | None = None,
    tags: dict[str, list[int]] | None = None,
) -> dict:
    """Write results/<DATASET>/<method>/seed<k>/{metrics.json, image_scores.npz, train_log.jsonl}
    under ``root``; return {method: {seed: {"confusion": int64[S, N, K, K], "record": dict}}}.

    ``scenarios`` (kind -> (levels, modalities), e.g. :data:`SCENARIOS`): add a ``scenarios``
    block to every run (from its own generator: the other files stay as without it). ``tags``
    ({tag: [image index]}): add a ``tags`` block (:func:`tags_block`)."""
    truth: dict = {}
    for index, (method, (family, seeds, accuracy)) in enumerate(methods.items()):
        for seed in seeds:
            rng = np.random.default_rng(1000 * index + seed)
            confusion = np.stack([image_confusions(a, rng) for a in accuracy])
            subsets = {}
            for name, per_image in zip(SUBSETS, confusion):
                total = per_image.sum(axis=0)
                iou = direct_iou(total)
                subsets[name] = {"miou": direct_miou(total), "iou": dict(zip(CLASSES, iou.tolist()))}
            mious = [subsets[s]["miou"] for s in SUBSETS]
            name, protocol = method.rsplit("-", 1)
            record = {
                "dataset": DATASET,
                "run": method,
                "method": name,
                "protocol": {"name": protocol, "kind": protocol},
                "convention": "mask",
                "seed": seed,
                "family": family,
                "modalities": MODALITIES,
                "classes": CLASSES,
                "subsets": subsets,
                "summary": {
                    "avg": float(np.mean(mious)),
                    "top1": max(mious),
                    "last1": min(mious),
                    "top1_subset": SUBSETS[int(np.argmax(mious))],
                    "last1_subset": SUBSETS[int(np.argmin(mious))],
                },
                "efficiency": {
                    "tile_shape": [8, 8],
                    "params": 1_000_000 * (index + 1),
                    "gflops": 0.5 * (index + 1),
                    "train_seconds_per_step": 0.1 * (index + 1) + 0.01 * seed,
                    "train_images_per_s": 80.0 / (index + 1) - seed,
                    "inference_ms_per_image": 2.0 + index + 0.5 * seed,
                    "train_peak_memory_mb": 500.0 + 10 * index + seed,
                    "eval_peak_memory_mb": 400.0 + 10 * index,
                    "train_device": "cpu (test)",
                    "eval_device": "cpu (test)",
                },
            }
            if scenarios is not None:
                full = SUBSETS[-1]
                record["scenarios"] = scenario_block(
                    accuracy[-1], subsets[full]["miou"], np.random.default_rng([index, seed, 77]), scenarios
                )
            if tags is not None:
                record["tags"] = tags_block(confusion, tags)
            folder = root / DATASET / method / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps(record))
            np.savez(
                folder / "image_scores.npz",
                subsets=np.array(SUBSETS),
                classes=np.array(CLASSES),
                confusion=confusion,
            )
            if with_logs:
                lines = [
                    json.dumps(
                        {"step": s, "loss": 2.0 / (s + 1) + seed, "ce": 1.0, "lr": 0.1, "images_per_s": 50.0 + s}
                    )
                    for s in range(10)
                ]
                (folder / "train_log.jsonl").write_text("\n".join(lines) + "\n")
            truth.setdefault(method, {})[seed] = {"confusion": confusion, "record": record}
    return truth
