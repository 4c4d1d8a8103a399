"""Fault injection: ``python -m tools.faults [--cycles N] [--seed S] [--kinds k1 k2 ...]``.

Runs ``N`` cases of every fault kind, each in a fresh temporary folder with its own random draws
(kill step, truncation point, corrupted pixel, bad key, ...), and prints one line per kind::

    kill_resume: survived 5/5

A case survives when the run ended with the right metrics or the right clear error and no file
was lost or left half-written; why a case did not survive goes to stderr. Exit status 1 if any
case did not survive. The kinds come from the ``CASES`` of :mod:`tools.faults.training_cases`,
:mod:`tools.faults.input_cases` and :mod:`tools.faults.config_cases`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmark import errors
from tools.faults.common import NotSurvived

CASE_MODULES = ("training_cases", "input_cases", "config_cases")


def all_cases() -> dict[str, Callable[[np.random.Generator, Path], str | None]]:
    """Every fault kind -> its case function, in module order."""
    import importlib

    cases: dict[str, Callable[[np.random.Generator, Path], str | None]] = {}
    for module in CASE_MODULES:
        for kind, case in importlib.import_module(f"tools.faults.{module}").CASES.items():
            if kind in cases:
                raise ValueError(f"fault kind {kind!r} defined twice")
            cases[kind] = case
    return cases


def run_kind(
    kind: str,
    case: Callable[[np.random.Generator, Path], str | None],
    cycles: int,
    seed: int,
    kind_index: int,
    details: list[str] | None = None,
) -> tuple[int, list[str]]:
    """Run ``cycles`` cases of one kind -> (survived, reasons of the others); what the surviving
    cases say they did is appended to ``details``."""
    survived, reasons = 0, []
    for cycle in range(cycles):
        rng = np.random.default_rng([seed, kind_index, cycle])
        workdir = Path(tempfile.mkdtemp(prefix=f"fault-{kind}-"))
        try:
            detail = case(rng, workdir)
            survived += 1
            if details is not None and detail:
                details.append(f"{kind} #{cycle}: {detail}")
        except NotSurvived as err:
            reasons.append(f"{kind} #{cycle}: {err}")
        except Exception as err:  # a crash of the case itself is not survival either
            reasons.append(f"{kind} #{cycle}: unexpected {type(err).__name__}: {err}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return survived, reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3, help="cases per fault kind (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--kinds", nargs="+", default=None, help="run only these kinds")
    parser.add_argument("--verbose", action="store_true", help="print what each case did (stderr)")
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error(f"--cycles must be >= 1, got {args.cycles}")
    cases = all_cases()
    kinds = args.kinds or list(cases)
    unknown = [k for k in kinds if k not in cases]
    if unknown:
        parser.error(f"unknown kind(s) {unknown}; known: {', '.join(cases)}")
    failed = 0
    for kind in kinds:
        tick = time.perf_counter()
        details: list[str] = []
        survived, reasons = run_kind(kind, cases[kind], args.cycles, args.seed, list(cases).index(kind), details)
        for line in (details if args.verbose else []) + reasons:
            print(line, file=sys.stderr)
        print(f"{kind}: survived {survived}/{args.cycles}", flush=True)
        print(f"  {kind}: {args.cycles} case(s) in {time.perf_counter() - tick:.1f} s", file=sys.stderr, flush=True)
        failed += args.cycles - survived
    return 1 if failed else 0


if __name__ == "__main__":
    errors.run(main)
