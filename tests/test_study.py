"""Studies as overlays of params.yaml run as DVC experiments (benchmark.study)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from tiny import REPO, TINY_PARAMS, configure_runs, copy_project, write_params
from tiny import run as run_command

from benchmark.config import ParamsError, load_params
from benchmark.schema import validate_params
from benchmark.study import command, hydra_value, main, merge, overrides, raw_folders

STUDIES = sorted((REPO / "studies").glob("*.yaml"))
# the studies shipped as whole copies of params.yaml before they became overlays (tests/studies/*.full.yaml)
FORMER = [
    REPO / "studies" / f"{path.name.removesuffix('.full.yaml')}.yaml"
    for path in sorted((REPO / "tests" / "studies").glob("*.full.yaml"))
]


def test_mappings_merge_lists_and_scalars_replace_and_unknown_keys_are_named() -> None:
    base = {"train": {"lr": 0.1, "steps": 3}, "runs": ["a", "b"], "variants": {}, "report": {"ablation": {"x": "m"}}}
    overlay = {
        "train": {"lr": 0.2},
        "runs": ["c"],
        "variants": {"v": {"method": "m"}},
        "report": {"ablation": {"y": "n"}},
    }
    merged, changes = merge(base, overlay, "s.yaml")
    assert merged == {
        "train": {"lr": 0.2, "steps": 3},
        "runs": ["c"],
        "variants": {"v": {"method": "m"}},
        "report": {"ablation": {"y": "n"}},  # replaced whole: its rows are ordered
    }
    assert base["train"]["lr"] == 0.1  # the base is not changed
    assert changes == [
        (("train", "lr"), 0.2, False),
        (("runs",), ["c"], False),
        (("variants", "v"), {"method": "m"}, True),
        (("report", "ablation"), {"y": "n"}, False),
    ]
    with pytest.raises(KeyError, match=r"^s.yaml: train.stepz: not a key of params.yaml.*did you mean 'steps'\?"):
        merge(base, {"train": {"stepz": 4}}, "s.yaml")
    with pytest.raises(KeyError, match=r"s.yaml: evaluation: not a key"):
        merge(base, {"evaluation": {}}, "s.yaml")


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 0.001, 6e-05, "1e-3", "true", "a b (c), d: e", "it's", [0.5, 0.25], {"SGF, legacy (x)": "sgma"}],
)
def test_settings_read_back_as_the_value(value) -> None:
    """What dvc exp run -S gives params.yaml: Hydra's parser reads each setting back as the value."""
    (setting,) = overrides([(("train", "lr"), value, False)])
    parsed = OverridesParser.create().parse_overrides([setting])[0]
    assert parsed.key_or_group == "train.lr" and parsed.value() == value
    assert overrides([(("report", "ablation"), {"a": "m"}, False)]) == ["~report.ablation", "+report.ablation={a:'m'}"]


@pytest.mark.parametrize("study", FORMER, ids=[s.stem for s in FORMER])
def test_the_shipped_studies_are_overlays_that_give_their_former_whole_files(study: Path) -> None:
    """studies/<name>.yaml merged into params.yaml checks as the whole copy it replaced
    (tests/studies/<name>.full.yaml, as shipped before) does: the same runs, methods with their
    parameters, protocols, seeds, train, evaluate, scenarios and report."""
    merged, _ = merge(load_params(REPO / "params.yaml"), load_params(study), str(study))
    new = validate_params(merged, str(study))
    old = validate_params(load_params(REPO / "tests" / "studies" / f"{study.stem}.full.yaml"), "full")
    assert (new.runs, new.seeds, new.datasets) == (old.runs, old.seeds, old.datasets)
    assert {m: new.method_spec(m) for m in new.methods} == {m: old.method_spec(m) for m in old.methods}
    assert {n: p.record() for n, p in new.protocols.items()} == {n: p.record() for n, p in old.protocols.items()}
    assert (new.train, new.evaluate, new.scenarios, new.report) == (old.train, old.evaluate, old.scenarios, old.report)
    assert list(new.report.ablation) == list(old.report.ablation)  # the rows in order: the first is the base


