"""The DVC pipeline on the tiny config: runs, a second repro is a no-op, reruns are minimal."""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny import TINY_PARAMS, columns, copy_project, doc_lines, run, shell, write_params

from benchmark.config import load_params

pytestmark = pytest.mark.slow

PLUGIN = '''
from benchmark.methods import register_method
from baselines.muss import MuSS

@register_method("muss-copy")
class MuSSCopy(MuSS):
    """MuSS under a second name: a second method for the pipeline test."""
'''


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _plotted(project: Path) -> set[str]:
    """The files `dvc plots show` shows (its JSON: ``{"data": {path: [one per revision, none if missing]}}``)."""
    shown, _ = json.JSONDecoder().raw_decode(run(project, sys.executable, "-m", "dvc", "plots", "show", "--json"))
    return {path for path, renderings in shown["data"].items() if renderings}


def _report_pngs(project: Path, dataset: str) -> set[str]:
    pngs = (project / "results" / "report" / "png" / dataset).glob("*.png")
    return {p.relative_to(project).as_posix() for p in pngs}


def _readme_command(start: str, section: str = "### Comparing two experiments") -> list[str]:
    """The arguments of the command line of README.md's ``section`` that starts with ``start`` (comment cut off)."""
    (line,) = [line for line in doc_lines("README.md", section) if line.startswith(start + " ")]
    return shlex.split(line, comments=True)


