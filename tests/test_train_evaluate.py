"""End to end on the tiny config: train + evaluate + report, determinism, resume, contract checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_PARAMS, configure_runs, write_params

from baselines.muss import MuSS
from benchmark import checkpoint, evaluate, train
from benchmark.config import ParamsValueError, ReportConfig, ScenarioConfig, TrainConfig
from benchmark.data.prepared import PreparedDataset
from benchmark.errors import DamagedFileError
from benchmark.methods import register_method
from benchmark.metrics import segmentation_scores
from benchmark.protocol import (
    Protocol,
    apply_availability,
    builtin_protocol,
    enumerate_subsets,
    subset_mask,
    subset_name,
)
from benchmark.report import write_report
from benchmark.scenarios import Corruption, corrupt

TRAIN = TrainConfig(**TINY_PARAMS["train"])


@register_method("test-batchnorm-muss")
class BatchNormMuSS(MuSS):
    """MuSS with a BatchNorm on its logits: a method whose forward pass changes buffers in training mode."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = torch.nn.BatchNorm2d(self.num_classes)

    def decode(self, features, available, size):
        output = super().decode(features, available, size)
        return {**output, "logits": self.norm(output["logits"])}


def _run_args(
    params: Path, prepared: Path, method: str = "muss-uniform", seed: int = 0, configs: Path | None = None
) -> list[str]:
    """Command-line arguments shared by the train and evaluate entry points: the run's configuration
    from ``configs`` (default: the configure stage run on ``params``)."""
    config = (configs or configure_runs(params)) / f"{method}.json"
    return ["--dataset", "synthetic", "--run-name", method, "--seed", str(seed), "--config", str(config),
            "--data-dir", str(prepared), "--no-progress"]  # fmt: skip


def _train_and_evaluate(tmp: Path, prepared: Path, params: Path, seed: int = 0, method: str = "muss-uniform") -> dict:
    models = tmp / "models" / method / f"seed{seed}"
    metrics = tmp / "results" / "synthetic" / method / f"seed{seed}" / "metrics.json"
    common = _run_args(params, prepared, method, seed)
    assert train.main([*common, "--out", str(models)]) == 0
    assert (
        evaluate.main([*common, "--params", str(params), "--model", str(models / "model.pt"), "--out", str(metrics)])
        == 0
    )
    return json.loads(metrics.read_text())


def test_another_split_is_scored_beside_the_test_splits_files_never_over_them(
    tmp_path, tiny_prepared, tiny_params, monkeypatch
):
    """``evaluate --split valid`` without ``--out``: seed<k>/valid/metrics.json, the test split's files untouched."""
    prepared = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, prepared)
    shutil.copytree(prepared / "test", prepared / "valid")  # a valid split: the test tiles again
    meta = json.loads((prepared / "meta.json").read_text())
    meta["splits"]["valid"] = meta["splits"]["test"]
    (prepared / "meta.json").write_text(json.dumps(meta))
    common = _run_args(tiny_params, prepared)
    models = tmp_path / "models"
    assert train.main([*common, "--out", str(models)]) == 0
    monkeypatch.chdir(tmp_path)  # the default output folders are relative to the project
    scored = [*common, "--params", str(tiny_params), "--model", str(models / "model.pt")]
    assert evaluate.main(scored) == 0
    run = tmp_path / "results" / "runs" / "synthetic" / "muss-uniform" / "seed0"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert set(before) == {"metrics.json", "image_scores.npz", "predictions.npz"}
    assert evaluate.main([*scored, "--split", "valid"]) == 0
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert {p.name for p in (run / "valid").iterdir()} == set(before)
    valid, test = (json.loads((d / "metrics.json").read_text()) for d in (run / "valid", run))
    assert valid["subsets"] == test["subsets"]  # the same tiles, the same scores


