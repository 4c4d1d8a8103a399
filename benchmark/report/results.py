"""Read and check what the train and evaluate stages wrote for one data set.

``results/runs/<dataset>/<run>/seed<k>/`` (a run is ``<method>-<protocol>``) holds ``metrics.json``
(required; its ``scenarios`` block, the corrupted-input scores, is optional but then present in
every run of the data set), ``image_scores.npz``
(per-image confusion matrices, required for the comparison's bootstrap), ``predictions.npz``
(optional: the qualitative panel) and ``train_log.jsonl`` (optional: the training curves); see
:mod:`benchmark.evaluate` and :mod:`benchmark.train` for their contents. Every error names the
file and the key.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmark.config import EVAL_CONVENTIONS, SCENARIO_KINDS, is_int
from benchmark.errors import DamagedFileError
from benchmark.io import read_json
from benchmark.layout import IMAGE_SCORES_FILE, LOG_FILE, METRICS_FILE, PREDICTIONS_FILE, run_dir
from benchmark.metrics import NOT_SCORED, mean_iou
from benchmark.protocol import enumerate_subsets, parse_run, parse_subset, subset_name, subset_parts

SUMMARY_KEYS = ("avg", "top1", "last1")
ROBUSTNESS_TOL = 1e-4  # rounding slack on the [0, 1] range of a mean robustness weight
MIOU_TOL = 1e-6  # percent: metrics.json's mIoU against the one recomputed from image_scores.npz
SCENARIO_TOL = 1e-4  # percent: rounding slack of the scenarios' clean_miou and avg against what they summarise
SCENARIO_SCORES = ("miou", "mf1", "accuracy")  # per corrupted modality, one value per level (percent)
SCENARIO_UNITS = {  # what a level of each kind measures (axis labels, table note)
    "block_missing": "fraction of pixels zeroed in blocks",
    "pixel_missing": "fraction of pixels zeroed",
    "gaussian": "noise std (channel stds)",
    "salt_pepper": "fraction of pixels",
    "speckle": "speckle variance (1/looks)",
}
_SEED_DIR = re.compile(r"seed(\d+)")


def is_number(value: object) -> bool:
    """A JSON number (bool excluded) or null (a NaN written by ``atomic_write_json``)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def num(value: float | None) -> float:
    """A metrics value as float: null (a NaN written by ``atomic_write_json``) -> NaN."""
    return math.nan if value is None else float(value)


def run_folder(results_dir: Path, dataset: str, run: str, seed: int) -> Path:
    return run_dir(Path(results_dir), dataset, run, seed)


