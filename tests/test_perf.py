"""``python -m benchmark.perf``: every figure printed, computed from the timed code paths."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest

from benchmark import evaluate, perf

pytestmark = pytest.mark.slow  # trains two methods and times three evaluation paths

ARGS = ["--methods", "muss", "sgma", "--size", "32", "--eval-tiles", "4", "--eval-batch-size", "2",
        "--train-batch-size", "2", "--train-steps", "3", "--repeats", "1", "--device", "cpu",
        "--schedule-steps", "100000"]  # fmt: skip


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> tuple[dict[str, str], list[dict]]:
    calls = []
    original = evaluate.evaluate_subsets

    def spy(method, dataset, **kwargs):
        calls.append({"method": type(method).__name__, "modalities": len(dataset.modalities), **kwargs})
        return original(method, dataset, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(perf, "evaluate_subsets", spy)
    out = io.StringIO()
    with redirect_stdout(out):
        assert perf.main(ARGS) == 0
    mp.undo()
    lines = out.getvalue().splitlines()
    assert all(line.count("=") >= 1 for line in lines), lines
    return dict(line.split("=", 1) for line in lines), calls


def test_every_figure_of_the_issue_is_printed(printed):
    figures, _ = printed
    for key in ("eval_ratio_m3", "eval_ratio_m4", "naive_ratio_m3", "naive_ratio_m4", "sgma_muss_step_ratio",
                "train_step_ms_muss", "train_step_ms_sgma", "loader_images_per_s", "model_images_per_s_max",
                "loader_headroom", "peak_memory_mb", "eval_images_per_s_sgma", "device"):  # fmt: skip
        assert key in figures, key
    for key, value in figures.items():
        if key not in ("device", "backbone", "precision"):
            assert float(value) > 0, (key, value)


def test_ratios_are_the_printed_times_divided(printed):
    figures, _ = printed
    for m in (3, 4):
        for name in ("muss", "sgma"):
            full = float(figures[f"eval_full_s_m{m}_{name}"])
            shared = float(figures[f"eval_shared_s_m{m}_{name}"])
            naive = float(figures[f"eval_naive_s_m{m}_{name}"])
            assert float(figures[f"eval_ratio_m{m}_{name}"]) == pytest.approx(shared / full, rel=5e-3, abs=2e-3)
            assert float(figures[f"naive_ratio_m{m}_{name}"]) == pytest.approx(naive / full, rel=5e-3, abs=2e-3)
        worst = max(float(figures[f"eval_ratio_m{m}_{name}"]) for name in ("muss", "sgma"))
        assert float(figures[f"eval_ratio_m{m}"]) == worst
    for name in ("muss", "sgma"):  # 100000 steps of the median step, in hours
        hours = 100000 * float(figures[f"train_step_ms_{name}"]) / 1000 / 3600
        assert float(figures[f"schedule_hours_{name}"]) == pytest.approx(hours, rel=1e-2, abs=1e-3)
    total = sum(float(figures[f"schedule_hours_{name}"]) for name in ("muss", "sgma"))
    assert float(figures["schedule_hours"]) == pytest.approx(total, rel=1e-2, abs=2e-3)
    ratio = float(figures["train_step_ms_sgma"]) / float(figures["train_step_ms_muss"])
    assert float(figures["sgma_muss_step_ratio"]) == pytest.approx(ratio, rel=1e-2)


def test_the_evaluator_itself_is_timed_on_each_path(printed):
    _, calls = printed
    # per data set (M = 3, 4) and method: full pass, shared, naive; each a warm-up + 1 timed run
    assert len(calls) == 2 * 2 * 3 * 2
    for m in (3, 4):
        mine = [c for c in calls if c["modalities"] == m and c["method"] == "SGMA"]
        full = [c for c in mine if c.get("subsets") is not None]
        assert len(full) == 2 and all(len(c["subsets"]) == 1 and len(c["subsets"][0]) == m for c in full)
        assert sum(c.get("shared_encoder", True) and c.get("subsets") is None for c in mine) == 2
        assert sum(c.get("shared_encoder") is False and c.get("subsets") is None for c in mine) == 2


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        perf.main(["--repeats", "0"])
    with pytest.raises(SystemExit):
        perf.main(["--schedule-steps", "0"])