@pytest.mark.slow  # trains, evaluates and builds a whole report (~8 s)
def test_end_to_end_writes_schema_and_leaderboard(tmp_path, tiny_prepared, tiny_params):
    record = _train_and_evaluate(tmp_path, tiny_prepared, tiny_params)
    names = [subset_name(s) for s in enumerate_subsets(["rgb", "dsm", "nir"])]
    assert record["dataset"] == "synthetic" and record["method"] == "muss" and record["seed"] == 0
    assert record["modalities"] == ["rgb", "dsm", "nir"]
    assert len(record["classes"]) == 6
    assert list(record["subsets"]) == names
    for scores in record["subsets"].values():
        assert 0 <= scores["miou"] <= 100 and 0 <= scores["mf1"] <= 100
        assert set(scores["iou"]) == set(record["classes"])
    mious = [s["miou"] for s in record["subsets"].values()]
    assert record["summary"]["avg"] == pytest.approx(sum(mious) / len(mious))
    assert record["summary"]["top1"] == max(mious) and record["summary"]["last1"] == min(mious)
    log = (tmp_path / "models" / "muss-uniform" / "seed0" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(TRAIN.steps))
    efficiency = record["efficiency"]
    assert efficiency["tile_shape"] == [32, 32] and efficiency["train_steps"] == TRAIN.steps
    assert efficiency["train_images_per_s"] == pytest.approx(
        TRAIN.batch_size / efficiency["train_seconds_per_step"], rel=1e-3
    )
    for key in ("inference_ms_per_image", "train_peak_memory_mb", "eval_peak_memory_mb", "gflops"):
        assert efficiency[key] > 0, key
    assert efficiency["eval_device"].startswith("cpu")
    config = ReportConfig(reference="muss-uniform", bootstrap_samples=20)
    write_report(tmp_path / "results", ["synthetic"], ["muss-uniform"], [0], config, prepared_root=tiny_prepared.parent)
    assert "muss" in (tmp_path / "results" / "synthetic" / "leaderboard.md").read_text()
    plots = tmp_path / "results"
    assert (plots / "png" / "synthetic" / "miou_heatmap.png").exists()
    assert (plots / "svg" / "synthetic" / "qualitative_tile0.svg").exists()


def test_image_scores_and_predictions_are_what_the_model_gives(tmp_path, tiny_prepared, tiny_params):
    record = _train_and_evaluate(tmp_path, tiny_prepared, tiny_params)
    folder = tmp_path / "results" / "synthetic" / "muss-uniform" / "seed0"
    scores = np.load(folder / "image_scores.npz")
    test = PreparedDataset(tiny_prepared, "test")
    assert scores["subsets"].tolist() == list(record["subsets"])
    assert scores["confusion"].shape == (7, len(test), 6, 6)
    for i, subset in enumerate(record["subsets"]):  # the per-image matrices sum to the reported scores
        assert segmentation_scores(scores["confusion"][i].sum(0), record["classes"])["miou"] == pytest.approx(
            record["subsets"][subset]["miou"], abs=1e-12
        )
    kept = np.load(folder / "predictions.npz")
    assert kept["indices"].tolist() == evaluate.sample_tiles(len(test), 3) == [0, 2, 5]
    model, _ = checkpoint.load_model(tmp_path / "models" / "muss-uniform" / "seed0" / "model.pt")
    modalities = list(test.modalities)
    for j, index in enumerate(kept["indices"]):
        inputs, target = test[int(index)]
        inputs = {m: x[None] for m, x in inputs.items()}
        for i, subset in enumerate(enumerate_subsets(modalities)):
            available = subset_mask(subset, modalities, 1)
            with torch.no_grad():
                logits = model.predict(apply_availability(inputs, available, modalities), available)["logits"]
            np.testing.assert_array_equal(kept["pred"][i, j], logits.argmax(1)[0].numpy())
            own = np.zeros((6, 6), dtype=np.int64)  # the image's own confusion matrix, counted directly
            valid = target.numpy() != test.ignore_index
            np.add.at(own, (target.numpy()[valid], logits.argmax(1)[0].numpy()[valid]), 1)
            np.testing.assert_array_equal(scores["confusion"][i, int(index)], own)