def _validate(data: object, path: Path, dataset: str, run: str, seed: int) -> dict:
    """Check one metrics file; a :class:`~benchmark.errors.DamagedFileError` (``ValueError``) names the
    file and the key."""

    def fail(key: str, why: str) -> ValueError:
        return DamagedFileError(f"{path}: key {key!r}: {why} (rerun its evaluate stage)")

    if not isinstance(data, dict):
        raise DamagedFileError(f"{path}: expected a JSON object (rerun its evaluate stage)")
    types = {
        "dataset": str,
        "run": str,
        "method": str,
        "protocol": dict,
        "convention": str,
        "seed": int,
        "family": str,
        "modalities": list,
        "classes": list,
        "subsets": dict,
        "summary": dict,
    }
    for key, typ in types.items():
        if key not in data:
            raise fail(key, "missing")
        if not isinstance(data[key], typ) or isinstance(data[key], bool):
            raise fail(key, f"expected {typ.__name__}, got {type(data[key]).__name__}")
    for key, expected in (("dataset", dataset), ("run", run), ("seed", seed)):
        if data[key] != expected:
            raise fail(key, f"is {data[key]!r} but the path says {expected!r}")
    try:
        method, protocol = parse_run(run)
    except ValueError as err:
        raise fail("run", str(err)) from None
    if data["method"] != method or data["protocol"].get("name") != protocol:
        raise fail("run", f"{run!r} does not name method {data['method']!r} under protocol {data['protocol']!r}")
    if data["convention"] not in EVAL_CONVENTIONS:
        raise fail("convention", f"{data['convention']!r} is not one of {list(EVAL_CONVENTIONS)}")
    if not data["subsets"]:
        raise fail("subsets", "empty")
    modalities = data["modalities"]
    if not modalities or not all(isinstance(m, str) for m in modalities) or len(set(modalities)) != len(modalities):
        raise fail("modalities", f"expected distinct names, got {modalities!r}")
    for name in data["subsets"]:
        unknown = [m for m in subset_parts(name) if m not in modalities]
        if unknown:
            raise fail(f"subsets.{name}", f"names modality {unknown[0]!r}, not one of {modalities}")
    expected = {frozenset(subset) for subset in enumerate_subsets(modalities)}
    found = {frozenset(subset_parts(name)) for name in data["subsets"]}
    if found != expected or len(data["subsets"]) != len(expected):
        missing = sorted(subset_name(s) for s in enumerate_subsets(modalities) if frozenset(s) not in found)
        raise fail("subsets", f"expected the {len(expected)} non-empty subsets of {modalities}, missing {missing}")
    for name, scores in data["subsets"].items():
        if not isinstance(scores, dict) or "miou" not in scores:
            raise fail(f"subsets.{name}.miou", "missing")
        if not is_number(scores["miou"]):
            raise fail(f"subsets.{name}.miou", f"expected a number, got {scores['miou']!r}")
        iou = scores.get("iou", {})
        if not isinstance(iou, dict) or any(not is_number(v) for v in iou.values()):
            raise fail(f"subsets.{name}.iou", "expected {class: number}")
    for key in SUMMARY_KEYS:
        if not is_number(data["summary"].get(key, "missing")):
            raise fail(f"summary.{key}", "missing or not a number")
    efficiency = data.get("efficiency", {})
    if not isinstance(efficiency, dict):
        raise fail("efficiency", f"expected dict, got {type(efficiency).__name__}")
    for key, value in efficiency.items():
        if key not in ("tile_shape", "train_device", "eval_device") and not is_number(value):
            raise fail(f"efficiency.{key}", f"expected a number, got {value!r}")
    if "scenarios" in data:  # first: robustness.scenarios must follow its layout
        _validate_scenarios(data, fail)
    if "robustness" in data:
        _validate_robustness(data, fail)
    if "tags" in data:
        _validate_tags(data, fail)
    return data


def _validate_tags(data: dict, fail: Callable[[str, str], ValueError]) -> None:
    """Check ``data["tags"]`` (scores over the tiles of each tag, e.g. a condition)::

    {tag: {"tiles": n >= 1, "miou": {subset: number or null} (every subset), "summary": null or
           {"avg", "top1", "last1", ...}}}
    """
    block = data["tags"]
    if not isinstance(block, dict):
        raise fail("tags", f"expected dict, got {type(block).__name__}")
    for tag, entry in block.items():
        where = f"tags.{tag}"
        if not isinstance(entry, dict):
            raise fail(where, f"expected dict, got {type(entry).__name__}")
        tiles = entry.get("tiles")
        if not isinstance(tiles, int) or isinstance(tiles, bool) or tiles < 1:
            raise fail(f"{where}.tiles", f"missing or not an int >= 1: {tiles!r}")
        miou = entry.get("miou")
        if not isinstance(miou, dict) or list(miou) != list(data["subsets"]):
            raise fail(f"{where}.miou", f"expected {{subset: mIoU}} over the subsets {list(data['subsets'])}")
        bad = [k for k, v in miou.items() if not _finite_or_null(v) and not (is_number(v) and math.isnan(v))]
        if bad:
            raise fail(f"{where}.miou.{bad[0]}", f"not a number or null: {miou[bad[0]]!r}")
        summary = entry.get("summary")
        if summary is not None and (
            not isinstance(summary, dict) or not all(is_number(summary.get(k, "missing")) for k in SUMMARY_KEYS)
        ):
            raise fail(f"{where}.summary", f"expected null or numbers for {list(SUMMARY_KEYS)}")


def _finite_or_null(value: object) -> bool:
    return value is None or (is_number(value) and math.isfinite(value))  # type: ignore[arg-type]


