"""The numbers of one data set's report, as :class:`~benchmark.report.tables.Table` objects.

Every function takes validated ``metrics.json`` records (:func:`benchmark.report.results.load_metrics`)
of one data set. The scores over subsets and classes come from their long table of runs
(:func:`benchmark.report.runs.runs_frame`), the efficiency, robustness and scenario figures from the
records' own blocks; values are computed with :mod:`benchmark.stats`, and each value over seeds is the
mean over seeds of the per-seed value, with the sample standard deviation (ddof = 1) beside it. A row
is a run (``<method>-<protocol>``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchmark import stats
from benchmark.layout import LEADERBOARD
from benchmark.protocol import parse_run, run_name, subset_parts
from benchmark.report.results import SCENARIO_UNITS, SUMMARY_KEYS, by_run, num, scenario_layout
from benchmark.report.runs import runs_frame, seed_scores
from benchmark.report.tables import Column, Table

SUMMARY_TITLES = {"avg": "Avg", "top1": "Top-1", "last1": "Last-1"}
STD_NOTE = "mean ± sample std over seeds"


def expected_key(p: float) -> str:
    """Column key of E_p[mIoU], e.g. ``expected_p0_05``: no dot, so DVC's flattened names stay readable."""
    return "expected_p" + f"{p:g}".replace(".", "_")


def _with_std(row: dict[str, Any], key: str, values: Sequence[float]) -> None:
    row[key], row[f"{key}_std"] = stats.mean_std(list(values))


def _columns(keys: Sequence[str], titles: Mapping[str, str], best: str | None = "max") -> list[Column]:
    return [Column(k, titles.get(k, k), std_key=f"{k}_std", best=best) for k in keys]  # type: ignore[arg-type]


def _std_columns(keys: Sequence[str]) -> list[Column]:
    return [Column(f"{k}_std", f"{k}_std") for k in keys]


def _head(run: str, recs: list[dict]) -> dict[str, Any]:
    """The first cells of a run's row: run (``<method>-<protocol>``), protocol, family, number of seeds."""
    families = sorted({r["family"] for r in recs})
    if len(families) > 1:
        raise ValueError(f"run {run!r}: seeds disagree on its family: {families}")
    return {"run": run, "protocol": recs[0]["protocol"]["name"], "family": families[0], "seeds": len(recs)}


def _full_subset(record: dict) -> str:
    """The name of the record's subset holding every modality."""
    return next(s for s in record["subsets"] if len(subset_parts(s)) == len(record["modalities"]))


HEAD = [
    Column("run", "Run", "text"),
    Column("protocol", "Protocol", "text"),
    Column("family", "Family", "text"),
    Column("seeds", "Seeds", "int"),
]


def leaderboard_table(records: list[dict], failure_probs: Sequence[float]) -> Table:
    """Method x subset mIoU, Avg, Top-1, Last-1 and E_p[mIoU] per ``p`` (all mean ± std over seeds)."""
    subsets = list(records[0]["subsets"])
    modalities = records[0]["modalities"]
    expected = [expected_key(p) for p in failure_probs]
    rows = []
    frame = runs_frame(records)
    for run, recs in by_run(records).items():
        row = _head(run, recs)
        miou = seed_scores(frame, run)
        per_seed = miou.to_dict("records")  # [{subset: mIoU}] per seed
        for s in subsets:
            _with_std(row, s, miou[s])
        _with_std(row, "avg", [float(np.mean(list(m.values()))) for m in per_seed])
        # Top-1 / Last-1: the best / worst subset of the means over seeds, with that subset's std
        # (a mean of per-seed maxima would be biased upwards and name no subset)
        for key, subset in (("top1", best_subset(miou)), ("last1", worst_subset(miou))):
            if subset is None:  # a subset without a score: undefined
                row[key], row[f"{key}_std"], row[f"{key}_subset"] = math.nan, math.nan, ""
            else:
                row[key], row[f"{key}_std"], row[f"{key}_subset"] = row[subset], row[f"{subset}_std"], subset
        for p, key in zip(failure_probs, expected):
            _with_std(row, key, [stats.expected_miou(m, modalities, p) for m in per_seed])
        rows.append(row)
    titles = {**SUMMARY_TITLES, **{k: f"E[mIoU] p={p:g}" for p, k in zip(failure_probs, expected)}}
    keys = [*subsets, *SUMMARY_KEYS, *expected]
    columns = []
    for column in _columns(keys, titles):  # Top-1 and Last-1 each followed by the subset they are
        columns.append(column)
        if column.key in ("top1", "last1"):
            columns.append(Column(f"{column.key}_subset", f"{column.title} subset", "text"))
    return Table(
        LEADERBOARD,
        "mIoU (%) per available-modality subset",
        [*HEAD, *columns],
        rows,
        note=f"{STD_NOTE}; best in bold. Avg = mean over subsets; Top-1/Last-1 = the subset with the "
        "best/worst mean (± its std), named in the next column; E[mIoU] p = expected mIoU when each modality "
        "fails independently with probability p (renormalised over non-empty subsets). Run = "
        "<method>-<protocol> (the training protocol, docs/protocol.md); missing modalities at evaluation: "
        f"{_convention(records)}.",
        std_columns=_std_columns(keys),
    )