def test_report_refuses_predictions_that_do_not_match_the_prepared_labels(tmp_path, tiny_prepared, tiny_params):
    import shutil

    _train_and_evaluate(tmp_path, tiny_prepared, tiny_params)
    prepared = tmp_path / "prepared" / "synthetic"
    shutil.copytree(tiny_prepared, prepared)
    labels = np.load(prepared / "test" / "label.npy")
    labels[2, 0, 0] = (labels[2, 0, 0] + 1) % 6  # tile 2 is kept for the panel
    np.save(prepared / "test" / "label.npy", labels)
    config = ReportConfig(reference="muss-uniform", bootstrap_samples=20)
    with pytest.raises(ValueError, match=r"muss-uniform/seed0/predictions.npz: tile 2 does not score as evaluated"):
        write_report(tmp_path / "results", ["synthetic"], ["muss-uniform"], [0], config, prepared_root=prepared.parent)
    assert not (tmp_path / "results" / "report.html").exists()


def test_sample_tiles_spread_evenly():
    assert evaluate.sample_tiles(10, 3) == [0, 4, 9]  # round(4.5) = 4 (banker's rounding)
    assert evaluate.sample_tiles(2, 5) == [0, 1]
    assert evaluate.sample_tiles(7, 1) == [0] and evaluate.sample_tiles(7, 0) == []


def test_same_seed_same_metrics_other_seed_differs(tmp_path, tiny_prepared, tiny_params):
    a = _train_and_evaluate(tmp_path / "a", tiny_prepared, tiny_params, seed=0)
    b = _train_and_evaluate(tmp_path / "b", tiny_prepared, tiny_params, seed=0)
    c = _train_and_evaluate(tmp_path / "c", tiny_prepared, tiny_params, seed=1)
    assert a["subsets"] == b["subsets"]
    assert a["subsets"] != c["subsets"]


