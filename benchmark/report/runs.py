"""One long table of runs: every score of every (data set, run, seed, subset, class) in a pandas DataFrame.

The report's tables of scores over subsets (leaderboard, fragility, per class, protocols, ablation)
take their per-seed values from it, and a user builds their own from a notebook::

    from benchmark.report import load_runs
    runs = load_runs("results/runs")                 # every data set, run and seed found
    miou = runs[(runs.score == "miou")]
    miou.groupby(["dataset", "protocol", "method", "subset"], sort=False).value.agg(["mean", "std"])

Columns (:data:`COLUMNS`): ``dataset``, ``protocol`` (the training protocol's name), ``method``,
``run`` (``<method>-<protocol>``), ``family``, ``convention`` (how missing modalities reached the
model at evaluation), ``seed``, ``subset`` (``rgb+dsm``), ``size`` (its number of modalities),
``score`` (``miou``, ``mf1``, ``accuracy`` per subset; ``iou``, ``f1`` per class), ``class``
(empty for the per-subset scores) and ``value`` (percent; NaN where undefined). Rows keep the
order of the records: runs as listed, seeds ascending, subsets in :func:`enumerate_subsets` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark.layout import METRICS_FILE, RUNS_DIR
from benchmark.protocol import subset_parts
from benchmark.report.results import load_metrics, num

COLUMNS = (
    "dataset",
    "protocol",
    "method",
    "run",
    "family",
    "convention",
    "seed",
    "subset",
    "size",
    "score",
    "class",
    "value",
)
SUBSET_SCORES = ("miou", "mf1", "accuracy")  # one value per subset
CLASS_SCORES = ("iou", "f1")  # one value per subset and class


def runs_frame(records: Sequence[dict]) -> pd.DataFrame:
    """The long table of validated ``metrics.json`` records (:func:`~benchmark.report.results.load_metrics`)."""
    rows = []
    for rec in records:
        head = (
            rec["dataset"],
            rec["protocol"]["name"],
            rec["method"],
            rec["run"],
            rec["family"],
            rec["convention"],
            rec["seed"],
        )
        for subset, scores in rec["subsets"].items():
            size = len(subset_parts(subset))
            rows += [(*head, subset, size, key, "", num(scores[key])) for key in SUBSET_SCORES if key in scores]
            for key in CLASS_SCORES:
                rows += [(*head, subset, size, key, c, num(v)) for c, v in (scores.get(key) or {}).items()]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def load_runs(
    results_dir: str | Path = RUNS_DIR,
    datasets: Sequence[str] | None = None,
    runs: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The long table of ``results_dir/<dataset>/<run>/seed<k>/metrics.json``, each file validated.

    ``datasets``: default every folder holding a ``<run>/seed<k>/metrics.json``; ``runs`` and
    ``seeds`` as :func:`~benchmark.report.results.load_metrics` (default: every one found)."""
    root = Path(results_dir)
    if datasets is None:
        datasets = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(f"*/seed*/{METRICS_FILE}")))
        if not datasets:
            raise FileNotFoundError(f"{root}: no <dataset>/<run>/seed*/{METRICS_FILE} found")
    frames = [runs_frame(load_metrics(root, d, runs, seeds)) for d in datasets]
    return pd.concat(frames, ignore_index=True)


def seed_scores(frame: pd.DataFrame, run: str, score: str = "miou", cls: str = "") -> pd.DataFrame:
    """``score`` (of class ``cls`` for a per-class score) of one run: seeds (index, ascending) x
    subsets (columns, in the table's order), percent."""
    rows = frame[(frame["run"] == run) & (frame["score"] == score) & (frame["class"] == cls)]
    if rows.empty:
        raise KeyError(f"run {run!r} has no {score!r} values{f' for class {cls!r}' if cls else ''}")
    wide = rows.pivot(index="seed", columns="subset", values="value")
    return wide[list(dict.fromkeys(rows["subset"]))].sort_index()