def tag_table(records: list[dict]) -> Table | None:
    """Run x tag (e.g. DELIVER's weathers and sensor failures): on the test tiles of each tag, the
    mIoU (%) with every modality and the Avg over subsets, mean ± std over seeds; None when no
    record carries ``tags``. A tag's Avg is NaN for a seed where a subset scores nothing there."""
    tagged = [r for r in records if "tags" in r]
    if not tagged:
        return None
    first = tagged[0]["tags"]
    keys, titles = [], {}
    for tag in first:
        keys += [f"{tag}_full", f"{tag}_avg"]
        titles |= {f"{tag}_full": f"{tag}: all", f"{tag}_avg": f"{tag}: Avg"}
    rows = []
    for run, recs in by_run(tagged).items():
        row, full = _head(run, recs), _full_subset(recs[0])
        for tag in first:
            entries = [r["tags"].get(tag, {"miou": {}, "summary": None}) for r in recs]
            _with_std(row, f"{tag}_full", [num(e["miou"].get(full)) for e in entries])
            _with_std(row, f"{tag}_avg", [num((e["summary"] or {}).get("avg")) for e in entries])
        rows.append(row)
    counts = ", ".join(f"{tag} {entry['tiles']}" for tag, entry in first.items())
    return Table(
        "conditions",
        "mIoU (%) per condition (the test tiles tagged with it): every modality, and Avg over subsets",
        [*HEAD, *_columns(keys, titles)],
        rows,
        note=f"{STD_NOTE}; best in bold. <tag>: all = the mIoU with every modality on the tag's tiles; <tag>: "
        f"Avg = the mean mIoU over subsets there. A tile can carry several tags (a weather and a sensor failure). "
        f"Test tiles per tag: {counts}.",
        std_columns=_std_columns(keys),
    )


FLOOR_FAMILY = "floor"  # the family of the floors (benchmark.methods.floor): no deep learning


def _best(rows: Sequence[dict], key: str) -> dict | None:
    """The row with the highest finite ``key`` (the first of equals), or None."""
    scored = [r for r in rows if not math.isnan(num(r.get(key)))]
    return max(scored, key=lambda r: r[key]) if scored else None


def floor_gap(board: Table, full: str) -> str | None:
    """One sentence: how far the best deep run is above or below the best floor on the full set
    ``full`` and on Avg (leaderboard means over seeds); None without a floor or a deep run."""
    floors = [r for r in board.rows if r["family"] == FLOOR_FAMILY]
    deep = [r for r in board.rows if r["family"] != FLOOR_FAMILY]
    parts = []
    for key, label in ((full, f"the full set {full}"), ("avg", "Avg")):
        best_deep, best_floor = _best(deep, key), _best(floors, key)
        if best_deep is None or best_floor is None:
            continue
        gap = best_deep[key] - best_floor[key]
        side = "above" if gap >= 0 else "below"
        parts.append(
            f"{abs(gap):.2f} points {side} the best floor on {label} ({best_deep['run']} {best_deep[key]:.2f} vs "
            f"{best_floor['run']} {best_floor[key]:.2f} mIoU)"
        )
    if not parts:
        return None
    return "Floors (family floor, no deep learning; docs/floors.md): the best deep run is " + "; ".join(parts) + "."


CONVENTIONS = {
    "mask": "mask (zeroed and masked out)",
    "zero": "zero (zeroed, the model told every modality is present)",
}


def _convention(records: list[dict]) -> str:
    """How missing modalities reached the models (one convention per data set: load_metrics checks it)."""
    convention = records[0]["convention"]
    return CONVENTIONS.get(convention, convention)


def fragility_table(records: list[dict]) -> Table:
    """Per modality: mean mIoU drop when it is removed from a subset holding it, and its mIoU alone."""
    subsets = list(records[0]["subsets"])
    modalities = records[0]["modalities"]
    rows = []
    frame = runs_frame(records)
    for run, recs in by_run(records).items():
        row = _head(run, recs)
        per_seed = [stats.fragility(m, modalities) for m in seed_scores(frame, run)[subsets].to_dict("records")]
        for m in modalities:
            _with_std(row, f"{m}_drop", [f[m]["drop"] for f in per_seed])
            _with_std(row, f"{m}_alone", [f[m]["alone"] for f in per_seed])
        rows.append(row)
    columns = [*HEAD]
    keys = []
    for m in modalities:
        columns += [
            Column(f"{m}_drop", f"{m} drop", std_key=f"{m}_drop_std"),  # low is not "better": not bolded
            Column(f"{m}_alone", f"{m} alone", std_key=f"{m}_alone_std", best="max"),
        ]
        keys += [f"{m}_drop", f"{m}_alone"]
    return Table(
        "fragility",
        "Per-modality fragility: mIoU drop (points) when the modality is removed, and mIoU (%) with it alone",
        columns,
        rows,
        note=f"{STD_NOTE}. drop = mean over the subsets holding the modality and another one of "
        "mIoU(subset) - mIoU(subset without it): how much the run loses without it (lower: it relies "
        "less on it, or the others make up for it; negative: it does better without it). Bold: best alone.",
        std_columns=_std_columns(keys),
    )