def _validate_scenarios(data: dict, fail: Callable[[str, str], ValueError]) -> None:
    """Check ``data["scenarios"]`` (corrupted inputs, every modality available, one corrupted)::

        {"seed": int, "block_size": int, "clean_miou": number (= the full set's mIoU),
         "kinds": {kind: {"levels": [number...],
                          "modalities": {modality: {"miou"|"mf1"|"accuracy": [number or null per level]}}}},
         "avg": number (mean mIoU over every kind, level and corrupted modality)}

    Kinds among ``SCENARIO_KINDS`` in that order, modalities among the run's in its order, scores
    in percent.
    """
    block = data["scenarios"]
    if not isinstance(block, dict):
        raise fail("scenarios", f"expected dict, got {type(block).__name__}")
    for key in ("seed", "block_size"):
        if not is_int(block.get(key)):
            raise fail(f"scenarios.{key}", f"missing or not an integer: {block.get(key, 'missing')!r}")
    if block["block_size"] < 1:
        raise fail("scenarios.block_size", f"must be >= 1 (pixels), got {block['block_size']}")
    kinds = block.get("kinds")
    if not isinstance(kinds, dict):
        raise fail("scenarios.kinds", "missing or not a dict")
    unknown = [k for k in kinds if k not in SCENARIO_KINDS]
    if unknown:
        raise fail(f"scenarios.kinds.{unknown[0]}", f"unknown kind; allowed: {list(SCENARIO_KINDS)}")
    if list(kinds) != [k for k in SCENARIO_KINDS if k in kinds]:
        raise fail("scenarios.kinds", f"kinds {list(kinds)} are not in the order {list(SCENARIO_KINDS)}")
    modalities = data["modalities"]
    mious = []
    for kind, entry in kinds.items():
        where = f"scenarios.kinds.{kind}"
        if not isinstance(entry, dict):
            raise fail(where, f"expected dict, got {type(entry).__name__}")
        levels = entry.get("levels")
        if (
            not isinstance(levels, list)
            or not levels
            or not all(is_number(v) and v is not None and math.isfinite(v) and v > 0 for v in levels)
            or len(set(levels)) != len(levels)
        ):
            raise fail(f"{where}.levels", f"expected a non-empty list of distinct numbers > 0, got {levels!r}")
        per_modality = entry.get("modalities")
        if not isinstance(per_modality, dict) or not per_modality:
            raise fail(f"{where}.modalities", "missing or not a non-empty dict")
        stray = [m for m in per_modality if m not in modalities]
        if stray:
            raise fail(f"{where}.modalities.{stray[0]}", f"not one of the run's modalities {modalities}")
        if list(per_modality) != [m for m in modalities if m in per_modality]:
            raise fail(f"{where}.modalities", f"{list(per_modality)} are not in the run's order {modalities}")
        for modality, scores in per_modality.items():
            if not isinstance(scores, dict):
                raise fail(f"{where}.modalities.{modality}", f"expected dict, got {type(scores).__name__}")
            for score in SCENARIO_SCORES:
                key = f"{where}.modalities.{modality}.{score}"
                values = scores.get(score)
                if not isinstance(values, list) or len(values) != len(levels):
                    raise fail(key, f"expected a list of {len(levels)} numbers (one per level), got {values!r}")
                if not all(
                    _finite_or_null(v) and (v is None or -SCENARIO_TOL <= v <= 100 + SCENARIO_TOL) for v in values
                ):
                    raise fail(key, f"expected finite numbers in [0, 100] (percent) or null, got {values!r}")
            mious += [num(v) for v in scores["miou"]]
    full = next(name for name in data["subsets"] if set(parse_subset(name, modalities)) == set(modalities))
    for key, expected, what in (
        ("clean_miou", num(data["subsets"][full]["miou"]), f"subsets.{full}.miou"),
        ("avg", float(np.mean(mious)) if mious else math.nan, "the mean mIoU over every kind, level and modality"),
    ):
        value = block.get(key, "missing")
        if not _finite_or_null(value):
            raise fail(f"scenarios.{key}", f"missing or not a finite number or null: {value!r}")
        # a NaN among the parts (a null score) may be left out of the mean or spread: checked only when finite
        if math.isfinite(expected) and not (value is not None and abs(value - expected) <= SCENARIO_TOL):
            raise fail(f"scenarios.{key}", f"is {value!r}, {what} is {expected:.6f}")


def scenario_layout(record: dict) -> dict[str, tuple[list[float], list[str]]]:
    """``{kind: (levels, corrupted modalities)}`` of a validated record (empty without scenarios)."""
    kinds = record.get("scenarios", {}).get("kinds", {})
    return {kind: (list(entry["levels"]), list(entry["modalities"])) for kind, entry in kinds.items()}


