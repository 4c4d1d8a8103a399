"""Leaderboard of one data set: CSV, markdown table and mIoU heatmap from ``metrics.json`` files.

Input: ``results/<dataset>/<method>/seed<k>/metrics.json`` as written by the evaluate stage.
Output (all in ``results/<dataset>/``): ``leaderboard.csv``, ``leaderboard.md``,
``miou_heatmap.png`` and, when some method's metrics carry modality robustness maps (key
``robustness``), ``sgma_robustness.png`` (mean robustness per method, subset, modality and
scale; a stale copy is removed when no method carries them). Everything is computed and
rendered in memory first and only then written (each file atomically), so a failure leaves
the previous report untouched.

CLI: ``python -m benchmark.report --dataset synthetic [--params params.yaml] [--results results]
[--methods a b] [--seeds 0 1]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmark.config import load_params, section
from benchmark.io import atomic_write, atomic_write_text, read_json

SUMMARY_KEYS = ("avg", "top1", "last1")
SUMMARY_TITLES = {"avg": "Avg", "top1": "Top-1", "last1": "Last-1"}
_SEED_DIR = re.compile(r"seed(\d+)")
ROBUSTNESS_FILE = "sgma_robustness.png"
ROBUSTNESS_TOL = 1e-4  # rounding slack on the [0, 1] range of a mean robustness weight


def _is_number(value: object) -> bool:
    """A JSON number (bool excluded) or null (a NaN written by ``atomic_write_json``)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _validate(data: object, path: Path, dataset: str, method: str, seed: int) -> dict:
    """Check one metrics file; ``ValueError`` names the file and the key."""

    def fail(key: str, why: str) -> ValueError:
        return ValueError(f"{path}: key {key!r}: {why}")

    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    types = {
        "dataset": str,
        "method": str,
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
    for key, expected in (("dataset", dataset), ("method", method), ("seed", seed)):
        if data[key] != expected:
            raise fail(key, f"is {data[key]!r} but the path says {expected!r}")
    if not data["subsets"]:
        raise fail("subsets", "empty")
    reserved = {"method", "family", "seeds", *SUMMARY_KEYS}
    for name, scores in data["subsets"].items():
        if name in reserved or name.endswith("_std"):
            raise fail(f"subsets.{name}", "clashes with a leaderboard column name")
        if not isinstance(scores, dict) or "miou" not in scores:
            raise fail(f"subsets.{name}.miou", "missing")
        if not _is_number(scores["miou"]):
            raise fail(f"subsets.{name}.miou", f"expected a number, got {scores['miou']!r}")
    for key in SUMMARY_KEYS:
        if not _is_number(data["summary"].get(key, "missing")):
            raise fail(f"summary.{key}", "missing or not a number")
    if "robustness" in data:
        _validate_robustness(data, fail)
    return data


def _validate_robustness(data: dict, fail: Callable[[str, str], ValueError]) -> None:
    """Check ``data["robustness"]``: ``{"scales": [int...], "subsets": {subset: {modality: [float per scale]}}}``."""
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
            key = f"robustness.subsets.{subset}.{modality}"
            if not isinstance(values, list) or len(values) != len(scales):
                raise fail(key, f"expected a list of {len(scales)} numbers (one per scale), got {values!r}")
            for v in values:
                if not _is_number(v) or (v is not None and not -ROBUSTNESS_TOL <= v <= 1 + ROBUSTNESS_TOL):
                    raise fail(key, f"expected numbers in [0, 1], got {values!r}")


def _num(value: float | None) -> float:
    """A metrics value as float: null (a NaN written by ``atomic_write_json``) -> NaN."""
    return math.nan if value is None else float(value)


def _metric_files(method_dir: Path) -> list[tuple[int, Path]]:
    """``[(seed, path)]`` of ``method_dir/seed<k>/metrics.json``, by seed."""
    found = []
    for path in method_dir.glob("seed*/metrics.json"):
        match = _SEED_DIR.fullmatch(path.parent.name)
        if match is None:
            raise ValueError(f"{path}: folder name must be seed<integer>")
        found.append((int(match.group(1)), path))
    return sorted(found)


def load_metrics(
    results_dir: Path, dataset: str, methods: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> list[dict]:
    """Validated records of ``results_dir/dataset/<method>/seed*/metrics.json``.

    With ``methods``: exactly those, in that order (``FileNotFoundError`` naming the expected
    path for one without a file); without: every method found, sorted by name. Records come
    per method by seed. With ``seeds``: exactly those seeds of each method (results of seeds no
    longer in params.yaml are left out). All files must share the same ``subsets`` keys in order.
    """
    root = Path(results_dir) / dataset
    if methods is None:
        methods = sorted(p.name for p in root.glob("*") if p.is_dir() and _metric_files(p))
        if not methods:
            raise FileNotFoundError(f"{root}: no <method>/seed*/metrics.json found")
    elif len(set(methods)) != len(methods):
        raise ValueError(f"methods listed more than once: {list(methods)}")
    records: list[dict] = []
    for method in methods:
        files = _metric_files(root / method)
        if seeds is not None:
            found = dict(files)
            missing = [s for s in seeds if s not in found]
            if missing:
                raise FileNotFoundError(f"{root / method / f'seed{missing[0]}' / 'metrics.json'}: not found")
            files = [(s, found[s]) for s in sorted(seeds)]
        if not files:
            raise FileNotFoundError(f"{root / method / 'seed*' / 'metrics.json'}: not found")
        for seed, path in files:
            record = _validate(read_json(path), path, dataset, method, seed)
            if records and list(record["subsets"]) != list(records[0]["subsets"]):
                raise ValueError(
                    f"{path}: key 'subsets': {list(record['subsets'])} differs from "
                    f"{list(records[0]['subsets'])} in the other files of {dataset!r}"
                )
            records.append(record)
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for a single value). NaN in -> NaN out."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std


def leaderboard(records: list[dict]) -> list[dict]:
    """One row per method (order of first appearance), values in percent.

    Columns: ``method, family, seeds, <subset>..., [<subset>_std...], avg, top1, last1,
    [avg_std, top1_std, last1_std]``. Each value is the mean over seeds (of the subset mIoU,
    or of each seed's own summary value); ``_std`` is the SAMPLE standard deviation over seeds
    (ddof=1), present only when some method has 2+ seeds (NaN for a 1-seed method).
    """
    if not records:
        return []
    subsets = list(records[0]["subsets"])
    by_method: dict[str, list[dict]] = {}
    for rec in records:
        by_method.setdefault(rec["method"], []).append(rec)
    with_std = any(len(recs) > 1 for recs in by_method.values())

    rows = []
    for method, recs in by_method.items():
        families = sorted({r["family"] for r in recs})
        if len(families) > 1:
            raise ValueError(f"method {method!r}: seeds disagree on its family: {families}")
        stats = {s: _mean_std([_num(r["subsets"][s]["miou"]) for r in recs]) for s in subsets}
        stats |= {k: _mean_std([_num(r["summary"][k]) for r in recs]) for k in SUMMARY_KEYS}
        row: dict = {"method": method, "family": families[0], "seeds": len(recs)}
        row |= {s: stats[s][0] for s in subsets}
        if with_std:
            row |= {f"{s}_std": stats[s][1] for s in subsets}
        row |= {k: stats[k][0] for k in SUMMARY_KEYS}
        if with_std:
            row |= {f"{k}_std": stats[k][1] for k in SUMMARY_KEYS}
        rows.append(row)
    return rows


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f}"