def size_curves(records: list[dict]) -> dict[str, dict[int, tuple[float, float]]]:
    """``{run: {k: (mean, std)}}`` of the mean mIoU over subsets of k modalities (per seed, then over seeds)."""
    frame = runs_frame(records)
    curves = {}
    for run in by_run(records):
        per_seed = [stats.by_size(m) for m in seed_scores(frame, run).to_dict("records")]
        curves[run] = {k: stats.mean_std([c[k] for c in per_seed]) for k in per_seed[0]}
    return curves


def _subset_means(miou: pd.DataFrame) -> list[tuple[float, str]]:
    """``(mean mIoU over seeds, subset)`` of a run's subsets with a value, in column order
    (``miou``: seeds x subsets, :func:`~benchmark.report.runs.seed_scores`)."""
    means = [(stats.mean_std(miou[s])[0], s) for s in miou.columns]
    finite = [(m, s) for m, s in means if not math.isnan(m)]
    return finite or [(math.nan, miou.columns[0])]


def worst_subset(miou: pd.DataFrame, scored_only: bool = False) -> str | None:
    """The subset with the lowest mean mIoU over a run's seeds (the first of equals): Last-1. None when
    a subset has no score (a floor that cannot use it: Last-1 is then undefined), unless
    ``scored_only``, which takes the worst of the subsets with a score."""
    if not scored_only and any(math.isnan(stats.mean_std(miou[s])[0]) for s in miou.columns):
        return None
    return min(_subset_means(miou), key=lambda item: item[0])[1]


def best_subset(miou: pd.DataFrame) -> str:
    """The subset with the highest mean mIoU over a run's seeds (the first of equals): Top-1."""
    return max(_subset_means(miou), key=lambda item: item[0])[1]


def _class_scores(frame: pd.DataFrame, run: str, cls: str, subset: str, seeds: int) -> list[float]:
    """IoU of class ``cls`` on ``subset`` per seed (NaN where a run recorded none)."""
    try:
        iou = seed_scores(frame, run, "iou", cls)
    except KeyError:
        return [math.nan] * seeds
    return list(iou[subset]) if subset in iou else [math.nan] * seeds


def per_class_table(records: list[dict]) -> Table:
    """IoU per class on the full modality set and on each run's worst subset (mean ± std over seeds)."""
    classes = list(records[0]["classes"])
    full = _full_subset(records[0])
    rows = []
    frame = runs_frame(records)
    for run, recs in by_run(records).items():
        miou = seed_scores(frame, run)
        worst = worst_subset(miou)
        for label, subset in (
            ("full", full),
            ("worst", worst) if worst else ("worst scored", worst_subset(miou, True)),
        ):
            row = _head(run, recs) | {"set": label, "subset": subset}
            for c in classes:
                _with_std(row, c, _class_scores(frame, run, c, subset, len(recs)))
            _with_std(row, "miou", miou[subset])
            rows.append(row)
    keys = [*classes, "miou"]
    columns = [
        *HEAD,
        Column("set", "Set", "text"),
        Column("subset", "Subset", "text"),
        *[Column(k, "mIoU" if k == "miou" else k, std_key=f"{k}_std") for k in keys],
    ]
    return Table(
        "per_class",
        "IoU (%) per class on the full modality set and on each run's worst subset",
        columns,
        rows,
        note=f"{STD_NOTE}. worst = the subset with the lowest mean mIoU for that run (its Last-1 subset); "
        "worst scored = the lowest of the subsets a floor can use (its Last-1 is undefined).",
        std_columns=_std_columns(keys),
    )


FIXED = ("params", "gflops")  # the same for every seed: no ± shown
EFFICIENCY_COLUMNS = (
    ("params", "Params (M)", 1e-6, 3, "min"),
    ("gflops", "GFLOPs", 1.0, 3, "min"),
    ("train_seconds_per_step", "Train s/step", 1.0, 4, "min"),
    ("train_images_per_s", "Train img/s", 1.0, 1, "max"),
    ("inference_ms_per_image", "Infer ms/img", 1.0, 2, "min"),
    ("train_peak_memory_mb", "Train peak MiB", 1.0, 0, None),  # on a CPU the whole process: not bolded
    ("eval_peak_memory_mb", "Eval peak MiB", 1.0, 0, None),
)
# timings that move with the machine's load when measured on a CPU: never bolded there
LOAD_DEPENDENT = ("train_seconds_per_step", "train_images_per_s", "inference_ms_per_image")


def efficiency_table(records: list[dict]) -> Table:
    """Size, cost and speed per run from the ``efficiency`` block of metrics.json (mean ± std over seeds)."""
    rows = []
    devices: set[str] = set()
    for run, recs in by_run(records).items():
        row = _head(run, recs)
        for key, _, scale, _, _ in EFFICIENCY_COLUMNS:
            values = [num(r.get("efficiency", {}).get(key)) * scale for r in recs]
            _with_std(row, key, values)
        devices |= {str(r.get("efficiency", {}).get(k)) for r in recs for k in ("train_device", "eval_device")}
        rows.append(row)
    devices.discard("None")
    height = width = "?"
    shape = records[0].get("efficiency", {}).get("tile_shape")
    if isinstance(shape, list) and len(shape) == 2:
        height, width = shape
    on_cpu = not devices or any(d.startswith("cpu") for d in devices)
    columns = [
        *HEAD,
        *[
            Column(
                k,
                title,
                decimals=d,
                std_key=None if k in FIXED else f"{k}_std",
                best=None if on_cpu and k in LOAD_DEPENDENT else b,  # type: ignore[arg-type]
            )
            for k, title, _, d, b in EFFICIENCY_COLUMNS
        ],
    ]
    load = (
        " Timings on a CPU depend on the machine's load (another job on the same cores can slow them 3x): "
        "compare them within one report only; they are not bolded."
        if on_cpu
        else ""
    )
    return Table(
        "efficiency",
        "Model size, cost and speed",
        columns,
        rows,
        note=f"{STD_NOTE}. GFLOPs (torch's count, 1 multiply-add = 2 FLOPs) and latency: one inference on one "
        f"{height}x{width} tile with every modality; train img/s: images per second of optimiser steps "
        "(data loading excluded); peak memory: CUDA's peak allocation on a GPU, the process's peak resident "
        f"set on a CPU. Measured on: {', '.join(sorted(devices)) or 'unknown'}.{load}",
        std_columns=_std_columns([k for k, *_ in EFFICIENCY_COLUMNS]),
    )


