"""Build and write the whole report: per data set tables and plots, the cross-data-set
leaderboard, ``summary.json`` (DVC metrics) and ``report.html``.

Everything is computed and rendered in memory first, then written (each file atomically; each
data set's folder of figures per format is replaced as a whole), so a failure leaves the previous
report untouched. It reads the runs under ``results/runs/`` and writes, for the report folder
``results/report/`` (:mod:`benchmark.layout`) and each data set ``<d>``::

    <d>/{leaderboard,fragility,per_class,efficiency,comparison}.{csv,md,tex}
    <d>/{protocols,ablation}.{csv,md,tex}  # with runs under 2+ protocols / the report.ablation rows
    <d>/runs.csv                # the long table of runs (benchmark.report.runs.load_runs)
    <d>/scenarios.{csv,md,tex}  # corrupted inputs, when the runs hold a "scenarios" block
    <d>/scenarios_long.csv      # the same per run, kind, level and corrupted modality
    <d>/corrupted_weight.csv    # the corrupted modality's robustness weight, with robustness.scenarios
    png/<d>/<figure>.png        # every figure, as PNG (dvc plots show) and as SVG
    svg/<d>/<figure>.svg
    leaderboard.{csv,md,tex}    # every data set side by side
    summary.json                # Avg, Top-1, Last-1, E_p (scenario_avg) per data set and run
    report.html                 # one self-contained page with all of the above
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark import stats
from benchmark.config import ReportConfig
from benchmark.data.prepared import PreparedDataset
from benchmark.data.source import DatasetSource, get_dataset
from benchmark.io import atomic_write_dir, atomic_write_json, atomic_write_text, remove_stale_temps
from benchmark.layout import (
    HTML_FILE,
    LEADERBOARD,
    PREDICTIONS_FILE,
    PREPARED_DIR,
    REPORT_DIR,
    RUNS_FILE,
    SUMMARY_FILE,
    figure_dir,
)
from benchmark.protocol import parse_run, subset_name, subset_parts
from benchmark.report import html, plots
from benchmark.report.leaderboard import (
    SUMMARY_TITLES,
    ablation_table,
    avg_ranks,
    comparison_table,
    corrupted_weight_table,
    corrupted_weights,
    curves_table,
    efficiency_table,
    expected_key,
    floor_gap,
    fragility_table,
    leaderboard_table,
    per_class_table,
    protocol_table,
    robustness_means,
    scale_note,
    scenario_long_table,
    scenario_means,
    scenario_table,
    size_curves,
    tag_table,
    with_ranks,
)
from benchmark.report.results import (
    SCENARIO_UNITS,
    SUMMARY_KEYS,
    by_run,
    load_confusion,
    load_metrics,
    load_predictions,
    load_train_log,
    run_folder,
    scenario_layout,
)
from benchmark.report.runs import runs_frame
from benchmark.report.tables import Column, Table, renderings, to_csv, to_markdown

# written only when they apply
OPTIONAL_TABLES = ("protocols", "ablation", "scenarios", "scenarios_long", "corrupted_weight")
SCENARIO_SUMMARY_KEY = "scenario_avg"  # summary.json: mean over seeds of each run's scenarios.avg

SCENARIO_TEXT = (
    "Every modality is available and one at a time is corrupted: blocks or single pixels zeroed, additive "
    "Gaussian noise, salt-and-pepper noise, or multiplicative speckle (SAR-like modalities only), at each "
    "level set in params.yaml (scenarios). Masks and noise are seeded, so every run and seed saw the same "
    "inputs. Per run and kind the columns give the mean over the corrupted modalities; "
    "scenarios_long.csv has each modality."
)


@dataclass
class Plot:
    """A rendered figure: ``name`` (file stem), ``caption``, ``files`` = {"png": bytes, "svg": bytes}."""

    name: str
    caption: str
    files: dict[str, bytes]


@dataclass
class ScenarioReport:
    """The corrupted-input part of a data set's report: the wide ``table`` (scenarios.*), its
    ``long`` machine form (scenarios_long.csv) and the ``plot`` (figure scenarios); for runs whose
    records carry ``robustness.scenarios``, the corrupted modality's weight as ``weights``
    (figure corrupted_weight) and ``weights_long`` (corrupted_weight.csv), else ``None``."""

    table: Table
    long: Table
    plot: Plot
    weights: Plot | None = None
    weights_long: Table | None = None

    @property
    def plots(self) -> list[Plot]:
        return [self.plot, *([self.weights] if self.weights is not None else [])]

    @property
    def long_tables(self) -> list[Table]:
        """The CSV-only tables."""
        return [self.long, *([self.weights_long] if self.weights_long is not None else [])]


@dataclass
class DatasetReport:
    """Everything the report holds for one data set."""

    dataset: str
    tables: list[Table]
    plots: list[Plot]
    summary: dict[str, dict[str, float]]  # run -> {"avg", "top1", "last1", "expected_p...", "scenario_avg"?}
    notes: list[str] = field(default_factory=list)  # what could not be drawn and why
    scenarios: ScenarioReport | None = None  # None: the runs hold no "scenarios" block
    runs: pd.DataFrame | None = None  # the long table of runs (runs.csv)
    floor_gap: str | None = None  # the best deep run against the best floor (leaderboard.floor_gap)
    ranks: dict[str, int] | None = None  # run -> rank by Avg with ties (leaderboard.avg_ranks); None: strict
    scale: str = ""  # the training scale and whether the runs are still improving (leaderboard.scale_note)


def _matrix(rows: list[dict], keys: Sequence[str], suffix: str = "") -> np.ndarray:
    return np.array([[float(r.get(k + suffix, math.nan)) for k in keys] for r in rows], dtype=np.float64)


def _plot(name: str, caption: str, figure: Any) -> Plot:
    return Plot(name, caption, plots.figure_bytes(figure))


def _source(dataset: str) -> type[DatasetSource]:
    """The registered data set's class (its palette and display bands); the base class, whose
    defaults say "none", for a data set the registry does not know."""
    try:
        return get_dataset(dataset)
    except KeyError:
        return DatasetSource


def _palette(dataset: str, num_classes: int) -> list[str]:
    palette = _source(dataset).palette
    if not palette or len(palette) < num_classes:
        palette = plots.DEFAULT_CLASS_PALETTE
    return list(palette[:num_classes])


@dataclass
class DatasetInputs:
    """Everything one data set's report reads, loaded and checked before any computation.

    ``confusions``: run -> int64[R, S, N, K, K] (seeds in the records' order); ``logs``: run
    -> seed -> training-log columns; ``predictions``: run -> its first seed's ``predictions.npz``
    arrays; ``test``: the prepared test split for the panels (``None`` when not needed or absent).
    """

    dataset: str
    records: list[dict]
    confusions: dict[str, np.ndarray]
    logs: dict[str, dict[int, dict[str, np.ndarray]]]
    predictions: dict[str, dict[str, np.ndarray]]
    test: PreparedDataset | None
    notes: list[str] = field(default_factory=list)


def _check_panel_tiles(inputs: DatasetInputs, results_dir: Path, root: Path) -> None:
    """Each kept prediction, scored against the prepared label, must give the confusion matrix the
    evaluation recorded for that tile: predictions and ground truth belong to the same data."""
    test, k = inputs.test, len(inputs.records[0]["classes"])
    assert test is not None
    for run, arrays in inputs.predictions.items():
        for position, index in enumerate(arrays["indices"].tolist()):
            if index >= len(test):
                raise ValueError(f"{root}: test tile {index}, kept by the evaluation of {run!r}, does not exist")
            label = test[index][1].numpy()
            valid = label != test.ignore_index
            not_applicable = set(by_run(inputs.records)[run][0].get("not_applicable", ()))
            for s, pred in enumerate(arrays["pred"][:, position]):
                if arrays["subsets"][s] in not_applicable:
                    continue
                counts = np.bincount(label[valid] * k + pred[valid].astype(np.int64), minlength=k * k)
                if not np.array_equal(counts.reshape(k, k), inputs.confusions[run][0, s, index]):
                    record = by_run(inputs.records)[run][0]
                    path = run_folder(results_dir, inputs.dataset, run, record["seed"]) / PREDICTIONS_FILE
                    raise ValueError(
                        f"{path}: tile {index} does not score as evaluated against {root}/test "
                        "(was the data prepared again since? rerun the evaluate stage)"
                    )


def load_inputs(
    results_dir: Path,
    dataset: str,
    runs: Sequence[str] | None,
    seeds: Sequence[int] | None,
    config: ReportConfig,
    prepared_root: Path = PREPARED_DIR,
) -> DatasetInputs:
    """Read and check every input of one data set's report (errors name the file and key)."""
    records = load_metrics(results_dir, dataset, runs, seeds)
    grouped = by_run(records)
    if config.reference not in grouped:
        raise ValueError(f"report.reference: {config.reference!r} is not among the runs {list(grouped)}")
    scales = {m: recs[0]["robustness"]["scales"] for m, recs in grouped.items() if "robustness" in recs[0]}
    if len({tuple(v) for v in scales.values()}) > 1:
        raise ValueError(f"{dataset}: runs report robustness at different scales: {scales}")
    confusions = {m: np.stack([load_confusion(results_dir, r) for r in recs]) for m, recs in grouped.items()}
    logs = {
        m: {r["seed"]: log for r in recs if (log := load_train_log(results_dir, r)) is not None}
        for m, recs in grouped.items()
    }
    logs = {m: v for m, v in logs.items() if v}
    predictions = {m: p for m, recs in grouped.items() if (p := load_predictions(results_dir, recs[0])) is not None}
    inputs = DatasetInputs(dataset, records, confusions, logs, predictions, None)
    if not logs:
        inputs.notes.append("No train_log.jsonl found: no training curves.")
    if not predictions:
        inputs.notes.append("No predictions.npz with kept tiles (evaluate.sample_tiles: 0?): no qualitative panel.")
        return inputs
    indices = next(iter(predictions.values()))["indices"].tolist()
    differ = [m for m, p in predictions.items() if p["indices"].tolist() != indices]
    if differ:
        raise ValueError(f"{dataset}: runs {differ} kept other test tiles than {indices}; rerun their evaluate stage")
    root = prepared_root / dataset
    try:
        inputs.test = PreparedDataset(root, "test")
    except (FileNotFoundError, ValueError) as err:
        inputs.notes.append(f"Prepared test data not readable ({err}): no qualitative panel.")
        return inputs
    _check_panel_tiles(inputs, results_dir, root)
    return inputs


def _qualitative(inputs: DatasetInputs) -> list[Plot]:
    """One panel per kept test tile (first seed of each run) and robustness maps of the first tile."""
    if inputs.test is None:
        return []
    test, dataset, predictions = inputs.test, inputs.dataset, inputs.predictions
    subsets = list(inputs.records[0]["subsets"])
    classes = list(inputs.records[0]["classes"])
    palette = _palette(dataset, len(classes))
    seed = inputs.records[0]["seed"]
    indices = next(iter(predictions.values()))["indices"].tolist()
    out = []
    for position, index in enumerate(indices):
        figure = plots.qualitative_panel(
            test.display(index, _source(dataset).display_bands),
            test[index][1].numpy(),
            {m: p["pred"][:, position] for m, p in predictions.items()},
            subsets,
            classes,
            palette,
            test.ignore_index,
            f"{dataset}: test tile {index}, prediction per run (rows) and available modalities (columns)",
        )
        caption = f"Test tile {index}: inputs, ground truth and every run's prediction on every subset (seed {seed})."
        out.append(_plot(f"qualitative_tile{index}", caption, figure))
    index = indices[0]
    for run, p in predictions.items():
        scales = p.get("scales")
        if scales is None:
            continue
        maps = {int(s): p[f"robustness_{int(s)}"][:, 0].astype(np.float64) for s in scales}
        figure = plots.robustness_maps(
            maps, subsets, p["modalities"].tolist(), f"{dataset}: {run} robustness maps r_m, test tile {index}"
        )
        out.append(
            _plot(
                f"robustness_maps_{run}_tile{index}",
                f"{run}: per-pixel modality robustness weights on test tile {index}, per subset (rows) "
                "and feature scale (columns).",
                figure,
            )
        )
    return out


def build_dataset(inputs: DatasetInputs, config: ReportConfig) -> DatasetReport:
    """One data set's tables and plots from its checked inputs (nothing is written)."""
    records, dataset = inputs.records, inputs.dataset
    subsets = list(records[0]["subsets"])
    notes = list(inputs.notes)
    board, ranks, tables, protocols, scale = _tables(inputs, config, notes)
    figures = _subset_figures(board, subsets, dataset)
    if protocols is not None:
        figures.append(_protocol_plot(protocols, dataset))
    figures.append(_fragility_figure(records, board, subsets, dataset))
    figures += _run_figures(inputs) + _qualitative(inputs)
    summary, scenarios = _summary(board, records, config.failure_probs, notes)
    gap = floor_gap(board, subset_name(records[0]["modalities"]))
    return DatasetReport(dataset, tables, figures, summary, notes, scenarios, runs_frame(records), gap, ranks, scale)


def _tables(
    inputs: DatasetInputs, config: ReportConfig, notes: list[str]
) -> tuple[Table, dict[str, Any], list[Table], Table | None, str | None]:
    """The leaderboard (with its ranks), its ranks, every table in report order, the protocol table
    (or None) and the scale note (or None); a note in ``notes`` when the ablation table cannot be made."""
    records, confusions = inputs.records, inputs.confusions
    bootstrap = {"samples": config.bootstrap_samples, "confidence": config.confidence, "seed": config.bootstrap_seed}
    board = leaderboard_table(records, config.failure_probs)
    ranks = avg_ranks(board, records, confusions, **bootstrap)
    board = with_ranks(board, ranks)
    curves = curves_table(inputs.logs)
    scale = scale_note(records, curves)
    if scale:
        board.note += " " + scale
    tables = [
        board,
        fragility_table(records),
        per_class_table(records),
        efficiency_table(records),
        comparison_table(records, confusions, config.reference, **bootstrap),
    ]
    protocols = protocol_table(board, records)
    ablation = ablation_table(records, board, confusions, config.ablation, **bootstrap)
    tables += [t for t in (protocols, ablation, curves, tag_table(records)) if t is not None]
    if config.ablation and ablation is None:
        notes.append(
            f"No ablation table: no protocol has the run of {next(iter(config.ablation.values()))!r} (the first row "
            "of report.ablation) and of another row's method."
        )
    return board, ranks, tables, protocols, scale


def _subset_figures(board: Table, subsets: list[str], dataset: str) -> list[Plot]:
    """mIoU per run and subset: the heatmap and the bars (mean over seeds, std as error bars)."""
    names = [r["run"] for r in board.rows]
    columns, titles = [*subsets, "avg"], [*subsets, "Avg"]
    title = f"{dataset}: mIoU (%) per subset"
    return [
        _plot(
            "miou_heatmap",
            "mIoU (%) per run and available-modality subset (mean over seeds).",
            plots.miou_heatmap(names, titles, _matrix(board.rows, columns), title),
        ),
        _plot(
            "miou_bars",
            "mIoU (%) per subset; error bars: sample std over seeds.",
            plots.grouped_bars(
                names, titles, _matrix(board.rows, columns), _matrix(board.rows, columns, "_std"), title
            ),
        ),
    ]


def _fragility_figure(records: list[dict], board: Table, subsets: list[str], dataset: str) -> Plot:
    """Mean mIoU by the number of available modalities, each subset a dot."""
    names = [r["run"] for r in board.rows]
    curves = size_curves(records)
    sizes = sorted({k for c in curves.values() for k in c})
    points = {m: [(len(subset_parts(s)), row[s]) for s in subsets] for m, row in zip(names, board.rows)}
    return _plot(
        "fragility",
        "Mean mIoU over the subsets with k available modalities (error bars: std over seeds); dots: each subset.",
        plots.fragility_plot(
            names,
            sizes,
            np.array([[curves[m][k][0] for k in sizes] for m in names]),
            np.array([[curves[m][k][1] for k in sizes] for m in names]),
            f"{dataset}: mIoU by number of available modalities",
            points=points,
        ),
    )


def _run_figures(inputs: DatasetInputs) -> list[Plot]:
    """The training curves (when there are step logs) and the mean robustness weights (when a
    method reports them)."""
    records, dataset, figures = inputs.records, inputs.dataset, []
    if inputs.logs:
        figures.append(
            _plot(
                "training_curves",
                "Training loss (each method's whole objective: its terms differ between methods, so compare shapes, "
                "not levels) and model throughput (images/s, data loading excluded) per step; faint: each seed.",
                plots.training_curves(inputs.logs, f"{dataset}: training curves"),
            )
        )
    means = robustness_means(records)
    if means:
        scales = next(r["robustness"]["scales"] for r in records if "robustness" in r)
        figures.append(
            _plot(
                "robustness_means",
                "Mean modality robustness weight r_m over the test split, per subset, modality and feature scale.",
                plots.robustness_means(means, scales, f"{dataset}: mean modality robustness r_m"),
            )
        )
    return figures


def _summary(
    board: Table, records: list[dict], failure_probs: Sequence[float], notes: list[str]
) -> tuple[dict[str, dict[str, Any]], ScenarioReport | None]:
    """summary.json's entries of this data set (per run: SUMMARY_KEYS, each E_p and, with scenarios,
    their Avg) and the scenario report (None, with a note in ``notes``, without scenarios)."""
    keys = [*SUMMARY_KEYS, *(expected_key(p) for p in failure_probs)]
    summary = {row["run"]: {k: row[k] for k in keys} for row in board.rows}
    scenarios = _scenarios(records)
    if scenarios is None:
        notes.append(
            "No corrupted-input scenarios in metrics.json (evaluated without them): no scenario table or plot."
        )
    else:
        for row in scenarios.table.rows:
            summary[row["run"]][SCENARIO_SUMMARY_KEY] = row["avg"]
    return summary, scenarios


def _protocol_plot(table: Table, dataset: str) -> Plot:
    """Avg and Last-1 per method (groups) under each training protocol (bars) from the protocols table."""
    methods = [row["method"] for row in table.rows]
    protocols = list(dict.fromkeys(c.key.rsplit("_", 1)[0] for c in table.columns if c.key.endswith("_avg")))
    panels = {
        SUMMARY_TITLES[key]: (
            np.array([[row[f"{p}_{key}"] for row in table.rows] for p in protocols], dtype=np.float64),
            np.array([[row[f"{p}_{key}_std"] for row in table.rows] for p in protocols], dtype=np.float64),
        )
        for key in ("avg", "last1")
    }
    figure = plots.protocol_bars(methods, protocols, panels, f"{dataset}: Avg and Last-1 under each training protocol")
    caption = (
        "Avg (mean mIoU over subsets) and Last-1 (worst subset) of each method under each training protocol; "
        "error bars: sample std over seeds; n/a: not run under that protocol."
    )
    return _plot("protocols", caption, figure)


def _scenarios(records: list[dict]) -> ScenarioReport | None:
    """Table, long table and curves of the corrupted-input scenarios; ``None`` when the runs hold
    none (or no kind was run). :func:`load_metrics` made sure all runs share one layout."""
    layout = scenario_layout(records[0])
    if not layout:
        return None
    dataset = records[0]["dataset"]
    figure = plots.scenario_curves(
        scenario_means(records),
        layout,
        records[0]["modalities"],
        f"{dataset}: mIoU with one modality corrupted",
        units=SCENARIO_UNITS,
    )
    caption = (
        "mIoU (%) against the corruption level, one row per kind, one column per corrupted modality and their "
        "mean; x = 0: clean (every modality, uncorrupted); error bars: sample std over seeds."
    )
    report = ScenarioReport(scenario_table(records), scenario_long_table(records), _plot("scenarios", caption, figure))
    weights = corrupted_weights(records)
    if weights:
        report.weights = _corrupted_weight_plot(weights, layout, records[0]["modalities"], dataset)
        report.weights_long = corrupted_weight_table(records)
    return report


def _corrupted_weight_plot(
    weights: dict[str, dict], layout: dict[str, tuple[list[float], list[str]]], modalities: list[str], dataset: str
) -> Plot:
    """Figure corrupted_weight: :func:`plots.corrupted_weight_curves` of :func:`corrupted_weights`."""
    figure = plots.corrupted_weight_curves(
        weights,
        layout,
        modalities,
        f"{dataset}: robustness weight of the corrupted modality (mean over scales)",
        units=SCENARIO_UNITS,
    )
    caption = (
        "Mean robustness weight r of the corrupted modality (mean over the feature scales, the pixels and the test "
        "images) against the corruption level, one row per kind, one column per corrupted modality; x = 0: every "
        "modality clean (the full set's weight); error bars: sample std over seeds. A weight that falls with the "
        "level: the fusion discounts the corrupted modality."
    )
    return _plot("corrupted_weight", caption, figure)


def overview_table(reports: Sequence[DatasetReport], runs: Sequence[str] | None = None) -> Table:
    """Methods x data sets: Avg and Last-1 per data set and the mean over data sets of each run's
    rank by Avg (1 = best; the ranks with ties of each data set's leaderboard, strict ranks for a
    report without them)."""
    order = list(runs) if runs else list(dict.fromkeys(m for r in reports for m in r.summary))
    rows = []
    ranks: dict[str, list[float]] = {m: [] for m in order}
    for report in reports:
        scores = {m: report.summary[m]["avg"] for m in order if m in report.summary}
        ranked = report.ranks if report.ranks is not None else stats.tied_ranks(scores, lambda a, b: False)
        for run, rank in ranked.items():
            if run in ranks:
                ranks[run].append(float(rank))
    for run in order:
        row: dict[str, Any] = {"run": run, "protocol": parse_run(run)[1]}
        for report in reports:
            for key in ("avg", "last1", SCENARIO_SUMMARY_KEY):
                row[f"{report.dataset}_{key}"] = report.summary.get(run, {}).get(key, math.nan)
        row["mean_rank"] = stats.mean_std(ranks[run])[0] if len(ranks[run]) == len(reports) else math.nan
        rows.append(row)
    columns = [Column("run", "Run", "text"), Column("protocol", "Protocol", "text")]
    titles = {**SUMMARY_TITLES, SCENARIO_SUMMARY_KEY: "Corrupted Avg"}
    for report in reports:
        keys = ["avg", "last1"] + ([SCENARIO_SUMMARY_KEY] if report.scenarios is not None else [])
        columns += [Column(f"{report.dataset}_{k}", f"{report.dataset} {titles[k]}", best="max") for k in keys]
    columns.append(Column("mean_rank", "Mean rank (Avg)", best="min"))
    scales = "".join(f"{r.dataset}: {r.scale} " for r in reports if r.scale)
    corrupted = (
        " Corrupted Avg = mean mIoU with one modality corrupted, over every corruption kind, level and modality "
        "(results/report/<dataset>/scenarios.*)."
        if any(r.scenarios is not None for r in reports)
        else ""
    )
    return Table(
        LEADERBOARD,
        "Leaderboard across data sets: mIoU (%) Avg and Last-1 (mean over seeds)",
        columns,
        rows,
        note=scales
        + "Avg = mean mIoU over all modality subsets, Last-1 = the worst subset; mean rank by Avg over the data "
        "sets (n/a when a run lacks one), each data set's rank sharing ties as its leaderboard does (runs whose "
        f"paired bootstrap interval includes 0 share a rank).{corrupted} Per data set details in "
        f"{REPORT_DIR}/<dataset>/.",
    )


def _write_text(path: Path, text: str) -> Path:
    """Write ``path`` atomically, first removing what a killed report left beside it."""
    remove_stale_temps(path)
    return atomic_write_text(path, text)


def write_dataset(report_dir: Path, report: DatasetReport) -> list[Path]:
    """Write one data set's tables and plots; return the paths written."""
    out = Path(report_dir) / report.dataset
    tables, figures = list(report.tables), list(report.plots)
    written = []
    if report.scenarios is not None:
        tables.append(report.scenarios.table)
        figures += report.scenarios.plots
        for long in report.scenarios.long_tables:
            written.append(_write_text(out / f"{long.name}.csv", to_csv(long)))
    for table in tables:
        for suffix, text in renderings(table).items():
            written.append(_write_text(out / f"{table.name}.{suffix}", text))
    if report.runs is not None:
        written.append(_write_text(out / RUNS_FILE, report.runs.to_csv(index=False, float_format="%.4f")))
    for name in OPTIONAL_TABLES:  # a table this report does not build must not survive from an earlier one
        for stale in out.glob(f"{name}.*"):
            if stale not in written:
                stale.unlink()

    def write_plots(suffix: str) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            for plot in figures:
                (folder / f"{plot.name}.{suffix}").write_bytes(plot.files[suffix])

        return write

    for suffix in dict.fromkeys(s for p in figures for s in p.files):  # "png", "svg"
        folder = figure_dir(Path(report_dir), suffix, report.dataset)
        remove_stale_temps(folder)
        atomic_write_dir(folder, write_plots(suffix))
        written += [folder / f"{p.name}.{suffix}" for p in figures]
    return written


def html_sections(reports: Sequence[DatasetReport], overview: Table) -> list[html.Section]:
    sections = [html.Section("Leaderboard", [overview], [])]
    for report in reports:
        figures = [html.Figure(p.name, p.caption, p.files["png"]) for p in report.plots]
        text = "\n\n".join(t for t in (report.scale, report.floor_gap, *report.notes) if t)
        sections.append(html.Section(report.dataset, report.tables, figures, text=text))
        if report.scenarios is not None:
            sections.append(
                html.Section(
                    f"{report.dataset}: corrupted inputs",
                    [report.scenarios.table],
                    [html.Figure(p.name, p.caption, p.files["png"]) for p in report.scenarios.plots],
                    text=SCENARIO_TEXT,
                )
            )
    return sections


def write_report(
    results_dir: Path,
    datasets: Sequence[str],
    runs: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    config: ReportConfig | None = None,
    *,
    prepared_root: Path = PREPARED_DIR,
    provenance: Mapping[str, Any] | None = None,
    report_dir: Path | None = None,
) -> list[Path]:
    """Build every data set's report from the runs under ``results_dir``, then write everything
    into ``report_dir`` (default ``results_dir``; the pipeline: results/runs -> results/report);
    return the paths written."""
    config = config or ReportConfig()
    results_dir = Path(results_dir)
    out = Path(report_dir) if report_dir is not None else results_dir
    inputs = [load_inputs(results_dir, d, runs, seeds, config, prepared_root) for d in datasets]
    reports = [build_dataset(i, config) for i in inputs]  # only once every input has been read and checked
    overview = overview_table(reports, runs)
    page = html.render("IMSS benchmark report", html_sections(reports, overview), dict(provenance or {}))
    summary = {r.dataset: r.summary for r in reports}
    written = []
    for report in reports:
        written += write_dataset(out, report)
    for suffix, text in renderings(overview).items():
        written.append(_write_text(out / f"{LEADERBOARD}.{suffix}", text))
    remove_stale_temps(out / SUMMARY_FILE)
    written.append(atomic_write_json(out / SUMMARY_FILE, summary))
    written.append(_write_text(out / HTML_FILE, page))
    return written


def dataset_markdown(report: DatasetReport) -> str:
    """All tables of a data set as one Markdown document (printed by the CLI)."""
    tables = [*report.tables, *([report.scenarios.table] if report.scenarios is not None else [])]
    text = "\n".join(to_markdown(t, heading=True) for t in tables)
    return "\n\n".join(t for t in (report.scale, report.floor_gap, text) if t)