def to_csv(rows: list[dict]) -> str:
    """CSV text: header = column names, floats with 2 decimals, NaN as an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([_fmt(v) if isinstance(v, float) else v for v in row.values()])
    return buf.getvalue()


def to_markdown(rows: list[dict], subsets: Sequence[str]) -> str:
    """GitHub table: ``mean ± std`` when std columns exist; best (rounded) value in bold."""
    columns = [*subsets, *SUMMARY_KEYS]
    header = ["Method", "Family", "Seeds", *subsets, *(SUMMARY_TITLES[k] for k in SUMMARY_KEYS)]
    best = {}
    for col in columns:
        shown = [round(r[col], 2) for r in rows if not math.isnan(r[col])]
        best[col] = max(shown) if shown else None
    lines = ["| " + " | ".join(header) + " |", "|:--|:--|--:|" + "--:|" * len(columns)]
    for row in rows:
        cells = [row["method"], row["family"], str(row["seeds"])]
        for col in columns:
            text = _fmt(row[col]) or "n/a"
            std = row.get(f"{col}_std", math.nan)
            if not math.isnan(std):
                text += f" ± {std:.2f}"
            if not math.isnan(row[col]) and round(row[col], 2) == best[col]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_heatmap(rows: list[dict], subsets: Sequence[str], title: str = "") -> bytes:
    """PNG bytes of a methods x (subsets + Avg) mIoU heatmap annotated with the values (%)."""
    columns = [*subsets, "avg"]
    values = [[row[c] for c in columns] for row in rows]
    finite = [v for line in values for v in line if not math.isnan(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 100.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    width = 2.5 + 0.9 * len(columns) + 0.06 * max(len(s) for s in subsets)
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.5 * len(rows)))
    try:
        cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
        image = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.axvline(len(subsets) - 0.5, color="white", linewidth=3)  # separate the Avg column
        for i, line in enumerate(values):
            for j, v in enumerate(line):
                rgba = cmap((v - lo) / (hi - lo)) if not math.isnan(v) else (1, 1, 1, 1)
                dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                ax.text(
                    j,
                    i,
                    "n/a" if math.isnan(v) else f"{v:.1f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if dark else "black",
                )
        ax.set_xticks(range(len(columns)), [*subsets, "Avg"], rotation=35, ha="right")
        ax.set_yticks(range(len(rows)), [r["method"] for r in rows])
        ax.set_xlabel("available modalities")
        ax.set_title(title or "mIoU (%) per modality subset")
        fig.colorbar(image, ax=ax, label="mIoU (%)", fraction=0.04, pad=0.02)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)


def _robustness_records(records: list[dict]) -> dict[str, list[dict]]:
    """``{method: [records with a "robustness" key]}``, methods in order of first appearance."""
    by_method: dict[str, list[dict]] = {}
    for rec in records:
        if "robustness" in rec:
            by_method.setdefault(rec["method"], []).append(rec)
    return by_method


def robustness_table(records: list[dict]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Mean robustness over seeds: ``{method: {subset: {modality: [mean r_m per scale]}}}``.

    Only records with a ``robustness`` key count; a method without any is left out. Methods
    come in order of first appearance, subsets and modalities in the records' order, values
    in ``[0, 1]`` per scale of ``robustness.scales`` (null -> NaN, which stays NaN in the mean).
    A method's seeds must agree on ``modalities`` and ``robustness.scales`` (``ValueError``).
    """

    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for method, recs in _robustness_records(records).items():
        first = recs[0]
        for rec in recs[1:]:
            for key, a, b in (
                ("modalities", first["modalities"], rec["modalities"]),
                ("robustness.scales", first["robustness"]["scales"], rec["robustness"]["scales"]),
            ):
                if a != b:
                    raise ValueError(
                        f"method {method!r}: key {key!r} is {a!r} in seed {first['seed']} "
                        f"but {b!r} in seed {rec['seed']}"
                    )
        num_scales = len(first["robustness"]["scales"])
        table[method] = {
            subset: {
                m: [
                    statistics.fmean(_num(r["robustness"]["subsets"][subset][m][k]) for r in recs)
                    for k in range(num_scales)
                ]
                for m in first["modalities"]
            }
            for subset in first["robustness"]["subsets"]
        }
    return table