def curves_table(logs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]) -> Table | None:
    """The training loss at the end of each run with a step log (:func:`benchmark.stats.loss_trend`):
    its slope per 100 steps (mean ± std over seeds) and in how many seeds it is still falling.
    ``logs``: run -> seed -> {"step", "loss", ...}; None when no log has 3 steps."""
    rows = []
    for run, seeds in logs.items():
        trends = [t for log in seeds.values() if (t := stats.loss_trend(log["step"], log["loss"])) is not None]
        if not trends:
            continue
        slope, slope_std = stats.mean_std([t.slope for t in trends])
        falling = sum(t.verdict == "falling" for t in trends)
        verdict = "still falling" if falling == len(trends) else "flat" if falling == 0 else "mixed"
        rows.append(
            {
                "run": run,
                "seeds": len(trends),
                "last_step": max(t.last_step for t in trends),
                "slope": slope,
                "slope_std": slope_std,
                "falling": f"{falling} of {len(trends)}",
                "verdict": verdict,
            }
        )
    if not rows:
        return None
    return Table(
        "training_curves",
        "The training loss at the last steps",
        [
            Column("run", "Run", "text"),
            Column("seeds", "Seeds", "int"),
            Column("last_step", "Last step", "int"),
            Column("slope", "Loss slope per 100 steps", decimals=4, std_key="slope_std"),
            Column("falling", "Seeds still falling", "text"),
            Column("verdict", "Verdict", "text"),
        ],
        rows,
        note=f"{STD_NOTE}. Slope: least squares of the training loss against the step over the last "
        f"{stats.TREND_WINDOW:.0%} of the logged steps; still falling: the slope is more than {stats.TREND_Z:g} "
        "standard errors below 0 (docs/statistics.md). A run whose loss still falls at its last step is "
        "undertrained: a longer schedule would change its scores, and the ranking.",
        std_columns=[Column("slope_std", "slope std", decimals=4)],
    )


def scale_note(records: list[dict], curves: Table | None) -> str:
    """One paragraph: the scale the runs were trained at (steps, batch, tile size, from metrics.json)
    and, from the ``training_curves`` table, how many are still improving, with the command that
    trains longer."""
    efficiency = [e for r in records if (e := r.get("efficiency") or {}).get("train_steps")]
    if not efficiency:
        return ""
    steps = max(int(e["train_steps"]) for e in efficiency)
    batch = {e.get("train_batch_size") for e in efficiency} - {None}
    tile = efficiency[0].get("tile_shape")
    text = f"Scale: {steps} training steps" + (f" of batch {batch.pop()}" if len(batch) == 1 else "")
    text += f" on {tile[0]}x{tile[1]} px tiles." if tile else "."
    still = [r for r in (curves.rows if curves else []) if r["verdict"] == "still falling"]
    if still:
        text += (
            f" The training loss of {len(still)} of {len(curves.rows)} gradient-trained runs is still falling at "
            "the last step (training_curves): they are undertrained, and this table is a check of the "
            f"pipeline at this scale rather than a ranking of the methods. Train longer with "
            f"`dvc exp run -S train.steps={2 * steps}` (or twice `train.epochs` where the schedule is in epochs; "
            "README, Comparing two experiments)."
        )
    return text