def _stale_after_edit(project: Path, file: str) -> set[str]:
    """The stages ``dvc status`` lists once a comment is appended to ``file`` (then put back as it was)."""
    path = project / file
    text = path.read_text()
    path.write_text(text + "\n# an edit\n")
    try:
        shown = run(project, sys.executable, "-m", "dvc", "status", "--json")
    finally:
        path.write_text(text)
    return set(json.JSONDecoder().raw_decode(shown)[0])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the pipeline with the tiny params: a second method from a module of its own, and a
    protocol of its own beside the built-in complete."""
    params = {
        **TINY_PARAMS,
        "runs": ["muss-complete", "muss-copy-complete", "muss-moddrop"],
        "protocols": {"moddrop": {"kind": "bernoulli", "drop_prob": [0.5, 0.5, 0.5]}},
        "method_modules": ["user_methods.my_methods"],
        "method_params": {"muss": {}, "muss-copy": {}},
        "report": {**TINY_PARAMS["report"], "reference": "muss-complete"},
    }
    project = copy_project(tmp_path, params)
    (project / "user_methods" / "my_methods.py").write_text(PLUGIN)
    return project


def test_repro_then_noop_then_minimal_reruns(project: Path):
    output = run(project, sys.executable, "-m", "dvc", "repro")
    first = _ran(output)
    runs = ("muss-complete", "muss-copy-complete", "muss-moddrop")
    for kind in ("train", "evaluate"):  # each stage's progress line, in the order DVC runs them
        assert re.findall(rf"^{kind} (\d/\d): synthetic ([\w-]+) seed 0$", output, re.M) == [
            (f"{i}/3", r) for i, r in enumerate(runs, 1)
        ], output
    assert first == {
        "configure",
        "download@synthetic",
        "prepare@synthetic",
        *(f"{stage}@synthetic-{r}-0" for stage in ("train", "evaluate") for r in runs),
        "report",
    }
    report = project / "results" / "report"
    board = (report / "synthetic" / "leaderboard.csv").read_text()
    assert board.splitlines()[0].startswith("run,protocol") and "muss-copy-complete,complete" in board
    assert "muss-moddrop,moddrop" in board
    protocols = (report / "synthetic" / "protocols.csv").read_text()
    assert protocols.splitlines()[0].startswith("method,family,complete_avg")
    assert (report / "png" / "synthetic" / "miou_heatmap.png").stat().st_size > 1000
    assert (report / "png" / "synthetic" / "protocols.png").stat().st_size > 1000
    assert (report / "report.html").stat().st_size > 10_000
    assert sorted(p.name for p in (project / "configs").iterdir()) == sorted(f"{r}.json" for r in runs)
    metrics = run(project, sys.executable, "-m", "dvc", "metrics", "show")
    assert "results/report/summary.json" in metrics and "synthetic.muss-copy-complete.avg" in metrics
    plots = run(project, sys.executable, "-m", "dvc", "plots", "show", "-o", "dvc_plots")
    assert "index.html" in plots and list((project / "dvc_plots" / "static").glob("*miou_heatmap.png"))
    # every PNG of the report (dvc.yaml's plots name their folder), not the SVGs, and the preview
    assert _plotted(project) == {*_report_pngs(project, "synthetic"), "data/prepared/synthetic/preview.png"}
    assert "results/report/png/synthetic/protocols.png" in _report_pngs(project, "synthetic")

    # stored once (.dvc/config cache.type): the prepared arrays and the models are links to the cache
    for path in ("data/prepared/synthetic/train/rgb.npy", "models/synthetic/muss-complete/seed0/model.pt"):
        assert (project / path).stat().st_nlink == 2, path
    second = run(project, sys.executable, "-m", "dvc", "repro")
    assert _ran(second) == set()
    assert "up to date" in run(project, sys.executable, "-m", "dvc", "status")
    # a typo refused by configure leaves every run's config as it was: once fixed, nothing is stale
    good = (project / "params.yaml").read_text()
    typo = yaml.safe_load(good)
    typo["train"]["steps"] = -5
    write_params(project / "params.yaml", typo)
    refused = run(project, sys.executable, "-m", "dvc", "repro", check=False)
    assert "error: params.yaml: train.steps: -5 is not allowed" in refused and _ran(refused) == {"configure"}
    (project / "params.yaml").write_text(good)
    assert "up to date" in run(project, sys.executable, "-m", "dvc", "status")
    # code deps (tests/test_dvc_deps.py): a method's code is a dep of configure alone, which writes its
    # digest into the configs of the runs that use it; the FLOP count (efficiency) reruns every evaluation
    assert _stale_after_edit(project, "baselines/muss.py") == {"configure", "report"}  # both check params.yaml
    assert {f"evaluate@synthetic-{r}-0" for r in runs} <= _stale_after_edit(project, "benchmark/efficiency/__init__.py")
    assert "up to date" in run(project, sys.executable, "-m", "dvc", "status")  # each file put back
    plugin = project / "user_methods" / "my_methods.py"
    plugin.write_text(PLUGIN + "\n# an edit of the user's method: its runs rerun, no other\n")
    edited = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert edited == {
        "configure",
        "train@synthetic-muss-copy-complete-0",
        "evaluate@synthetic-muss-copy-complete-0",
        "report",
    }
    removed, edited = report / "synthetic" / "leaderboard.csv", report / "synthetic" / "per_class.md"
    kept = {removed: removed.read_bytes(), edited: edited.read_bytes()}
    removed.unlink()  # the report is the stage's output: DVC sees one of its files go, or change
    edited.write_text("edited by hand\n")
    status = run(project, sys.executable, "-m", "dvc", "status")
    assert re.search(r"^report:\n\s+changed outs:\n\s+\w+:\s+results/report$", status, re.M), status
    assert "up to date" not in status and "train@" not in status
    assert _ran(run(project, sys.executable, "-m", "dvc", "repro")) == {"report"}  # restores both, same bytes
    assert {path: path.read_bytes() for path in kept} == kept

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["method_params"]["muss"] = {"decoder_dim": 8}  # both runs of muss, not muss-copy
    write_params(project / "params.yaml", params)
    third = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert third == {
        "configure",
        *(f"{stage}@synthetic-{r}-0" for stage in ("train", "evaluate") for r in ("muss-complete", "muss-moddrop")),
        "report",
    }

    params["protocols"]["moddrop"]["drop_prob"] = [0.2, 0.5, 0.5]  # the runs under that protocol only
    write_params(project / "params.yaml", params)
    fourth = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert fourth == {"configure", "train@synthetic-muss-moddrop-0", "evaluate@synthetic-muss-moddrop-0", "report"}

    params["evaluate"] = {"batch_size": 3}
    write_params(project / "params.yaml", params)
    fifth = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    # the report reruns only if a metrics file changed (batch size may not change any number)
    assert fifth - {"report"} == {"configure", *(f"evaluate@synthetic-{r}-0" for r in runs)}

    # a method added as docs/adding_a_method.md says: its own stages run, and the report; no other
    (project / "user_methods" / "muss_twin.py").write_text(PLUGIN.replace("copy", "twin").replace("Copy", "Twin"))
    params["method_modules"].append("user_methods.muss_twin")
    params["method_params"]["muss-twin"] = {}
    params["runs"].append("muss-twin-complete")
    write_params(project / "params.yaml", params)
    added = {"train@synthetic-muss-twin-complete-0", "evaluate@synthetic-muss-twin-complete-0", "report"}
    status = run(project, sys.executable, "-m", "dvc", "status", "--json")
    assert set(json.JSONDecoder().raw_decode(status)[0]) == {"configure", *added}
    assert _ran(run(project, sys.executable, "-m", "dvc", "repro")) == {"configure", *added}


def test_two_experiments_compare_with_dvc(tmp_path: Path):
    """README's recipe: commit, run an experiment with a longer schedule, compare the metrics."""
    project = copy_project(tmp_path, {**TINY_PARAMS, "seeds": [0, 1]})  # 2 metrics.json: DVC prefixes their keys
    run(project, sys.executable, "-m", "dvc", "repro")
    run(project, "git", "add", "-A")
    run(project, "git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qm", "baseline")
    tracked = run(project, "git", "ls-files", "results")
    assert set(tracked.split()) == {
        "results/report/summary.json",
        *(f"results/runs/synthetic/muss-uniform/seed{k}/metrics.json" for k in (0, 1)),
    }
    dvc = [sys.executable, "-m", "dvc"]
    run(project, *dvc, "exp", "run", "-n", "longer", "-S", "train.steps=8")
    table = run(project, *dvc, *_readme_command("dvc exp show")[1:])  # as README prints it
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    scores = [f"synthetic.muss-uniform.{k}" for k in ("avg", "last1")]
    assert header == ["Experiment", "Created", *scores, "train.steps"]  # the 5 columns, nothing else
    assert "longer" in table
    diff = run(project, *dvc, *_readme_command("dvc metrics diff")[1:])
    assert "synthetic.muss-uniform.avg" in diff and "synthetic.muss-uniform.expected_p0_1" in diff


