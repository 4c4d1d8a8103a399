"""The report stage: tables, statistics, plots and an HTML page in ``results/report/`` from ``results/runs/**``.

``python -m benchmark.report [--params params.yaml]`` reads every data set, run and seed listed
in params.yaml (``datasets``, ``runs``, ``seeds``; the ``report`` section sets the reference
run, the failure probabilities of E_p[mIoU] and the bootstrap) and writes what
:mod:`benchmark.report.build` lists; it prints the cross-data-set leaderboard. Modules:
:mod:`~benchmark.report.results` (reading, checks), :mod:`~benchmark.report.runs` (the long
table of runs, :func:`load_runs` for notebooks), :mod:`~benchmark.report.leaderboard` (the
numbers, as tables), :mod:`~benchmark.report.tables` (CSV, Markdown, LaTeX),
:mod:`~benchmark.report.plots`, :mod:`~benchmark.report.html`, :mod:`~benchmark.report.provenance`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.config import ParamsValueError
from benchmark.layout import HTML_FILE, LEADERBOARD, PARAMS_FILE, PREPARED_DIR, RAW_DIR, REPORT_DIR, RUNS_DIR
from benchmark.report import provenance
from benchmark.report.build import write_report
from benchmark.report.runs import load_runs
from benchmark.schema import load_config

__all__ = ["load_runs", "main", "write_report"]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints ``results/report/leaderboard.md``."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--results", type=Path, default=RUNS_DIR, help="the runs' files (default results/runs)")
    parser.add_argument("--out", type=Path, default=REPORT_DIR, help="the report's folder (default results/report)")
    parser.add_argument("--prepared", type=Path, default=PREPARED_DIR, help="prepared data (panels)")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: params' datasets")
    parser.add_argument("--runs", nargs="+", default=None, help="default: params' runs (<method>-<protocol>)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: params' seeds")
    args = parser.parse_args(argv)
    where = str(args.params)
    params = load_config(args.params)
    datasets = args.datasets or params.datasets
    runs = args.runs or params.runs
    seeds = args.seeds or params.seeds
    config = params.report
    if config.reference not in runs:
        raise ParamsValueError(f"{where}: report.reference: {config.reference!r} is not one of the runs {runs}")
    record = provenance.collect(args.params, datasets, args.prepared, RAW_DIR, Path("."))
    paths = write_report(
        args.results,
        datasets,
        runs,
        seeds,
        config,
        prepared_root=args.prepared,
        provenance=record,
        report_dir=args.out,
    )
    board = next(p for p in paths if p.name == f"{LEADERBOARD}.md" and p.parent == args.out)
    sys.stdout.write(board.read_text(encoding="utf-8"))
    print(f"wrote {len(paths)} files; open {args.out / HTML_FILE}")
    return 0