def avg_ranks(
    board: Table,
    records: list[dict],
    confusions: Mapping[str, np.ndarray],
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> dict[str, int]:
    """Rank of each run of the leaderboard ``board`` by Avg (:func:`benchmark.stats.tied_ranks`): a
    run shares the rank of the run just above it when their paired bootstrap interval of the Avg
    difference includes 0. Runs whose seeds differ cannot be paired and never share a rank.

    ``confusions``: run -> int64[R, S, N, K, K] (seeds in the records' order, paired by position).
    """
    seeds = {run: [r["seed"] for r in recs] for run, recs in by_run(records).items()}

    def tied(above: str, run: str) -> bool:
        if seeds[above] != seeds[run]:
            return False
        result = stats.paired_bootstrap(
            confusions[above], confusions[run], samples=samples, confidence=confidence, seed=seed
        )
        return not result.significant

    return stats.tied_ranks({row["run"]: row["avg"] for row in board.rows}, tied)


RANK_NOTE = (
    " Rank: by Avg, 1 = best; a run shares the rank of the run just above it when their paired bootstrap "
    "interval of the Avg difference includes 0 (docs/statistics.md)."
)


def with_ranks(board: Table, ranks: Mapping[str, int]) -> Table:
    """The leaderboard ``board`` with a Rank column after the head columns (a run without an Avg: none)."""
    at = len(HEAD)
    rows = [{**row, "rank": ranks.get(row["run"])} for row in board.rows]
    columns = [*board.columns[:at], Column("rank", "Rank", "int"), *board.columns[at:]]
    return dataclasses.replace(board, columns=columns, rows=rows, note=board.note + RANK_NOTE)


def comparison_table(
    records: list[dict],
    confusions: Mapping[str, np.ndarray],
    reference: str,
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> Table:
    """Every run minus ``reference`` per subset and on Avg: the difference of the means over
    seeds (points) and a paired bootstrap interval over test images and seeds.

    ``confusions``: run -> int64[R, S, N, K, K] (seeds in the records' order, paired by position).
    """
    grouped = by_run(records)
    if reference not in grouped:
        raise ValueError(f"report.reference: {reference!r} has no results; runs: {list(grouped)}")
    subsets = list(records[0]["subsets"])
    ref_seeds = [r["seed"] for r in grouped[reference]]
    shown, long = [], []
    level = f"{100 * confidence:g}%"
    for run, recs in grouped.items():
        if run == reference:
            continue
        seeds = [r["seed"] for r in recs]
        if seeds != ref_seeds:
            raise ValueError(f"run {run!r} has seeds {seeds}, reference {reference!r} has {ref_seeds}: cannot pair")
        row: dict[str, Any] = _head(run, recs) | {"_bold": set()}
        for i, subset in enumerate([*subsets, "avg"]):
            a, b = confusions[run], confusions[reference]
            pick = (slice(None), slice(None)) if subset == "avg" else (slice(None), i)
            result = stats.paired_bootstrap(a[pick], b[pick], samples=samples, confidence=confidence, seed=seed)
            row[subset] = f"{result.diff:+.2f} [{result.low:+.2f}, {result.high:+.2f}]" + (
                " †" if result.significant else ""
            )
            if result.significant:
                row["_bold"].add(subset)
            long.append(
                {
                    "run": run,
                    "protocol": recs[0]["protocol"]["name"],
                    "reference": reference,
                    "subset": subset,
                    "diff": result.diff,
                    "low": result.low,
                    "high": result.high,
                    "significant": int(result.significant),
                }
            )
        shown.append(row)
    machine = Table(
        "comparison",
        "",
        [
            Column("run", "run", "text"),
            Column("protocol", "protocol", "text"),
            Column("reference", "reference", "text"),
            Column("subset", "subset", "text"),
            Column("diff", "diff"),
            Column("low", "low"),
            Column("high", "high"),
            Column("significant", "significant", "int"),
        ],
        long,
    )
    columns = [*HEAD, *[Column(s, SUMMARY_TITLES.get(s, s), "text") for s in [*subsets, "avg"]]]
    return Table(
        "comparison",
        f"Difference to {reference} (mIoU points) with {level} paired bootstrap intervals",
        columns,
        shown,
        note=f"run minus {reference}: difference of the means over seeds [{level} percentile interval; "
        f"{samples} replicates resampling test tiles and the {len(ref_seeds)} seed(s), paired]. † and bold: the "
        "interval excludes 0. Tiles are treated as independent and no multiple-comparison correction is "
        "applied (docs/statistics.md).",
        machine=machine,
    )


def robustness_means(records: list[dict]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Mean robustness over seeds: ``{run: {subset: {modality: [mean r_m per scale]}}}`` for the
    runs whose records carry ``robustness`` (others left out). A run's seeds must agree on
    ``robustness.scales`` (``ValueError``)."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run, recs in by_run([r for r in records if "robustness" in r]).items():
        scales = recs[0]["robustness"]["scales"]
        for rec in recs[1:]:
            if rec["robustness"]["scales"] != scales:
                raise ValueError(
                    f"run {run!r}: key 'robustness.scales' is {scales!r} in seed {recs[0]['seed']} "
                    f"but {rec['robustness']['scales']!r} in seed {rec['seed']}"
                )
        table[run] = {
            subset: {
                m: [
                    float(np.mean([num(r["robustness"]["subsets"][subset][m][k]) for r in recs]))
                    for k in range(len(scales))
                ]
                for m in recs[0]["modalities"]
            }
            for subset in recs[0]["robustness"]["subsets"]
        }
    return table


SCENARIO_MEAN = "mean"  # the pseudo-modality of scenario_means: per seed, the mean over the corrupted modalities


def _level_key(kind: str, level: float) -> str:
    return f"{kind}_{level:g}"


def scenario_means(records: list[dict]) -> dict[str, dict[str, Any]]:
    """Corrupted-input mIoU (%) over seeds of the runs whose records carry ``scenarios``::

        {run: {"seeds": n, "clean": (mean, std), "avg": (mean, std),
                  "kinds": {kind: {modality | "mean": (float[L] means, float[L] stds)}}}}

    ``clean`` is the full-set mIoU, ``avg`` the run's ``scenarios.avg``, ``"mean"`` the per-seed mean
    over the kind's corrupted modalities at each level; each then mean ± sample std over seeds.
    The layout (kinds, levels, modalities) is the one :func:`load_metrics` checked to be shared.
    """
    out: dict[str, dict[str, Any]] = {}
    for run, recs in by_run([r for r in records if "scenarios" in r]).items():
        layout = scenario_layout(recs[0])
        kinds: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for kind, (levels, modalities) in layout.items():
            # [seeds, modalities, levels]
            values = np.array(
                [
                    [[num(v) for v in r["scenarios"]["kinds"][kind]["modalities"][m]["miou"]] for m in modalities]
                    for r in recs
                ],
                dtype=np.float64,
            )
            series = {m: values[:, j] for j, m in enumerate(modalities)}
            series[SCENARIO_MEAN] = values.mean(axis=1)
            kinds[kind] = {}
            for name, per_seed in series.items():  # per_seed: float[seeds, levels]
                pairs = np.array([stats.mean_std(per_seed[:, k]) for k in range(len(levels))])  # [levels, 2]
                kinds[kind][name] = (pairs[:, 0], pairs[:, 1])
        out[run] = {
            "seeds": len(recs),
            "clean": stats.mean_std([num(r["scenarios"]["clean_miou"]) for r in recs]),
            "avg": stats.mean_std([num(r["scenarios"]["avg"]) for r in recs]),
            "kinds": kinds,
        }
    return out


def scenario_table(records: list[dict]) -> Table:
    """Method x (Clean, ``<kind> <level>``..., Avg) mIoU (%) under corrupted inputs, mean ± std over seeds.

    ``<kind> <level>``: per seed the mean over the kind's corrupted modalities (every modality
    available, one corrupted at a time). Records without ``scenarios`` are left out.
    """
    means = scenario_means(records)
    if not means:
        raise ValueError("scenario_table: no record carries a 'scenarios' block")
    layout = scenario_layout(next(r for r in records if "scenarios" in r))
    keys, titles = ["clean"], {"clean": "Clean"}
    for kind, (levels, _) in layout.items():
        for level in levels:
            keys.append(_level_key(kind, level))
            titles[keys[-1]] = f"{kind} {level:g}"
    keys.append("avg")
    titles["avg"] = "Avg"
    grouped = by_run(records)
    rows = []
    for run, entry in means.items():
        row = _head(run, grouped[run])
        row["clean"], row["clean_std"] = entry["clean"]
        row["avg"], row["avg_std"] = entry["avg"]
        for kind, (levels, _) in layout.items():
            mean, std = entry["kinds"][kind][SCENARIO_MEAN]
            for k, level in enumerate(levels):
                row[_level_key(kind, level)], row[f"{_level_key(kind, level)}_std"] = float(mean[k]), float(std[k])
        rows.append(row)
    corrupted = "; ".join(f"{kind}: {', '.join(mods)}" for kind, (_, mods) in layout.items())
    units = "; ".join(f"{kind} = {SCENARIO_UNITS[kind]}" for kind in layout)
    return Table(
        "scenarios",
        "mIoU (%) with corrupted inputs: every modality available, one corrupted at a time",
        [*HEAD, *_columns(keys, titles)],
        rows,
        note=f"{STD_NOTE}; best in bold. Clean = every modality, uncorrupted (the full set's mIoU); "
        "<kind> <level> = mean over the corrupted modalities of the mIoU with that one modality corrupted "
        f"({corrupted}); Avg = mean over every kind, level and corrupted modality. Levels: {units}. "
        "Corruptions are seeded: every run and seed saw the same corrupted inputs.",
        std_columns=_std_columns(keys),
    )


def scenario_long_table(records: list[dict]) -> Table:
    """Machine format of the scenarios: one row per run, kind, level and corrupted modality with
    the mIoU's mean and sample std over seeds and the number of seeds (``scenarios_long.csv``)."""
    means = scenario_means(records)
    grouped = by_run(records)
    rows = []
    for run, entry in means.items():
        for kind, series in entry["kinds"].items():
            levels = scenario_layout(next(r for r in records if r["run"] == run))[kind][0]
            for k, level in enumerate(levels):
                for modality, (mean, std) in series.items():
                    if modality == SCENARIO_MEAN:
                        continue
                    rows.append(
                        {
                            "run": run,
                            "protocol": grouped[run][0]["protocol"]["name"],
                            "kind": kind,
                            "level": level,
                            "modality": modality,
                            "miou": float(mean[k]),
                            "miou_std": float(std[k]),
                            "seeds": entry["seeds"],
                        }
                    )
    return _case_table(
        "scenarios_long",
        "mIoU (%) per run, corruption kind, level and corrupted modality",
        ("level", "modality"),
        "miou",
        rows,
    )


def _case_table(name: str, title: str, keys: Sequence[str], value: str, rows: list[dict]) -> Table:
    """A machine table of one value per run, protocol, kind and the ``keys`` (level, modality),
    with its sample std over seeds and the number of seeds."""
    text = [Column(k, k, "text") for k in ("run", "protocol", "kind", *keys)]
    return Table(
        name,
        title,
        [*text, Column(value, value), Column(f"{value}_std", f"{value}_std"), Column("seeds", "seeds", "int")],
        rows,
    )


def _scale_mean(weights: Sequence[float | None]) -> float:
    """The mean over scales of one modality's mean robustness weights (null -> NaN)."""
    return float(np.mean([num(v) for v in weights]))


def _weights(record: dict, kind: str, modality: str) -> list[list[float | None]]:
    """``modality``'s weights per level (each a list over the scales) with itself corrupted by ``kind``."""
    return record["robustness"]["scenarios"][kind]["modalities"][modality][modality]


def corrupted_weights(records: list[dict]) -> dict[str, dict[str, Any]]:
    """Mean robustness weight (mean over scales, 0..1) of the corrupted modality, over seeds, of the
    runs whose records carry ``robustness.scenarios`` (others, e.g. older files, left out)::

        {run: {"seeds": n, "kinds": {kind: {corrupted modality: (float[1 + L] means, float[1 + L] stds)}}}}

    Position 0 is the modality's weight with every modality clean (``robustness.subsets`` of the
    full set), then one per level of the kind; per seed the mean over scales, then mean ± sample
    std over the seeds that carry the block. Kinds, levels and modalities as :func:`load_metrics`
    checked them against the shared ``scenarios`` layout.
    """
    out: dict[str, dict[str, Any]] = {}
    for run, recs in by_run([r for r in records if "scenarios" in r.get("robustness", {})]).items():
        full = _full_subset(recs[0])
        kinds: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for kind, entry in recs[0]["robustness"]["scenarios"].items():
            kinds[kind] = {}
            for m in entry["modalities"]:
                per_seed = np.array(  # [seeds, 1 + L]: clean, then each level
                    [
                        [_scale_mean(w) for w in (r["robustness"]["subsets"][full][m], *_weights(r, kind, m))]
                        for r in recs
                    ]
                )
                pairs = np.array([stats.mean_std(per_seed[:, k]) for k in range(per_seed.shape[1])])  # [1 + L, 2]
                kinds[kind][m] = (pairs[:, 0], pairs[:, 1])
        out[run] = {"seeds": len(recs), "kinds": kinds}
    return out


def corrupted_weight_table(records: list[dict]) -> Table:
    """Machine format of :func:`corrupted_weights` (``corrupted_weight.csv``): one row per run, kind,
    corrupted modality and level (0 = clean) with the weight's mean and sample std over seeds."""
    grouped = by_run(records)
    rows = []
    for run, entry in corrupted_weights(records).items():
        rec = next(r for r in grouped[run] if "scenarios" in r.get("robustness", {}))
        for kind, series in entry["kinds"].items():
            levels = [0.0, *rec["robustness"]["scenarios"][kind]["levels"]]
            for modality, (mean, std) in series.items():
                for k, level in enumerate(levels):
                    rows.append(
                        {
                            "run": run,
                            "protocol": rec["protocol"]["name"],
                            "kind": kind,
                            "modality": modality,
                            "level": level,
                            "weight": float(mean[k]),
                            "weight_std": float(std[k]),
                            "seeds": entry["seeds"],
                        }
                    )
    return _case_table(
        "corrupted_weight",
        "Mean robustness weight of the corrupted modality per run, corruption kind, modality and level",
        ("modality", "level"),
        "weight",
        rows,
    )


def protocol_table(board: Table, records: list[dict] | None = None) -> Table | None:
    """Method x training protocol: each run's Avg and Last-1 (mean ± std over seeds) from the
    leaderboard's rows, side by side; ``None`` when the runs use one protocol only. With
    ``records``, the note spells out each protocol's definition as the runs recorded it."""
    protocols = list(dict.fromkeys(row["protocol"] for row in board.rows))
    if len(protocols) < 2:
        return None
    by_pair = {(parse_run(row["run"])[0], row["protocol"]): row for row in board.rows}
    rows = []
    for method in dict.fromkeys(parse_run(row["run"])[0] for row in board.rows):
        first = next(row for (m, _), row in by_pair.items() if m == method)
        row = {"method": method, "family": first["family"]}
        for protocol in protocols:
            run = by_pair.get((method, protocol), {})
            for key in ("avg", "last1"):
                column = f"{protocol}_{key}"
                row[column], row[f"{column}_std"] = run.get(key, math.nan), run.get(f"{key}_std", math.nan)
            row[f"{protocol}_last1_subset"] = run.get("last1_subset", "")
        rows.append(row)
    keys = [f"{p}_{k}" for p in protocols for k in ("avg", "last1")]
    titles = {f"{p}_{k}": f"{p} {SUMMARY_TITLES[k]}" for p in protocols for k in ("avg", "last1")}
    return Table(
        "protocols",
        "Avg and Last-1 mIoU (%) of each method under each training protocol",
        [Column("method", "Method", "text"), Column("family", "Family", "text"), *_columns(keys, titles)],
        rows,
        note=f"{STD_NOTE}; best per column in bold; n/a: the method was not run under that protocol. "
        f"Protocols (docs/protocol.md): {_protocol_definitions(protocols, records)}. Last-1 is each run's own "
        "worst subset (<protocol>_last1_subset in the CSV).",
        std_columns=[
            *_std_columns(keys),
            *[Column(f"{p}_last1_subset", f"{p}_last1_subset", "text") for p in protocols],
        ],
    )


PROTOCOL_TEXT = {
    "complete": "every modality in every training sample",
    "uniform": "a uniform non-empty subset per sample",
    "size_uniform": "a subset size uniform in 1..M, then a uniform subset of that size",
    "drop_one": "the full set or one modality missing, uniformly",
}


def _describe_protocol(record: Mapping[str, Any]) -> str:
    """A protocol's :meth:`~benchmark.protocol.Protocol.record` in words."""
    kind = record["kind"]
    if kind == "bernoulli":
        return f"each modality dropped with probability {record['drop_prob']} (empty draws repeated)"
    if kind == "staged":
        first, then = record["first"], record["then"]
        return (
            f"{first['name']} ({_describe_protocol(first)}) for the first {record['fraction']:g} of the steps, "
            f"then {then['name']} ({_describe_protocol(then)})"
        )
    return PROTOCOL_TEXT.get(kind, kind)


def _protocol_definitions(names: Sequence[str], records: list[dict] | None) -> str:
    recorded = {r["protocol"]["name"]: r["protocol"] for r in records or []}
    return "; ".join(f"{name} = {_describe_protocol(recorded.get(name, {'kind': name}))}" for name in names)


def _ablation_difference(
    row: dict[str, Any],
    key: str,
    run: str,
    base: str,
    confusions: Mapping[str, np.ndarray],
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Fill ``row``'s ``d_<key>`` (statistic ``key``: ``avg`` or ``last1``) with ``run`` minus ``base``
    and its paired bootstrap interval (bold when significant) -> the machine table's record of it."""
    result = stats.paired_bootstrap(
        confusions[run], confusions[base], samples=samples, confidence=confidence, seed=seed, statistic=key
    )
    row[f"d_{key}"] = f"{result.diff:+.2f} [{result.low:+.2f}, {result.high:+.2f}]" + (
        " †" if result.significant else ""
    )
    if result.significant:
        row["_bold"].add(f"d_{key}")
    return {
        "protocol": row["protocol"],
        "row": row["row"],
        "run": run,
        "base": base,
        "statistic": key,
        "value": row[key],
        "diff": result.diff,
        "low": result.low,
        "high": result.high,
        "significant": int(result.significant),
    }


def _ablation_tables(
    shown: list[dict[str, Any]], long: list[dict[str, Any]], ablation: Mapping[str, str], samples: int, level: str
) -> Table:
    """The ablation table of the rows ``shown``, with the machine table of the differences ``long``."""
    labels = list(ablation)
    machine = Table(
        "ablation",
        "",
        [
            *[Column(k, k, "text") for k in ("protocol", "row", "run", "base", "statistic")],
            *[Column(k, k) for k in ("value", "diff", "low", "high")],
            Column("significant", "significant", "int"),
        ],
        long,
    )
    columns = [
        Column("protocol", "Protocol", "text"),
        Column("row", "Row", "text"),
        Column("run", "Run", "text"),
        Column("avg", "Avg", std_key="avg_std"),
        Column("last1", "Last-1", std_key="last1_std"),
        Column("d_avg", f"Δ Avg vs {labels[0]}", "text"),
        Column("d_last1", f"Δ Last-1 vs {labels[0]}", "text"),
    ]
    return Table(
        "ablation",
        f"Ablation under each training protocol: {', '.join(f'{k} = {v}' for k, v in ablation.items())}",
        columns,
        shown,
        note=f"Avg, Last-1: {STD_NOTE} (Last-1: each run's own worst subset). Δ: the run minus the {labels[0]} row "
        f"under the same protocol, difference of the means over seeds [{level} paired bootstrap interval, "
        f"{samples} replicates resampling test tiles and seeds]; † and bold: the interval excludes 0. Rows "
        "from report.ablation in params.yaml.",
        machine=machine,
    )


def ablation_table(
    records: list[dict],
    board: Table,
    confusions: Mapping[str, np.ndarray],
    ablation: Mapping[str, str],
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> Table | None:
    """The ablation (``ablation``: row label -> method, the first row the base) under each protocol:
    Avg and Last-1 (mean ± std over seeds) and their differences to the base row's run under the
    same protocol with a paired bootstrap interval (:func:`benchmark.stats.paired_bootstrap`,
    statistic ``avg`` or ``last1``). A protocol appears when its base run and another row's run
    exist; ``None`` when none does. ``confusions``: run -> int64[R, S, N, K, K]."""
    if not ablation:
        return None
    seeds = {run: [r["seed"] for r in recs] for run, recs in by_run(records).items()}
    methods = list(ablation.values())
    runs = {row["run"]: row for row in board.rows}
    shown, long = [], []
    for protocol in dict.fromkeys(row["protocol"] for row in board.rows):
        base = run_name(methods[0], protocol)
        present = [(label, run_name(m, protocol)) for label, m in ablation.items() if run_name(m, protocol) in runs]
        if base not in runs or len(present) < 2:
            continue
        for label, run in present:
            row: dict[str, Any] = {"protocol": protocol, "row": label, "run": run, "_bold": set()}
            for key in ("avg", "last1"):
                row[key], row[f"{key}_std"] = runs[run][key], runs[run][f"{key}_std"]
                if run == base:
                    row[f"d_{key}"] = "(base)"
                    continue
                if seeds[run] != seeds[base]:
                    raise ValueError(
                        f"run {run!r} has seeds {seeds[run]}, {base!r} has {seeds[base]}: cannot pair for the ablation"
                    )
                bootstrap = {"samples": samples, "confidence": confidence, "seed": seed}
                long.append(_ablation_difference(row, key, run, base, confusions, **bootstrap))
            shown.append(row)
    if not shown:
        return None
    return _ablation_tables(shown, long, ablation, samples, f"{100 * confidence:g}%")
