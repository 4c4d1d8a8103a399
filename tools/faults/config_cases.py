"""Fault kind ``bad_config``: a params.yaml with one mistake must stop the pipeline before any compute.

Each :data:`MUTATIONS` entry turns a valid tiny configuration (:data:`BASE_PARAMS`) into a bad
params.yaml. The case writes it, runs ``benchmark.configure.main`` (the first stage of ``dvc
repro``: the train and evaluate stages read only the run files it writes) and survives when the
stage raises the expected error type naming the key and the value (and what is allowed), and no
run file was written: nothing computed, nothing written besides the params file itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmark.layout import CONFIGS_DIR, PARAMS_FILE
from tools.faults.common import TINY_PARAMS, NotSurvived, expect_error

BASE_PARAMS: dict[str, Any] = TINY_PARAMS  # copied before each mutation


@dataclass(frozen=True)
class Mutation:
    """One mistake: ``text(params)`` -> the bad params.yaml; the stage must raise ``error`` whose
    message contains every string of ``must_name`` (the key, the value, what is allowed)."""

    name: str
    text: Callable[[dict[str, Any]], str]
    error: type[BaseException]
    must_name: tuple[str, ...]


def _dump(params: dict[str, Any]) -> str:
    return yaml.safe_dump(params, sort_keys=False)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], str]:
    """Set dotted ``path`` (creating sections) to ``value``."""

    def text(params: dict[str, Any]) -> str:
        *parents, last = path.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        return _dump(params)

    return text


def _with_moddrop(drop_prob: list[float]) -> Callable[[dict[str, Any]], str]:
    """A ``bernoulli`` protocol ``moddrop`` with ``drop_prob``, and the run ``muss-moddrop`` that uses it."""

    def text(params: dict[str, Any]) -> str:
        params["protocols"] = {"moddrop": {"kind": "bernoulli", "drop_prob": drop_prob}}
        params["runs"] = ["muss-moddrop"]
        params["report"]["reference"] = "muss-moddrop"
        return _dump(params)

    return text


def _drop(key: str) -> Callable[[dict[str, Any]], str]:
    def text(params: dict[str, Any]) -> str:
        del params[key]
        return _dump(params)

    return text


def _duplicate_top_level_key(params: dict[str, Any]) -> str:
    """The ``seeds`` key written twice: PyYAML's plain safe_load would silently keep the second."""
    return _dump(params) + "seeds:\n- 1\n"


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "unknown_method",
        _set("runs", ["muss-uniform", "musss-uniform"]),
        KeyError,
        ("runs[1]", "'musss'", "muss"),
    ),
    Mutation(
        "unknown_protocol",
        _set("runs", ["muss-unifrom"]),
        KeyError,
        ("runs[0]", "'unifrom'", "uniform", "protocols"),
    ),
    Mutation("run_without_protocol", _set("runs", ["muss"]), ValueError, ("runs[0]", "'muss'", "<method>-<protocol>")),
    Mutation(
        "staged_fraction",
        _set("protocols", {"half": {"kind": "staged", "fraction": 1.5, "first": "complete", "then": "uniform"}}),
        ValueError,
        ("protocols.half.fraction", "1.5", "(0, 1)"),
    ),
    Mutation("unknown_dataset", _set("datasets", ["synthetik"]), KeyError, ("datasets[0]", "'synthetik'", "synthetic")),
    Mutation(
        "unknown_modality",
        _set("scenarios.modalities", ["rgb", "lidar"]),
        ValueError,
        ("scenarios.modalities[1]", "'lidar'", "['rgb', 'dsm', 'nir']"),
    ),
    Mutation(
        "duplicated_modality",
        _set("scenarios.modalities", ["rgb", "rgb"]),
        ValueError,
        ("scenarios.modalities", "['rgb', 'rgb']", "distinct"),
    ),
    Mutation(
        "empty_modality_set", _set("scenarios.modalities", []), ValueError, ("scenarios.modalities", "[]", "non-empty")
    ),
    Mutation(
        "subset_modality_missing",
        _set("scenarios.modalities", ["sar"]),  # the tiny synthetic set has no sar (with_sar: false)
        ValueError,
        ("scenarios.modalities[0]", "'sar'", "synthetic has ['rgb', 'dsm', 'nir']"),
    ),
    Mutation(
        "drop_prob_count",
        _with_moddrop([0.5, 0.5]),
        ValueError,
        ("protocols.moddrop.drop_prob", "[0.5, 0.5]", "one probability per modality"),
    ),
    Mutation(
        "class_count",
        _set("method_params.muss.num_classes", 7),
        ValueError,
        ("method_params.muss.num_classes", "7", "set by the data set"),
    ),
    Mutation("zero_batch_size", _set("train.batch_size", 0), ValueError, ("train.batch_size", ": 0 ", "an int >= 1")),
    Mutation("negative_steps", _set("train.steps", -5), ValueError, ("train.steps", "-5", "an int >= 1")),
    Mutation(
        "steps_and_epochs", _set("train.epochs", 2), ValueError, ("train.steps", "exactly one of steps and epochs")
    ),
    Mutation("zero_tiles", _set("synthetic.num_train", 0), ValueError, ("synthetic.num_train", ": 0 ", "an int >= 1")),
    Mutation("zero_block_size", _set("scenarios.block_size", 0), ValueError, ("scenarios.block_size", ": 0 ", ">= 1")),
    Mutation("negative_eval_batch", _set("evaluate.batch_size", -1), ValueError, ("evaluate.batch_size", "-1", ">= 1")),
    Mutation("missing_train", _drop("train"), KeyError, ("train", "missing", "required")),
    Mutation(
        "missing_dataset_section", _drop("synthetic"), KeyError, ("synthetic", "missing", "null for its defaults")
    ),
    Mutation("missing_method_params", _drop("method_params"), KeyError, ("method_params.muss", "missing")),
    Mutation("unknown_train_key", _set("train.stepz", 3), KeyError, ("train", "'stepz'", "allowed")),
    Mutation("wrong_type", _set("train.lr", "fast"), TypeError, ("train.lr", "'fast'", "a number")),
    Mutation(
        "unknown_method_param",
        _set("method_params.muss.lamda", 1.0),
        KeyError,
        ("method_params.muss", "'lamda'", "decoder_dim"),
    ),
    Mutation("negative_seed", _set("seeds", [-1]), ValueError, ("seeds[0]", "-1", "an int >= 0")),
    Mutation("repeated_seed", _set("seeds", [0, 0]), ValueError, ("seeds", "[0, 0]", "each item once")),
    Mutation(
        "reference_not_listed",
        _set("report.reference", "sgma"),
        ValueError,
        ("report.reference", "'sgma'", "a listed run"),
    ),
    Mutation("unknown_top_level_key", _set("trian", {"steps": 1}), KeyError, ("'trian'", "allowed", "train")),
    Mutation("duplicated_yaml_key", _duplicate_top_level_key, ValueError, ("'seeds'", "duplicated", "each key once")),
)


