"""The report stage: tables, statistics, plots and an HTML page from ``results/**``.

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

from benchmark.report import provenance
from benchmark.report.build import write_report
from benchmark.report.runs import load_runs
from benchmark.schema import load_config

__all__ = ["load_runs", "main", "write_report"]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints ``results/leaderboard.md``."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--prepared", type=Path, default=Path("data") / "prepared", help="prepared data (panels)")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: params' datasets")
    parser.add_argument("--runs", nargs="+", default=None, help="default: params' runs (<method>-<protocol>)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: params' seeds")
    args = parser.parse_args(argv)
    where = str(args.params)
    try:
        params = load_config(args.params)
        datasets = args.datasets or params.datasets
        runs = args.runs or params.runs
        seeds = args.seeds or params.seeds
        config = params.report
        if config.reference not in runs:
            raise ValueError(f"{where}: report.reference: {config.reference!r} is not one of the runs {runs}")
        record = provenance.collect(args.params, datasets, args.prepared, Path("data") / "raw", Path("."))
        paths = write_report(
            args.results, datasets, runs, seeds, config, prepared_root=args.prepared, provenance=record
        )
    except (FileNotFoundError, KeyError, TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    board = next(p for p in paths if p.name == "leaderboard.md" and p.parent == args.results)
    sys.stdout.write(board.read_text(encoding="utf-8"))
    print(f"wrote {len(paths)} files; open {args.results / 'report.html'}")
    return 0