def _scenario_difference(record: dict, other: dict) -> tuple[str, object, object] | None:
    """``(key, this, other)`` of the first way ``record``'s scenarios differ in layout from ``other``'s."""
    if ("scenarios" in record) != ("scenarios" in other):
        return (
            "scenarios",
            "present" if "scenarios" in record else "absent",
            ("present" if "scenarios" in other else "absent"),
        )
    if "scenarios" not in record:
        return None
    for key in ("seed", "block_size"):
        if record["scenarios"][key] != other["scenarios"][key]:
            return f"scenarios.{key}", record["scenarios"][key], other["scenarios"][key]
    mine, theirs = scenario_layout(record), scenario_layout(other)
    if list(mine) != list(theirs):
        return "scenarios.kinds", list(mine), list(theirs)
    for kind, (levels, modalities) in mine.items():
        if levels != theirs[kind][0]:
            return f"scenarios.kinds.{kind}.levels", levels, theirs[kind][0]
        if modalities != theirs[kind][1]:
            return f"scenarios.kinds.{kind}.modalities", modalities, theirs[kind][1]
    return None


def _weights_ok(values: object, count: int) -> bool:
    """``values`` is a list of ``count`` mean robustness weights: numbers in [0, 1] (or null)."""
    return (
        isinstance(values, list)
        and len(values) == count
        and all(is_number(v) and (v is None or -ROBUSTNESS_TOL <= v <= 1 + ROBUSTNESS_TOL) for v in values)
    )


def _validate_robustness(data: dict, fail: Callable[[str, str], ValueError]) -> None:
    """Check ``data["robustness"]``: ``{"scales": [int...], "subsets": {subset: {modality: [float per scale]}},
    "scenarios"?: ...}`` (:func:`_validate_robustness_scenarios`)."""
    rob = data["robustness"]
    if not isinstance(rob, dict):
        raise fail("robustness", f"expected dict, got {type(rob).__name__}")
    scales = rob.get("scales")
    if not isinstance(scales, list) or not scales:
        raise fail("robustness.scales", "missing or not a non-empty list")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in scales):
        raise fail("robustness.scales", f"expected positive integers (strides in pixels), got {scales!r}")
    subsets = rob.get("subsets")
    if not isinstance(subsets, dict):
        raise fail("robustness.subsets", "missing or not a dict")
    if list(subsets) != list(data["subsets"]):
        raise fail("robustness.subsets", f"has subsets {list(subsets)}, expected {list(data['subsets'])}")
    modalities = data["modalities"]
    for subset, per_modality in subsets.items():
        if not isinstance(per_modality, dict) or set(per_modality) != set(modalities):
            found = list(per_modality) if isinstance(per_modality, dict) else per_modality
            raise fail(f"robustness.subsets.{subset}", f"has modalities {found!r}, expected {modalities}")
        for modality, values in per_modality.items():
            if not _weights_ok(values, len(scales)):
                key = f"robustness.subsets.{subset}.{modality}"
                raise fail(key, f"expected a list of {len(scales)} numbers in [0, 1] (one per scale), got {values!r}")
    if "scenarios" in rob:
        _validate_robustness_scenarios(data, fail)


def _validate_robustness_scenarios(data: dict, fail: Callable[[str, str], ValueError]) -> None:
    """Check ``data["robustness"]["scenarios"]``, the mean weights under corrupted inputs::

        {kind: {"levels": [...], "modalities": {corrupted: {modality: [[float per scale] per level]}}}}

    Kinds, levels and corrupted modalities exactly those of ``data["scenarios"]["kinds"]`` (in
    order), every modality of the run under each corrupted one."""
    block, where = data["robustness"]["scenarios"], "robustness.scenarios"
    if "scenarios" not in data:
        raise fail(where, "present, but the record has no 'scenarios' block")
    layout = scenario_layout(data)
    if not isinstance(block, dict) or list(block) != list(layout):
        found = list(block) if isinstance(block, dict) else block
        raise fail(where, f"has kinds {found!r}, scenarios.kinds has {list(layout)}")
    count, modalities = len(data["robustness"]["scales"]), data["modalities"]
    for kind, (levels, corrupted) in layout.items():
        entry = block[kind]
        if not isinstance(entry, dict) or entry.get("levels") != levels:
            raise fail(f"{where}.{kind}.levels", f"expected the levels of scenarios.kinds.{kind}: {levels}")
        per_modality = entry.get("modalities")
        if not isinstance(per_modality, dict) or list(per_modality) != corrupted:
            raise fail(f"{where}.{kind}.modalities", f"expected the corrupted modalities {corrupted}")
        for name, weights in per_modality.items():
            key = f"{where}.{kind}.modalities.{name}"
            if not isinstance(weights, dict) or set(weights) != set(modalities):
                raise fail(key, f"expected one entry per modality {modalities}")
            for modality, values in weights.items():
                if (
                    not isinstance(values, list)
                    or len(values) != len(levels)
                    or not all(_weights_ok(v, count) for v in values)
                ):
                    raise fail(
                        f"{key}.{modality}",
                        f"expected {len(levels)} lists (one per level) of {count} numbers in [0, 1], got {values!r}",
                    )


