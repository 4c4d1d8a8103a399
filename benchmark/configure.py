"""Check params.yaml and write each run's training configuration: ``configs/<run>.json``.

``python -m benchmark.configure`` validates the whole file (:func:`benchmark.schema.load_config`)
and writes, for every run listed under ``runs``, what its training depends on besides the data
(:class:`benchmark.run_config.RunConfig`): the method (a registered one or a ``variants`` entry,
with the registered method that builds it, the module that registers that and the digest of the
module's code with every project file it imports) and its parameters (its ``method_params`` entry,
or the variant's ``params``), the protocol (resolved: a staged protocol holds its two stages) and
the ``train`` section. Each train and evaluate stage of ``dvc.yaml`` depends on its own file and on
no method's code, so DVC reruns exactly the runs whose method code, method parameters or protocol
changed (a change to ``train`` or to shared code changes every file). Files of runs no longer
listed are removed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
from pathlib import Path

import yaml

from benchmark import errors
from benchmark.imports import code_digest, covered
from benchmark.io import atomic_write_json
from benchmark.layout import (
    CONFIGS_DIR,
    PARAMS_FILE,
    PIPELINE_FILE,
    REPORT_DIR,
    RESULTS_DIR,
    RUNS_DIR,
    SCHEMA_FILE,
    legacy_results,
    run_config_file,
)
from benchmark.methods.catalog import method_module
from benchmark.run_config import RunConfig
from benchmark.schema import ValidatedParams, json_schema, load_config


def method_code(module: str) -> tuple[str, list[str]]:
    """(sha256, files) of method module ``module``: the module and every project file it imports
    (:func:`benchmark.imports.code_digest`); a module from outside the project: its own file."""
    try:
        return code_digest(module)
    except KeyError:
        path = Path(importlib.import_module(module).__file__ or module)
        return hashlib.sha256(path.read_bytes()).hexdigest(), [str(path)]


def run_config(params: ValidatedParams, run: str) -> RunConfig:
    """What run ``run`` (``<method>-<protocol>``) trains with."""
    method, protocol = params.run_parts(run)
    registered, method_params = params.method_spec(method)
    module = method_module(registered)
    digest, files = method_code(module)
    return RunConfig(
        run=run,
        method=method,
        registered_method=registered,
        method_module=module,
        method_code=digest,
        method_files=files,
        method_params=method_params,
        protocol=protocol,
        train=params.train,
    )


def write_configs(configs: list[RunConfig], folder: Path = CONFIGS_DIR) -> list[Path]:
    """Write ``folder/<run>.json`` for every run config (atomically) and remove the other runs' files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_json(run_config_file(c.run, folder), c.record()) for c in configs]
    for stale in set(folder.glob("*.json")) - set(written):
        stale.unlink()
    return written


def unwatched_note(configs: list[RunConfig], pipeline: Path = PIPELINE_FILE) -> str | None:
    """One line naming the runs' method files that no dep of ``pipeline``'s configure stage covers
    (a module outside benchmark/, baselines/, floors/, user_methods/): ``dvc repro`` would not rerun
    their runs when they change. ``None`` when every file is covered or there is no ``pipeline``."""
    if not pipeline.is_file():
        return None
    deps = [str(d) for d in yaml.safe_load(pipeline.read_text(encoding="utf-8"))["stages"]["configure"]["deps"]]
    files = sorted({f for config in configs for f in config.method_files})
    outside = [f for f in files if not covered(f, deps)]
    if not outside:
        return None
    return (
        f"note: method files {', '.join(outside)} are not under any dep of the configure stage in {pipeline}: "
        "dvc repro will not rerun their runs when they change; put your method in user_methods/"
    )


def legacy_note(results_dir: Path = RESULTS_DIR) -> str | None:
    """One line about files of the old results layout in ``results_dir`` (:func:`legacy_results`), or
    ``None``: what they are and what to do. Nothing is moved or deleted."""
    old = legacy_results(results_dir)
    if not old:
        return None
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in old[:6]) + (", ..." if len(old) > 6 else "")
    return (
        f"note: {results_dir}/ holds {names}: files of the layout before {RUNS_DIR}/ and {REPORT_DIR}/, "
        f"which the pipeline no longer reads or writes (dvc repro computes the runs and the report there); "
        f"move them out of {results_dir}/ to keep them (nothing was moved or deleted)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.configure", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--out", type=Path, default=CONFIGS_DIR, help="folder of the run files (default configs/)")
    parser.add_argument(
        "--schema",
        action="store_true",
        help=f"print the JSON Schema of params.yaml (shipped as {SCHEMA_FILE}, which params.yaml names) and stop",
    )
    args = parser.parse_args(argv)
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    params = load_config(args.params)
    configs = [run_config(params, run) for run in params.runs]
    paths = write_configs(configs, args.out)
    print(f"{args.params}: valid; wrote {len(paths)} run configuration(s) to {args.out}/")
    for note in (unwatched_note(configs), legacy_note()):
        if note:
            print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    errors.run(main)