def test_the_queue_recipe_runs_as_printed(tmp_path: Path):
    """docs/parallel.md's worked example (README's too), line by line on the tiny workspace: two
    queued experiments on two workers, then its comparison commands, each table with its columns."""
    recipe = doc_lines("docs/parallel.md", "## Worked example")
    assert recipe == doc_lines("README.md", "### Running the matrix in parallel")
    params = {
        **TINY_PARAMS,
        "runs": ["muss-complete", "sgma-complete"],
        "method_params": {"muss": {}, "sgma": {}},
        "report": {**TINY_PARAMS["report"], "reference": "sgma-complete"},
    }
    project = copy_project(tmp_path, params)
    run(project, "git", "add", "-A")
    run(project, "git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qm", "tiny")
    queue, start, status, logs, show = (recipe[:2], recipe[2], recipe[3], recipe[4], recipe[5])
    for line in (*queue, start):
        shell(project, line)
    deadline = time.monotonic() + 900
    while re.search(r"\b(Queued|Running)\b", state := shell(project, status)) and time.monotonic() < deadline:
        time.sleep(5)
    assert len(re.findall(r"\bSuccess\b", state)) == 2, state
    assert "Running stage 'train@synthetic-sgma-complete-0'" in shell(project, logs)
    scores = [f"synthetic.{r}-complete.{k}" for r in ("muss", "sgma") for k in ("avg", "last1")]
    assert sorted(columns(shell(project, show))) == sorted(["Experiment", "State", *scores, "runs"])

    compare, metrics_diff, exp_diff, apply, branch, remove = doc_lines(
        "docs/parallel.md", "## Results: compare, keep, clean up"
    )
    assert sorted(columns(shell(project, compare))) == sorted(["Experiment", "State", *scores, "runs", "seeds"])
    diff = shell(project, metrics_diff)
    assert "synthetic.sgma-complete.avg" in diff and "synthetic.muss-complete.avg" in diff
    assert "runs" in shell(project, exp_diff)
    for line in (apply, branch, remove):
        shell(project, line)
    assert load_params(project / "params.yaml")["runs"] == ["sgma-complete"]  # the applied experiment's
    assert "sgma-50-steps" in run(project, "git", "branch")


SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sen1floods11_sample"
RULES = {"ndwi-complete": "s1", "sar-otsu-complete": "s2"}  # the water rules and the subset each cannot use


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"real Sen1Floods11 sample not found at {SAMPLE}")
def test_real_sample_runs_every_method_through_the_pipeline(tmp_path: Path):
    """The real two-sensor chip: download (verify) -> prepare -> train -> evaluate -> report, all methods
    and the floors, the water rules included."""
    shipped = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    runs = [*shipped["runs"], *RULES]
    params = {
        **TINY_PARAMS,
        "datasets": ["sen1floods11-sample"],
        "runs": runs,
        "protocols": shipped["protocols"],  # moddrop's 3 probabilities are not checked: no run uses it
        "method_params": shipped["method_params"],
        "sen1floods11-sample": {**shipped["sen1floods11-sample"], "source_dir": str(SAMPLE), "tile_size": 32},
        "report": {**TINY_PARAMS["report"], "reference": "sgma-complete", "ablation": shipped["report"]["ablation"]},
    }
    params["method_params"]["m3l"] = {**params["method_params"]["m3l"], "supervised_warmup": 2}
    project = copy_project(tmp_path, params)
    ran = _ran(run(project, sys.executable, "-m", "dvc", "repro"))
    assert {"download@sen1floods11-sample", "prepare@sen1floods11-sample", "report"} <= ran
    assert len(ran) == 4 + 2 * len(runs)  # configure, download, prepare, report
    board = (project / "results" / "report" / "sen1floods11-sample" / "leaderboard.md").read_text()
    assert "| s1 | s2 | s1+s2 |" in board
    for run_ in runs:
        assert f"| {run_} |" in board
    for rule in RULES:  # a rule's subsets without its sensor: not applicable, not zero
        metrics = json.loads(
            (project / "results" / "runs" / "sen1floods11-sample" / rule / "seed0" / "metrics.json").read_text()
        )
        assert metrics["family"] == "floor" and metrics["not_applicable"] == [RULES[rule]]
        assert metrics["subsets"][RULES[rule]]["miou"] is None and metrics["summary"]["avg"] is None
        assert metrics["efficiency"]["params"] is None and metrics["efficiency"]["gflops"] is None  # not torch
        row = next(line for line in board.splitlines() if line.startswith(f"| {rule} |"))
        assert "n/a" in row
    ablation = (project / "results" / "report" / "sen1floods11-sample" / "ablation.csv").read_text()
    assert "complete,MAS,sgma-mas-complete,muss-complete,last1" in ablation
    pngs = _report_pngs(project, "sen1floods11-sample")
    assert "results/report/png/sen1floods11-sample/miou_heatmap.png" in pngs and pngs <= _plotted(project)
    assert _ran(run(project, sys.executable, "-m", "dvc", "repro")) == set()