@pytest.mark.parametrize(
    ("method", "method_params"),
    [
        ("muss", {}),
        ("sgma", {}),  # draws its MAS modality from the global RNG
        ("m3l", {"supervised_warmup": 1}),  # EMA teacher and its update counter, masked-student draws
        ("imlt", {}),  # draws the hidden modality and the contrastive locations
        ("test-batchnorm-muss", {}),  # BatchNorm running statistics (buffers the contract check must not touch)
    ],
)
def test_resume_after_interruption_gives_the_same_model(tmp_path, tiny_prepared, monkeypatch, method, method_params):
    full = train.train(tiny_prepared, method, method_params, TRAIN, 0, tmp_path / "full", progress=False)
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def crashing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # crash during step 4; the last checkpoint is after step 2
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train.train(tiny_prepared, method, method_params, TRAIN, 0, tmp_path / "resumed", progress=False)
    assert checkpoint.load_torch(tmp_path / "resumed" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    resumed = train.train(tiny_prepared, method, method_params, TRAIN, 0, tmp_path / "resumed", progress=False)
    a = torch.load(full, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(TRAIN.steps))


@pytest.mark.slow  # trains two methods and builds a whole report (~20 s)
def test_sgma_metrics_carry_robustness_size_and_cost(tmp_path, tiny_prepared):
    params = write_params(
        tmp_path / "params.yaml",
        {**TINY_PARAMS, "runs": ["muss-uniform", "sgma-uniform"], "method_params": {"muss": {}, "sgma": {}}},
    )
    record = _train_and_evaluate(tmp_path, tiny_prepared, params, method="sgma-uniform")
    muss = _train_and_evaluate(tmp_path, tiny_prepared, params, method="muss-uniform")
    assert "robustness" not in muss
    robustness = record["robustness"]
    assert robustness["scales"] == [4, 8, 16, 32] and list(robustness["subsets"]) == list(record["subsets"])
    for subset, per_modality in robustness["subsets"].items():
        present = subset.split("+")
        for m, values in per_modality.items():
            assert all(v > 0 for v in values) if m in present else values == [0.0] * 4, (subset, m)
        for k in range(4):
            assert sum(per_modality[m][k] for m in present) == pytest.approx(1.0, abs=1e-5)
    corrupted = robustness["scenarios"]  # the weights under every corrupted-input case, laid out as scenarios.kinds
    assert {k: (e["levels"], list(e["modalities"])) for k, e in corrupted.items()} == {
        k: (e["levels"], list(e["modalities"])) for k, e in record["scenarios"]["kinds"].items()
    }
    for entry in corrupted.values():
        for weights in entry["modalities"].values():
            for k in range(4):
                assert sum(weights[m][0][k] for m in record["modalities"]) == pytest.approx(1.0, abs=1e-5)
    assert "scenarios" in muss and "robustness" not in muss
    model, _ = checkpoint.load_model(tmp_path / "models" / "sgma-uniform" / "seed0" / "model.pt")
    size, cost = record["efficiency"], muss["efficiency"]
    assert size["params"] == sum(p.numel() for p in model.parameters()) > cost["params"]
    assert size["gflops"] > cost["gflops"] > 0
    kept = np.load(tmp_path / "results" / "synthetic" / "sgma-uniform" / "seed0" / "predictions.npz")
    assert kept["scales"].tolist() == [4, 8, 16, 32] and kept["modalities"].tolist() == ["rgb", "dsm", "nir"]
    maps = kept["robustness_4"]  # [S, n, M, h, w]
    assert maps.shape == (7, 3, 3, 8, 8) and maps.dtype == np.float16
    for i, subset in enumerate(robustness["subsets"]):
        present = [m in subset.split("+") for m in kept["modalities"]]
        assert np.all(maps[i][:, ~np.array(present)] == 0)
        np.testing.assert_allclose(maps[i].astype(np.float32).sum(axis=1), 1.0, atol=2e-3)
    config = ReportConfig(reference="sgma-uniform", bootstrap_samples=20)
    write_report(
        tmp_path / "results",
        ["synthetic"],
        ["muss-uniform", "sgma-uniform"],
        [0],
        config,
        prepared_root=tiny_prepared.parent,
    )
    plots = tmp_path / "results" / "png" / "synthetic"
    assert (plots / "robustness_means.png").read_bytes().startswith(b"\x89PNG")
    assert (plots / "robustness_maps_sgma-uniform_tile0.png").exists()
    assert (plots / "corrupted_weight.png").read_bytes().startswith(b"\x89PNG")


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path, tiny_prepared, capsys):
    train.train(tiny_prepared, "muss", {}, TRAIN, 0, tmp_path / "run", progress=False)
    other = TrainConfig(**{**TINY_PARAMS["train"], "lr": 0.001})
    train.train(tiny_prepared, "muss", {}, other, 0, tmp_path / "run", progress=False)
    assert "resuming" not in capsys.readouterr().err