def _metric_files(method_dir: Path) -> list[tuple[int, Path]]:
    """``[(seed, path)]`` of ``method_dir/seed<k>/metrics.json``, by seed."""
    found = []
    for path in method_dir.glob(f"seed*/{METRICS_FILE}"):
        match = _SEED_DIR.fullmatch(path.parent.name)
        if match is None:
            raise ValueError(f"{path}: folder name must be seed<integer>")
        found.append((int(match.group(1)), path))
    return sorted(found)


def load_metrics(
    results_dir: Path, dataset: str, runs: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> list[dict]:
    """Validated records of ``results_dir/dataset/<run>/seed*/metrics.json``.

    With ``runs``: exactly those, in that order (``FileNotFoundError`` naming the expected
    path for one without a file); without: every run found, sorted by name (a folder whose name is not
    ``<method>-<protocol>``, such as a method folder of the layout before protocols, is no run). Records come
    per run by seed. With ``seeds``: exactly those seeds of each run (results of seeds no
    longer in params.yaml are left out). All files must share the same ``subsets`` keys in
    order, the same ``modalities``, ``classes`` and evaluation ``convention``, and either all or
    none a ``scenarios`` block with the same seed, block size, kinds, levels and corrupted modalities.
    """
    root = Path(results_dir) / dataset
    if runs is None:
        runs = sorted(p.name for p in root.glob("*") if p.is_dir() and _is_run_name(p.name) and _metric_files(p))
        if not runs:
            raise FileNotFoundError(f"{root}: no <run>/seed*/{METRICS_FILE} found")
    elif len(set(runs)) != len(runs):
        raise ValueError(f"runs listed more than once: {list(runs)}")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds listed more than once: {list(seeds)}")
    records: list[dict] = []
    for run in runs:
        files = _metric_files(root / run)
        if seeds is not None:
            found = dict(files)
            missing = [s for s in seeds if s not in found]
            if missing:
                raise FileNotFoundError(
                    f"{run_folder(results_dir, dataset, run, missing[0]) / METRICS_FILE}: not found"
                )
            files = [(s, found[s]) for s in sorted(seeds)]
        if not files:
            raise FileNotFoundError(f"{root / run / 'seed*' / METRICS_FILE}: not found")
        for seed, path in files:
            record = _validate(read_json(path), path, dataset, run, seed)
            same_run = [r for r in records if r["run"] == run]
            if same_run and record["protocol"] != same_run[0]["protocol"]:
                raise ValueError(
                    f"{path}: key 'protocol': {record['protocol']} here, {same_run[0]['protocol']} in seed "
                    f"{same_run[0]['seed']} of the same run (the protocol was redefined: rerun its train and "
                    "evaluate stages)"
                )
            if records:
                if record["convention"] != records[0]["convention"]:
                    raise ValueError(
                        f"{path}: key 'convention': {record['convention']!r} here, {records[0]['convention']!r} in "
                        f"the other files of {dataset!r} (evaluate every run of a data set the same way)"
                    )
                for key in ("subsets", "modalities", "classes"):
                    if list(record[key]) != list(records[0][key]):
                        raise ValueError(
                            f"{path}: key {key!r}: {list(record[key])} differs from "
                            f"{list(records[0][key])} in the other files of {dataset!r}"
                        )
                difference = _scenario_difference(record, records[0])
                if difference is not None:
                    key, mine, theirs = difference
                    raise ValueError(
                        f"{path}: key {key!r}: {mine} here, {theirs} in the other files of {dataset!r} "
                        "(evaluate every run of a data set with the same scenarios)"
                    )
            records.append(record)
    return records


def _is_run_name(name: str) -> bool:
    try:
        parse_run(name)
    except ValueError:
        return False
    return True


def by_run(records: Sequence[dict]) -> dict[str, list[dict]]:
    """``{run: [records by seed]}`` in order of first appearance."""
    grouped: dict[str, list[dict]] = {}
    for rec in records:
        grouped.setdefault(rec["run"], []).append(rec)
    return grouped


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (written by the evaluate stage)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # truncated or damaged
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None


def load_confusion(results_dir: Path, record: dict) -> np.ndarray:
    """``int64[S, N, K, K]`` per-image confusion matrices of one run, checked against its record:
    same subsets and classes in order, and the mIoU of each subset's summed matrix equal to the
    record's (so the bootstrap resamples exactly what the leaderboard reports)."""
    path = run_folder(results_dir, record["dataset"], record["run"], record["seed"]) / IMAGE_SCORES_FILE
    data = _load_npz(path)
    for key in ("subsets", "classes", "confusion"):
        if key not in data:
            raise ValueError(f"{path}: key {key!r} missing")
    for key in ("subsets", "classes"):
        if data[key].tolist() != list(record[key]):
            raise ValueError(f"{path}: key {key!r} is {data[key].tolist()}, metrics.json says {list(record[key])}")
    confusion = data["confusion"]
    k = len(record["classes"])
    if confusion.ndim != 4 or confusion.shape[0] != len(record["subsets"]) or confusion.shape[2:] != (k, k):
        raise ValueError(f"{path}: key 'confusion' has shape {confusion.shape}, expected [S, N, {k}, {k}]")
    if not np.issubdtype(confusion.dtype, np.integer) or (confusion < 0).any():
        raise ValueError(f"{path}: key 'confusion' must hold non-negative integer counts")
    for i, (subset, scores) in enumerate(record["subsets"].items()):
        expected, found = num(scores["miou"]), float(mean_iou(confusion[i].sum(axis=0)))
        if not (math.isnan(expected) and math.isnan(found)) and not abs(expected - found) <= MIOU_TOL:
            raise ValueError(
                f"{path}: subset {subset!r}: mIoU {found:.6f} from the image scores, {expected:.6f} in metrics.json"
            )
    return confusion.astype(np.int64, copy=False)


def load_predictions(results_dir: Path, record: dict) -> dict[str, np.ndarray] | None:
    """The arrays of a run's ``predictions.npz`` (checked: subsets match, ``pred`` is
    ``[S, n, H, W]``), or ``None`` when the file is absent or holds no tile."""
    path = run_folder(results_dir, record["dataset"], record["run"], record["seed"]) / PREDICTIONS_FILE
    if not path.exists():
        return None
    data = _load_npz(path)
    if "indices" not in data or "subsets" not in data:
        raise ValueError(f"{path}: keys 'indices' and 'subsets' are required")
    if data["subsets"].tolist() != list(record["subsets"]):
        raise ValueError(f"{path}: key 'subsets' is {data['subsets'].tolist()}, expected {list(record['subsets'])}")
    if len(data["indices"]) == 0:
        return None
    pred = data.get("pred")
    if pred is None or pred.ndim != 4 or pred.shape[:2] != (len(record["subsets"]), len(data["indices"])):
        raise ValueError(f"{path}: key 'pred' must be [S, n, H, W] for {len(data['indices'])} tile(s)")
    if not np.issubdtype(pred.dtype, np.integer) or int(pred.min(initial=0)) < 0:
        raise ValueError(f"{path}: key 'pred' must hold class indices >= 0, got dtype {pred.dtype}")
    not_applicable = set(record.get("not_applicable", ()))
    for subset, cells in zip(record["subsets"], pred):
        if subset in not_applicable:
            if (cells != NOT_SCORED).any():
                raise ValueError(
                    f"{path}: key 'pred' of subset {subset!r}, not applicable, must hold only {NOT_SCORED}"
                )
        elif int(cells.max(initial=0)) >= len(record["classes"]):
            raise ValueError(
                f"{path}: key 'pred' holds class {int(cells.max())} on subset {subset!r}, "
                f"only {len(record['classes'])} classes"
            )
    return data


def load_train_log(results_dir: Path, record: dict) -> dict[str, np.ndarray] | None:
    """``{"step", "loss", "images_per_s"}`` arrays of a run's ``train_log.jsonl`` (one entry per
    line), or ``None`` when the file is absent or holds no step (a fitted floor's one ``fit`` line)."""
    path = run_folder(results_dir, record["dataset"], record["run"], record["seed"]) / LOG_FILE
    if not path.exists():
        return None
    columns: dict[str, list[float]] = {"step": [], "loss": [], "images_per_s": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
            if "fit" in entry:  # a method fitted in one call: no steps
                continue
            for key, values in columns.items():
                values.append(float(entry[key]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: line {number}: not a step record with step, loss, images_per_s ({err})"
            ) from None
    if not columns["step"]:
        return None
    return {key: np.asarray(values) for key, values in columns.items()}