def render_robustness(records: list[dict], title: str = "") -> bytes | None:
    """PNG bytes of the mean modality robustness maps, or ``None`` if no record carries them.

    One row of panels per method with robustness (mean over its seeds, see
    :func:`robustness_table`), one column per modality subset; each panel shows modality (rows)
    x scale (columns, ``1/<stride>``) on a fixed 0..1 viridis scale, values annotated. A
    modality missing from the subset (value exactly 0, name not in ``subset.split("+")``) is
    grey with a dash; a null value is grey with ``n/a``.
    """
    table = robustness_table(records)
    if not table:
        return None
    by_method = _robustness_records(records)
    methods = list(table)
    subsets = list(table[methods[0]])
    num_modalities = max(len(by_method[m][0]["modalities"]) for m in methods)
    num_scales = max(len(by_method[m][0]["robustness"]["scales"]) for m in methods)
    panel_w, panel_h = 0.55 * num_scales + 0.5, 0.32 * num_modalities + 0.75
    fig, axes = plt.subplots(
        len(methods),
        len(subsets),
        figsize=(1.6 + panel_w * len(subsets), 0.7 + panel_h * len(methods)),
        squeeze=False,
        layout="constrained",
    )
    try:
        cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
        image = None
        for i, method in enumerate(methods):
            first = by_method[method][0]
            modalities, scales = first["modalities"], first["robustness"]["scales"]
            for j, subset in enumerate(subsets):
                ax = axes[i][j]
                present = set(subset.split("+"))
                values = table[method][subset]
                missing = [[m not in present and v == 0.0 for v in values[m]] for m in modalities]
                grid = [
                    [math.nan if gone else v for v, gone in zip(values[m], row)] for m, row in zip(modalities, missing)
                ]
                image = ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
                for r, line in enumerate(grid):
                    for c, v in enumerate(line):
                        rgba = cmap(v) if not math.isnan(v) else (1, 1, 1, 1)
                        dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                        text = "–" if missing[r][c] else "n/a" if math.isnan(v) else f"{v:.2f}"
                        ax.text(c, r, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
                ax.set_xticks(range(len(scales)), [f"1/{s}" for s in scales], fontsize=8)
                ax.set_yticks(range(len(modalities)), modalities, fontsize=8)
                if j:
                    ax.tick_params(labelleft=False)
                else:
                    seeds = len(by_method[method])
                    ax.set_ylabel(f"{method}\n({seeds} seed{'s' if seeds > 1 else ''})", fontweight="bold")
                ax.set_title(subset, fontsize=9)
        fig.colorbar(image, ax=axes, label="mean robustness r_m", fraction=0.03, pad=0.01)
        fig.supxlabel("feature scale (1/stride)", fontsize=9)
        fig.suptitle(title or "Mean modality robustness r_m per available-modality subset")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)