def test_a_damaged_or_missing_run_configuration_is_named_before_training(tmp_path, tiny_prepared, tiny_params):
    args = _run_args(tiny_params, tiny_prepared)
    config = Path(args[args.index("--config") + 1])
    record = json.loads(config.read_text())
    config.write_text(json.dumps({**record, "train": {**record["train"], "stepz": 3}}))
    with pytest.raises(DamagedFileError, match=rf"{config}: train.*stepz"):
        train.main([*args, "--out", str(tmp_path / "m")])
    config.write_text(json.dumps({**record, "run": "sgma-uniform"}))
    with pytest.raises(DamagedFileError, match=rf"{config}: holds run 'sgma-uniform', not 'muss-uniform'"):
        train.main([*args, "--out", str(tmp_path / "m")])
    config.unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"{config}: run 'muss-uniform' is not configured.*benchmark.configure"
    ):
        train.main([*args, "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()


@pytest.mark.slow  # prepares, trains and evaluates 15 subsets (~3 s)
def test_four_modalities_evaluate_fifteen_subsets(tmp_path):
    params = {**TINY_PARAMS, "synthetic": {**TINY_PARAMS["synthetic"], "with_sar": True}}
    params_path = write_params(tmp_path / "params.yaml", params)
    prepared = tmp_path / "prepared"
    from benchmark import prepare

    prepare.main(["--dataset", "synthetic", "--params", str(params_path), "--out", str(prepared)])
    record = _train_and_evaluate(tmp_path, prepared, params_path)
    assert record["modalities"] == ["rgb", "dsm", "nir", "sar"]
    assert len(record["subsets"]) == 15 and list(record["subsets"])[-1] == "rgb+dsm+nir+sar"
    kinds = record["scenarios"]["kinds"]
    assert list(kinds) == ["block_missing", "pixel_missing", "gaussian", "salt_pepper", "speckle"]
    assert list(kinds["speckle"]["modalities"]) == ["sar"] and kinds["speckle"]["levels"] == [0.5]
    assert list(kinds["gaussian"]["modalities"]) == ["rgb", "dsm", "nir", "sar"]


def test_schedule_warmup_then_poly_decay_in_the_log(tmp_path, tiny_prepared):
    config = TrainConfig(**{**TINY_PARAMS["train"], "steps": 6, "warmup_steps": 2})
    train.train(tiny_prepared, "muss", {}, config, 0, tmp_path / "run", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    lrs = [line["lr"] for line in lines]
    peak = config.lr
    expected = [peak * train.poly_schedule(s, steps=6, warmup_steps=2, power=0.9) for s in range(6)]
    assert lrs == pytest.approx(expected)
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(peak) and lrs[2] > lrs[3] > lrs[4] > lrs[5] > 0
    assert all({"step", "loss", "ce", "lr", "images_per_s"} <= set(line) for line in lines)


def test_a_schedule_in_epochs_trains_as_its_steps_from_the_warm_up_start(tmp_path, tiny_prepared, capsys):
    """1.5 epochs of the 16 tiles at batch 4 = 6 steps, a warm-up of 0.5 epochs = 2 steps from 10 % of lr."""
    values = {**TINY_PARAMS["train"], "steps": None, "warmup_steps": None, "epochs": 1.5, "warmup_epochs": 0.5}
    in_epochs = TrainConfig(**values, warmup_start=0.1)
    record = torch.load(train.train(tiny_prepared, "muss", {}, in_epochs, 0, tmp_path / "e", progress=False))
    assert (
        "1.5 epochs, warm-up 0.5 epochs of 4 steps (16 training tiles // batch 4) = 6 steps" in capsys.readouterr().err
    )
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "e" / "train_log.jsonl").read_text().splitlines()]
    peak = in_epochs.lr
    ramp = [peak * (0.1 + 0.9 * s / 2) for s in range(2)]  # linear from 0.1 * lr
    decay = [peak * (1 - (s - 2) / 4) ** 0.9 for s in range(2, 6)]
    assert record["steps"] == 6 and lrs == pytest.approx(ramp + decay)
    # the same recipe spelt in steps is the same run: same fingerprint, same weights
    in_steps = TrainConfig(**{**TINY_PARAMS["train"], "steps": 6, "warmup_steps": 2}, warmup_start=0.1)
    same = torch.load(train.train(tiny_prepared, "muss", {}, in_steps, 0, tmp_path / "s", progress=False))
    assert same["fingerprint"] == record["fingerprint"]
    assert all(torch.equal(same["state_dict"][k], v) for k, v in record["state_dict"].items())


def test_a_staged_protocol_is_checked_against_the_steps_the_epochs_give(tmp_path, tiny_prepared):
    """Configure cannot check a staged switch when the schedule is in epochs; the trainer does, before any step."""
    staged = Protocol(
        "early", "staged", fraction=0.1, first=builtin_protocol("complete"), then=builtin_protocol("uniform")
    )
    values = {**TINY_PARAMS["train"], "steps": None, "warmup_steps": None, "epochs": 1.0, "warmup_epochs": 0.25}
    with pytest.raises(
        ParamsValueError, match=r"protocols.early.fraction: 0.1 .* train.steps: 4: it switches at step 0"
    ):
        train.train(tiny_prepared, "muss", {}, TrainConfig(**values), 0, tmp_path / "run", protocol=staged)
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_non_finite_weights_are_never_saved_and_the_message_names_them(tmp_path, tiny_prepared, monkeypatch):
    """A NaN in the weights (put by the after-step hook of the 4th step, before any loss sees it, as a NaN
    in a tap that only meets padding never does) stops the run at that step's checkpoint before it
    is written; step 2's stays."""
    steps = {"n": 0}

    def poison(self) -> None:
        steps["n"] += 1
        if steps["n"] == 4:
            next(self.parameters()).data.view(-1)[0] = float("nan")

    monkeypatch.setattr(MuSS, "after_optimizer_step", poison)
    config = TrainConfig(**TINY_PARAMS["train"])  # 6 steps, a checkpoint every 2
    with pytest.raises(FloatingPointError, match=r"non-finite weights after step 4: encoder\..* \(1 of \d+ values\)"):
        train.train(tiny_prepared, "muss", {}, config, 0, tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / "checkpoint.pt")["step"] == 2 and not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.slow  # starts loader worker processes
def test_loader_workers_do_not_change_the_result(tmp_path, tiny_prepared):
    workers = TrainConfig(**{**TINY_PARAMS["train"], "steps": 3, "num_workers": 2})
    single = TrainConfig(**{**TINY_PARAMS["train"], "steps": 3, "num_workers": 0})
    a = torch.load(
        train.train(tiny_prepared, "muss", {}, workers, 0, tmp_path / "w", progress=False), weights_only=True
    )
    b = torch.load(train.train(tiny_prepared, "muss", {}, single, 0, tmp_path / "s", progress=False), weights_only=True)
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)