def test_dry_run_prints_the_merged_params_and_the_command(tmp_path: Path, capsys) -> None:
    params = write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "variants": {}})
    study = tmp_path / "lr.yaml"
    study.write_text("train:\n  lr: 0.01\nvariants:\n  muss-wide:\n    method: muss\n    params: {decoder_dim: 32}\n")
    merged_file = tmp_path / "merged.yaml"
    args = [str(study), "--params", str(params), "--dry-run", "--merged", str(merged_file), "--", "--jobs", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    text, cmd = out.rsplit("\n# ", 1)
    assert yaml.safe_load(text) == load_params(merged_file)
    assert yaml.safe_load(text)["train"]["lr"] == 0.01 and yaml.safe_load(text)["train"]["steps"] == 6
    assert shlex.split(cmd) == command(
        study, merge(load_params(params), load_params(study), "s")[1], False, ["--jobs", "2"]
    )
    assert shlex.split(cmd)[:6] == ["dvc", "exp", "run", "-n", "lr", "--temp"]
    assert "+variants.muss-wide={method:'muss',params:{decoder_dim:32}}" in shlex.split(cmd)
    assert hydra_value(0.01) in cmd


def test_the_raw_folders_the_project_has_are_copied_into_the_experiment(tmp_path: Path) -> None:
    """data/raw/ is in neither git nor DVC's cache: a temporary experiment would lack the archives placed there."""
    (tmp_path / "data" / "raw" / "potsdam").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "notes.txt").write_text("not a folder")
    assert raw_folders(["synthetic", "potsdam"], tmp_path) == ["data/raw/potsdam"]
    cmd = command(Path("paper.yaml"), [(("seeds",), [0], False)], True, ["--jobs", "2"], ["data/raw/potsdam"])
    assert cmd == [
        "dvc",
        "exp",
        "run",
        "-n",
        "paper",
        "--queue",
        "-C",
        "data/raw/potsdam",
        "-S",
        "seeds=[0]",
        "--jobs",
        "2",
    ]


def test_a_missing_study_names_the_studies_beside_it() -> None:
    with pytest.raises(
        FileNotFoundError, match=r"paper_potsdam.yaml: no such study; .*did you mean 'paper-potsdam.yaml'"
    ):
        main([str(REPO / "studies" / "paper_potsdam.yaml"), "--params", str(REPO / "params.yaml"), "--dry-run"])


def test_a_bad_study_is_refused_as_configure_refuses_it(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "variants": {}})
    study = tmp_path / "bad.yaml"
    study.write_text("train:\n  lr: 1e-3\n")  # YAML text, not a number
    with pytest.raises(ParamsError, match=r"bad.yaml \(merged into .*params.yaml\): train.lr: '1e-3' .*write 0.001"):
        main([str(study), "--params", str(params), "--dry-run"])