def write_report(
    results_dir: Path, dataset: str, methods: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> list[Path]:
    """Write ``leaderboard.csv``, ``leaderboard.md``, ``miou_heatmap.png`` and, when some record
    has robustness maps, ``sgma_robustness.png``; return the paths written (in that order).

    Everything is rendered first; nothing is written if any step fails. Without robustness
    maps a ``sgma_robustness.png`` left by an earlier run is removed.
    """
    records = load_metrics(results_dir, dataset, methods, seeds)
    rows = leaderboard(records)
    subsets = list(records[0]["subsets"])
    csv_text = to_csv(rows)
    md_text = to_markdown(rows, subsets)
    png = render_heatmap(rows, subsets, title=f"{dataset}: mIoU (%) per modality subset")
    robustness_png = render_robustness(records, title=f"{dataset}: mean modality robustness r_m")
    out = Path(results_dir) / dataset
    paths = [
        atomic_write_text(out / "leaderboard.csv", csv_text),
        atomic_write_text(out / "leaderboard.md", md_text),
        atomic_write(out / "miou_heatmap.png", lambda tmp: tmp.write_bytes(png)),
    ]
    if robustness_png is None:
        (out / ROBUSTNESS_FILE).unlink(missing_ok=True)
    else:
        paths.append(atomic_write(out / ROBUSTNESS_FILE, lambda tmp: tmp.write_bytes(robustness_png)))
    return paths


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the markdown leaderboard to stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--methods", nargs="+", default=None, help="default: params' methods, else all found")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: params' seeds, else all found")
    parser.add_argument("--params", type=Path, default=None, help="read methods and seeds from this params.yaml")
    args = parser.parse_args(argv)
    methods, seeds = args.methods, args.seeds
    if args.params is not None:
        params = load_params(args.params)
        methods = methods or section(params, "methods", str(args.params))
        seeds = seeds or section(params, "seeds", str(args.params))
    try:
        paths = write_report(args.results, args.dataset, methods, seeds)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(paths[1].read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