def _miou_percent(matrix: np.ndarray) -> float:
    """mIoU in percent over the classes present in target or prediction (numpy, by hand)."""
    tp = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return float(np.mean(100 * tp[union > 0] / union[union > 0]))


def test_scenario_scores_are_an_independent_recount(tmp_path, tiny_prepared, tiny_params):
    from sklearn.metrics import confusion_matrix

    record = _train_and_evaluate(tmp_path, tiny_prepared, tiny_params)
    block = record["scenarios"]
    settings = TINY_PARAMS["scenarios"]
    kinds = ["block_missing", "pixel_missing", "gaussian", "salt_pepper"]  # no SAR-like modality: no speckle
    assert set(block) == {"seed", "block_size", "clean_miou", "kinds", "avg"}
    assert block["seed"] == 0 and block["block_size"] == 8 and list(block["kinds"]) == kinds
    assert block["clean_miou"] == record["subsets"]["rgb+dsm+nir"]["miou"]
    test = PreparedDataset(tiny_prepared, "test")
    model, _ = checkpoint.load_model(tmp_path / "models" / "muss-uniform" / "seed0" / "model.pt")
    every = torch.ones(1, 3, dtype=torch.bool)
    mious = []
    for kind in kinds:
        assert block["kinds"][kind]["levels"] == settings[kind]
        assert list(block["kinds"][kind]["modalities"]) == ["rgb", "dsm", "nir"]
        for index, modality in enumerate(["rgb", "dsm", "nir"]):
            scores = block["kinds"][kind]["modalities"][modality]
            assert {key: len(v) for key, v in scores.items()} == {"miou": 1, "mf1": 1, "accuracy": 1}
            case = Corruption(kind, settings[kind][0], modality, index)
            total = np.zeros((6, 6), dtype=np.int64)
            for tile in range(len(test)):  # one tile at a time (evaluate ran batches of 4)
                inputs, target = test[tile]
                inputs = {m: x[None] for m, x in inputs.items()}
                inputs[modality] = corrupt(inputs[modality], case, [tile], seed=0, block_size=8)
                with torch.no_grad():
                    pred = model.predict(inputs, every)["logits"].argmax(1)[0].numpy()
                valid = target.numpy() != test.ignore_index
                total += confusion_matrix(target.numpy()[valid], pred[valid], labels=list(range(6)))
            assert scores["miou"][0] == pytest.approx(_miou_percent(total), abs=1e-9), case.name
            assert scores["accuracy"][0] == pytest.approx(100 * np.trace(total) / total.sum(), abs=1e-9)
            mious.append(scores["miou"][0])
    assert block["avg"] == pytest.approx(np.mean(mious), abs=1e-9)
    assert any(m != block["clean_miou"] for m in mious)  # the corruptions do reach the model


