"""Run a study: a small overlay of params.yaml, run as a DVC experiment.

``python -m benchmark.study studies/<name>.yaml [--queue] [--dry-run] [-- <dvc exp run arguments>]``
merges the study into params.yaml (:func:`merge`), checks the result as the configure stage does
(the same one-line errors), then calls ``dvc exp run`` with the study's changes as ``-S``
settings (:func:`overrides`), so ``dvc exp show`` lists the experiment with its parameters. The
experiment runs in a temporary copy (``--temp``) or is queued (``--queue``; ``dvc queue start``
runs it), into which DVC copies the data sets' raw folders (:func:`raw_folders`): the user's
params.yaml is never written. ``--dry-run`` prints the merged params and the
exact command; ``--merged FILE`` writes the merged params for other commands (``diagnose
--params FILE``).

A study file holds only the keys it changes. Mappings merge and lists and scalars replace; a key
that params.yaml does not have is an error naming it, except a new name under ``variants``,
``protocols`` or ``method_params``; ``report.ablation``, an ordered table of rows, is replaced
whole.
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from benchmark import errors
from benchmark.config import ParamsKeyError, ParamsTypeError, load_params
from benchmark.io import atomic_write_text
from benchmark.layout import PARAMS_FILE, RAW_DIR

OPEN = {("variants",), ("protocols",), ("method_params",)}  # mappings of names: a study may add a name
WHOLE = {("report", "ablation")}  # replaced whole, not merged: its rows are ordered
Change = tuple[tuple[str, ...], Any, bool]  # (key path, value, whether the path is new)


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[Change]]:
    """``base`` with ``overlay`` merged in (neither is changed) and the changes, each a leaf the
    overlay sets: ``(key path, value, new)``. Errors name ``where`` and the key path."""
    merged = copy.deepcopy(dict(base))
    changes: list[Change] = []

    def visit(target: dict[str, Any], layer: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in layer.items():
            at = (*path, key)
            dotted = ".".join(map(str, at))
            if key not in target:
                if path not in OPEN:
                    allowed = sorted(map(str, target))
                    raise ParamsKeyError(
                        f"{where}: {dotted}: not a key of {PARAMS_FILE} (a study changes keys it has); allowed: "
                        f"{allowed}" + errors.did_you_mean(str(key), allowed)
                    )
                target[key] = copy.deepcopy(value)
                changes.append((at, value, True))
            elif isinstance(value, Mapping) and at not in WHOLE:
                if not isinstance(target[key], dict):
                    if target[key] is not None:
                        raise ParamsTypeError(f"{where}: {dotted}: a mapping over {target[key]!r} in {PARAMS_FILE}")
                    target[key] = {}
                visit(target[key], value, at)
            else:
                target[key] = copy.deepcopy(value)
                changes.append((at, value, False))

    if not isinstance(overlay, Mapping):
        raise ParamsTypeError(f"{where}: {type(overlay).__name__} at the top level; a study is a mapping of keys")
    visit(merged, overlay, ())
    return merged, changes


_SPECIAL = set("\\()[]{}:=,'\" ")  # characters Hydra's override grammar reads as syntax


def _key(text: str) -> str:
    return "".join(f"\\{c}" if c in _SPECIAL else c for c in str(text))


def hydra_value(value: Any) -> str:
    """``value`` in the override grammar of ``dvc exp run -S`` (Hydra's): strings quoted, keys of
    mappings escaped; what Hydra's parser reads back as ``value`` (tests/test_study.py)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_key(k)}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{value!r}: no override syntax for {type(value).__name__}")


def overrides(changes: list[Change]) -> list[str]:
    """``-S`` settings of ``changes``: ``path=value``; ``+path=value`` for a new key; a mapping
    replaced whole is removed first (``~path``: DVC merges a mapping into the one it sets)."""
    settings = []
    for path, value, new in changes:
        key = ".".join(path)
        if path in WHOLE and not new:
            settings.append(f"~{key}")
            new = True
        settings.append(f"{'+' if new else ''}{key}={hydra_value(value)}")
    return settings


def raw_folders(datasets: list[str], root: Path) -> list[str]:
    """``data/raw/<name>`` of each of ``datasets`` whose raw folder the project at ``root`` has. A
    temporary or queued experiment starts from git's files and DVC's cache, which hold neither the
    archives placed there by hand nor the uncached downloads: DVC copies these folders in (``-C``)."""
    return [(RAW_DIR / name).as_posix() for name in datasets if (root / RAW_DIR / name).is_dir()]


def command(
    study: Path, changes: list[Change], queue: bool, extra: list[str], copies: list[str] | None = None
) -> list[str]:
    """The ``dvc exp run`` command of the study: named after its file, in a temporary copy (or
    queued) into which the ``copies`` are copied, with its changes as ``-S`` settings and ``extra``
    arguments last."""
    settings = [arg for setting in overrides(changes) for arg in ("-S", setting)]
    copied = [arg for path in copies or [] for arg in ("-C", path)]
    return ["dvc", "exp", "run", "-n", study.stem, "--queue" if queue else "--temp", *copied, *settings, *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.study",
        description=__doc__.splitlines()[0],
        epilog="arguments after -- go to dvc exp run",
    )
    parser.add_argument("study", type=Path, help="a study file (studies/<name>.yaml)")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="what it overlays (default params.yaml)")
    parser.add_argument("--queue", action="store_true", help="queue the experiment (dvc queue start runs it)")
    parser.add_argument("--dry-run", action="store_true", help="print the merged params and the command; run nothing")
    parser.add_argument("--merged", type=Path, default=None, help="also write the merged params to this file")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # after --: more dvc exp run arguments
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    from benchmark.schema import validate_params  # imports every method: after the arguments are read

    if not args.study.is_file():
        shipped = sorted(path.name for path in args.study.parent.glob("*.yaml"))
        raise FileNotFoundError(
            f"{args.study}: no such study; {args.study.parent} has {shipped or 'none'}"
            + errors.did_you_mean(args.study.name, shipped)
        )
    where = f"{args.study} (merged into {args.params})"
    merged, changes = merge(load_params(args.params), load_params(args.study), where)
    validate_params(merged, where)
    text = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    if args.merged is not None:
        atomic_write_text(args.merged, text)
    cmd = command(args.study, changes, args.queue, extra, raw_folders(merged["datasets"], args.params.parent))
    if args.dry_run:
        print(text + "\n# " + shlex.join(cmd))
        return 0
    print(shlex.join(cmd), flush=True)
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    errors.run(main)