@pytest.mark.slow  # dvc exp run trains the tiny runs (about a minute)
def test_a_study_runs_as_an_experiment_and_leaves_params_yaml_alone(tmp_path: Path) -> None:
    """On a committed tiny project: the experiment is listed by dvc exp show with the study's
    parameters (a new variant, a list, a number, nulls, ablation rows with commas and brackets in their
    labels), and the workspace's params.yaml is as it was."""
    train_keys = {**TINY_PARAMS["train"], "epochs": None, "warmup_epochs": None}
    report = {**TINY_PARAMS["report"], "ablation": {}}
    project = copy_project(tmp_path / "project", {**TINY_PARAMS, "train": train_keys, "variants": {}, "report": report})
    study = project / "wide.yaml"
    study.write_text(
        "train: {lr: 0.01, steps: null, epochs: 1.5, warmup_steps: null, warmup_epochs: 0.5}\n"
        "variants:\n  muss-wide:\n    method: muss\n    params: {decoder_dim: 32}\n"
        "runs: [muss-uniform, muss-wide-uniform]\n"
        "report:\n  ablation: {'none (plain), a': muss, 'wide, b': muss-wide}\n"
    )
    run_command(project, "git", "add", "-A")
    run_command(project, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny")
    raw = project / "data" / "raw" / "synthetic"  # an ignored raw folder: copied into the experiment (-C)
    raw.mkdir(parents=True)
    (raw / "placed-by-hand.txt").write_text("an archive")
    before = (project / "params.yaml").read_bytes()
    printed = run_command(project, sys.executable, "-m", "benchmark.study", "wide.yaml")
    assert " -C data/raw/synthetic " in printed.splitlines()[0]
    assert (project / "params.yaml").read_bytes() == before
    shown = json.loads(run_command(project, sys.executable, "-m", "dvc", "exp", "show", "--json"))
    (rev,) = [r for c in shown for e in (c.get("experiments") or []) for r in e["revs"] if r.get("name") == "wide"]
    params = rev["data"]["params"]["params.yaml"]["data"]
    assert params["train"]["lr"] == 0.01 and params["runs"] == ["muss-uniform", "muss-wide-uniform"]
    assert [params["train"][k] for k in ("steps", "epochs", "warmup_steps", "warmup_epochs")] == [None, 1.5, None, 0.5]
    assert params["variants"] == {"muss-wide": {"method": "muss", "params": {"decoder_dim": 32}}}
    assert params["report"]["ablation"] == {"none (plain), a": "muss", "wide, b": "muss-wide"}


@pytest.mark.parametrize("study", STUDIES, ids=[s.stem for s in STUDIES])
def test_every_shipped_study_merges_checks_and_prints_its_command(study: Path, capsys) -> None:
    assert main([str(study), "--params", str(REPO / "params.yaml"), "--dry-run"]) == 0
    text, cmd = capsys.readouterr().out.rsplit("\n# ", 1)
    assert validate_params(yaml.safe_load(text), str(study)).runs
    assert shlex.split(cmd)[:6] == ["dvc", "exp", "run", "-n", study.stem, "--temp"]


# The paper study on the CPU in seconds: the tiny backbone, 32 px tiles of test-made 40 px Potsdam
# scenes (tests/data/test_isprs.py), 2 epochs; everything else is the study's (bf16, lr, warm-up,
# methods). Not 16 px: the tiny CNN's last stage would see 1-px maps, where PyTorch's CPU bf16
# convolution backward writes NaN into padded taps now and then (3 runs of 7; the trainer refuses them).
CPU_OVERRIDE = {
    "potsdam": {"tile_size": 32, "stride": 8, "train_tiles": ["2_10", "2_11"], "test_tiles": ["2_13"]},
    "train": {"backbone": "tiny", "pretrained": False, "decoder_dim": 16, "batch_size": 4, "epochs": 2,
              "warmup_epochs": 0.5, "checkpoint_every": 4, "num_workers": 0},
    "evaluate": {"batch_size": 4, "sample_tiles": 1},
    "scenarios": TINY_PARAMS["scenarios"],
    "report": {"bootstrap_samples": 200},
}  # fmt: skip


@pytest.mark.slow  # 7 runs trained and evaluated, and a report (17 s)
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the test-made nDSM JPEGs
def test_the_paper_study_runs_on_the_cpu_through_train_evaluate_and_report(tmp_path: Path, monkeypatch) -> None:
    from benchmark import download, evaluate, prepare, report, train
    from benchmark.data.isprs import Potsdam
    from tests.data.test_isprs import POTSDAM_SPLIT, write_isprs_archives

    monkeypatch.setattr(Potsdam, "md5s", {})  # tiny archives: trust on first use
    study = REPO / "studies" / "paper-potsdam.yaml"
    merged, _ = merge(load_params(REPO / "params.yaml"), load_params(study), str(study))
    params_file = write_params(tmp_path / "params.yaml", merge(merged, CPU_OVERRIDE, "the CPU override")[0])
    params = validate_params(load_params(params_file), str(params_file))
    assert (params.train.precision, params.train.lr, params.train.warmup_start) == ("bf16", 6e-5, 0.1)
    configs = configure_runs(params_file)
    write_isprs_archives(tmp_path / "raw", "potsdam", POTSDAM_SPLIT)
    data = ["--dataset", "potsdam", "--params", str(params_file), "--raw-dir", str(tmp_path / "raw")]
    prepared = tmp_path / "prepared"
    assert download.main(data) == 0 and prepare.main([*data, "--out", str(prepared / "potsdam")]) == 0
    results = tmp_path / "results"
    for run in params.runs:
        common = ["--dataset", "potsdam", "--run-name", run, "--seed", "0", "--config", str(configs / f"{run}.json")]
        common += ["--data-dir", str(prepared / "potsdam"), "--no-progress"]
        model = tmp_path / "models" / run
        assert train.main([*common, "--out", str(model)]) == 0
        out = results / "runs" / "potsdam" / run / "seed0" / "metrics.json"
        assert (
            evaluate.main(
                [*common, "--params", str(params_file), "--model", str(model / "model.pt"), "--out", str(out)]
            )
            == 0
        )
        # 2 x 4 training tiles // batch 4 = 2 steps per epoch: 2 epochs are 4 steps, the warm-up 1 from 10 % of 6e-5
        lrs = [json.loads(line)["lr"] for line in (model / "train_log.jsonl").read_text().splitlines()]
        assert len(lrs) == 4 and lrs[0] == pytest.approx(6e-6) and lrs[1] == pytest.approx(6e-5)
        assert len(json.loads(out.read_text())["subsets"]) == 7  # every non-empty subset of rgb, nir, dsm
    reported = ["--params", str(params_file), "--results", str(results / "runs"), "--out", str(results / "report")]
    assert report.main([*reported, "--prepared", str(prepared)]) == 0
    ablation = (results / "report" / "potsdam" / "ablation.md").read_text()
    assert all(f"| {row} |" in ablation for row in ("none", "SGF", "MAS", "SGF+MAS")), ablation
    board = (results / "report" / "potsdam" / "leaderboard.md").read_text()
    assert all(f"| {run} |" in board for run in params.runs), board