def run_mutation(mutation: Mutation, workdir: Path) -> BaseException:
    """Write the mutated params.yaml in ``workdir``, run the configure stage on it (the first stage
    of ``dvc repro``; the run stages read only what it writes) and require the expected error and
    that nothing else was written. Returns the error; raises
    :class:`~tools.faults.common.NotSurvived` otherwise."""
    from benchmark import configure

    params_path = workdir / PARAMS_FILE.name
    params_path.write_text(mutation.text(copy.deepcopy(BASE_PARAMS)), encoding="utf-8")
    out = workdir / CONFIGS_DIR
    argv = ["--params", str(params_path), "--out", str(out)]
    err = expect_error(lambda: configure.main(argv), mutation.error, [str(params_path), *mutation.must_name])
    left = sorted(p.name for p in workdir.iterdir() if p != params_path)
    if out.exists() or left:
        raise NotSurvived(f"{mutation.name}: the stage wrote {left} before rejecting the params")
    return err


def bad_config(rng: np.random.Generator, workdir: Path) -> str:
    """One mutation drawn from :data:`MUTATIONS`; see :func:`run_mutation`. Returns the error it got."""
    mutation = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    try:
        err = run_mutation(mutation, workdir)
    except NotSurvived as err:
        raise NotSurvived(f"bad_config {mutation.name}: {err}") from err
    return f"{mutation.name}: {type(err).__name__}: {str(err).replace(str(workdir), '<workdir>')}"


CASES = {"bad_config": bad_config}