class _Recorder(torch.nn.Module):
    """A method that records the inputs of every predict() call and predicts class 0."""

    method_name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []

    def predict(self, inputs, available):
        self.calls.append(({m: x.clone() for m, x in inputs.items()}, available.clone()))
        x = next(iter(inputs.values()))
        return {"logits": torch.zeros(x.shape[0], 6, *x.shape[-2:])}


def test_scenarios_corrupt_one_modality_with_all_available(tiny_prepared):
    test = PreparedDataset(tiny_prepared, "test")
    config = ScenarioConfig(block_missing=[], pixel_missing=[0.5], gaussian=[1.0], salt_pepper=[], speckle=[0.5])
    recorder = _Recorder()
    evaluation = evaluate.evaluate_subsets(recorder, test, batch_size=4, scenarios=config)
    cases = [Corruption("pixel_missing", 0.5, m, i) for i, m in enumerate(["rgb", "dsm", "nir"])]
    cases += [Corruption("gaussian", 1.0, m, i) for i, m in enumerate(["rgb", "dsm", "nir"])]
    assert list(evaluation.scenarios) == cases
    per_batch = 7 + len(cases)
    assert len(recorder.calls) == 2 * per_batch  # 6 tiles in batches of 4 and 2
    for batch, tiles in enumerate([[0, 1, 2, 3], [4, 5]]):
        clean = {m: torch.stack([test[t][0][m] for t in tiles]) for m in test.modalities}
        for j, case in enumerate(cases):
            inputs, available = recorder.calls[batch * per_batch + 7 + j]
            assert available.all()
            for m in test.modalities:
                if m == case.modality:
                    torch.testing.assert_close(inputs[m], corrupt(clean[m], case, tiles, seed=0, block_size=8))
                    assert not torch.equal(inputs[m], clean[m])
                else:
                    assert torch.equal(inputs[m], clean[m]), (case.name, m)
    for matrix in evaluation.scenarios.values():  # everything predicted class 0: the column of class 0
        labels = test.labels[test.labels != test.ignore_index]
        assert matrix[:, 0].tolist() == np.bincount(labels, minlength=6).tolist()


