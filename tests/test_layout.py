"""benchmark.layout owns the pipeline's paths: dvc.yaml spells the same ones."""

from __future__ import annotations

import re
from typing import Any

import yaml
from tiny import REPO

from benchmark.layout import (
    CONFIGS_DIR,
    IMAGE_SCORES_FILE,
    LOG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODELS_DIR,
    PIPELINE_FILE,
    PREDICTIONS_FILE,
    PREPARED_DIR,
    PREVIEW_FILE,
    RAW_DIR,
    REPORT_DIR,
    RUNS_DIR,
    SUMMARY_FILE,
    figure_dir,
    prepared_dir,
    run_config_file,
    run_dir,
)

ITEM = {"item": "ds", "item.dataset": "ds", "item.run": "m-p", "item.seed": "7"}  # one stage of each foreach/matrix


def paths(entries: list[Any]) -> list[str]:
    """The paths of a dvc.yaml list (a path, or a mapping of a path to its options), ``${item...}`` filled in."""
    names = [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]
    return [re.sub(r"\$\{(item(?:\.\w+)?)\}", lambda m: ITEM[m.group(1)], name).rstrip("/") for name in names]


def test_every_path_of_dvc_yaml_is_built_by_the_layout() -> None:
    pipeline = yaml.safe_load((REPO / PIPELINE_FILE).read_text())
    stages = pipeline["stages"]
    one_run = ("ds", "m-p", 7)
    assert paths(stages["configure"]["outs"]) == [str(CONFIGS_DIR)]
    assert paths(stages["download"]["do"]["outs"]) == [str(RAW_DIR / "ds")]
    assert paths(stages["prepare"]["do"]["outs"]) == [str(prepared_dir("ds"))]
    assert str(RAW_DIR / "ds") in paths(stages["prepare"]["do"]["deps"])
    assert paths(stages["train"]["outs"]) == [
        str(run_dir(MODELS_DIR, *one_run) / MODEL_FILE),
        str(run_dir(RUNS_DIR, *one_run) / LOG_FILE),
    ]
    evaluate, run_files = stages["evaluate"], run_dir(RUNS_DIR, *one_run)
    assert paths(evaluate["outs"]) == [str(run_files / f) for f in (IMAGE_SCORES_FILE, PREDICTIONS_FILE)]
    assert paths(evaluate["metrics"]) == [str(run_files / METRICS_FILE)]
    for stage in ("train", "evaluate"):
        deps = paths(stages[stage]["deps"])
        assert {str(run_config_file("m-p")), str(prepared_dir("ds"))} <= set(deps), stage
    assert str(run_dir(MODELS_DIR, *one_run) / MODEL_FILE) in paths(evaluate["deps"])
    assert paths(stages["report"]["outs"]) == [str(REPORT_DIR)]
    assert {str(RUNS_DIR), str(PREPARED_DIR)} <= set(paths(stages["report"]["deps"]))
    assert paths(pipeline["metrics"]) == [str(REPORT_DIR / SUMMARY_FILE)]
    assert paths(pipeline["plots"]) == [
        str(figure_dir(REPORT_DIR, "png", "ds").parent),
        str(prepared_dir("synthetic") / PREVIEW_FILE),
    ]