def test_evaluate_refuses_other_class_count_and_unknown_scenario_modality(tmp_path, tiny_prepared, tiny_params):
    import shutil

    model = train.train(tiny_prepared, "muss", {}, TRAIN, 0, tmp_path / "run", progress=False)
    prepared = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, prepared)
    meta = json.loads((prepared / "meta.json").read_text())
    meta["classes"] = meta["classes"][:5]
    (prepared / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "results" / "metrics.json"
    configs = configure_runs(tiny_params)
    args = [*_run_args(tiny_params, prepared, configs=configs), "--params", str(tiny_params), "--model", str(model)]
    args += ["--out", str(out)]
    with pytest.raises(ValueError, match=rf"{model}: trained for 6 classes, data .* has 5"):
        evaluate.main(args)
    bad = write_params(tmp_path / "bad.yaml", {**TINY_PARAMS, "scenarios": {"modalities": ["rgb", "lidar"]}})
    missing_model = tmp_path / "none" / "model.pt"  # the configuration is refused before the model is read
    args = [*_run_args(bad, tiny_prepared, configs=configs), "--params", str(bad), "--model", str(missing_model)]
    args += ["--out", str(out)]
    with pytest.raises(ValueError, match=r"bad.yaml: scenarios.modalities.*'lidar'.*\['rgb', 'dsm', 'nir'\]"):
        evaluate.main(args)
    assert not out.parent.exists()


def test_a_modality_selection_prepares_trains_and_evaluates_only_those(tmp_path):
    """``synthetic.modalities: [dsm, rgb]``: the prepared data, the model and every score hold rgb and
    dsm only (in the data set's order), and the kept modalities are the same tiles as without a selection."""
    from benchmark import prepare

    params = {**TINY_PARAMS, "synthetic": {**TINY_PARAMS["synthetic"], "modalities": ["dsm", "rgb"]}}
    path = write_params(tmp_path / "params.yaml", params)
    prepared = tmp_path / "prepared"
    assert prepare.main(["--dataset", "synthetic", "--params", str(path), "--out", str(prepared)]) == 0
    data = PreparedDataset(prepared, "test")
    assert data.modalities == {"rgb": 3, "dsm": 1}
    full_path = write_params(tmp_path / "full.yaml", TINY_PARAMS)
    assert prepare.main(["--dataset", "synthetic", "--params", str(full_path), "--out", str(tmp_path / "full")]) == 0
    full = PreparedDataset(tmp_path / "full", "test")
    for m in ("rgb", "dsm"):
        np.testing.assert_array_equal(data.arrays[m], full.arrays[m])
    record = _train_and_evaluate(tmp_path, prepared, path)
    assert record["modalities"] == ["rgb", "dsm"] and list(record["subsets"]) == ["rgb", "dsm", "rgb+dsm"]
    for kind in record["scenarios"]["kinds"].values():
        assert list(kind["modalities"]) == ["rgb", "dsm"]


@pytest.mark.slow  # trains and evaluates twice (~4 s)
@pytest.mark.parametrize("convention", ["mask", "zero"])
def test_naive_evaluation_gives_the_shared_paths_scores(tmp_path, tiny_prepared, convention):
    params = write_params(
        tmp_path / "params.yaml",
        {
            **TINY_PARAMS,
            "runs": ["sgma-uniform"],
            "method_params": {"sgma": {}},
            "evaluate": {**TINY_PARAMS["evaluate"], "convention": convention},
            "report": {**TINY_PARAMS["report"], "reference": "sgma-uniform"},
        },
    )
    shared = _train_and_evaluate(tmp_path, tiny_prepared, params, method="sgma-uniform")
    assert shared["convention"] == convention and shared["protocol"] == {"name": "uniform", "kind": "uniform"}
    models = tmp_path / "models" / "sgma-uniform" / "seed0"
    out = tmp_path / "naive" / "metrics.json"
    args = [
        *_run_args(params, tiny_prepared, "sgma-uniform", 0),
        "--params",
        str(params),
        "--model",
        str(models / "model.pt"),
        "--out",
        str(out),
    ]
    assert evaluate.main([*args, "--naive"]) == 0
    naive = json.loads(out.read_text())
    for name, scores in shared["subsets"].items():
        assert naive["subsets"][name]["miou"] == pytest.approx(scores["miou"], abs=0.05), name
    assert naive["scenarios"]["avg"] == pytest.approx(shared["scenarios"]["avg"], abs=0.05)
    for name, per_modality in shared["robustness"]["subsets"].items():
        for modality, means in per_modality.items():
            assert naive["robustness"]["subsets"][name][modality] == pytest.approx(means, abs=1e-5)


def test_a_variant_trains_and_evaluates_as_its_registered_method(tmp_path, tiny_prepared):
    params = {
        **TINY_PARAMS,
        "runs": ["muss-narrow-uniform"],
        "variants": {"muss-narrow": {"method": "muss", "params": {"decoder_dim": 8}}},
        "report": {**TINY_PARAMS["report"], "reference": "muss-narrow-uniform"},
    }
    path = write_params(tmp_path / "params.yaml", params)
    metrics = _train_and_evaluate(tmp_path, tiny_prepared, path, method="muss-narrow-uniform")
    assert (metrics["run"], metrics["method"], metrics["family"]) == ("muss-narrow-uniform", "muss-narrow", "reference")
    method, record = checkpoint.load_model(tmp_path / "models" / "muss-narrow-uniform" / "seed0" / "model.pt")
    assert type(method) is MuSS and (record["method"], record["registered_method"]) == ("muss-narrow", "muss")
    assert record["init"]["decoder_dim"] == 8 and method.decoder.classify.in_channels == 8
