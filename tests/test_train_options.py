"""Options of params.yaml ``train`` beyond the basic recipe: precision, channels_last, compile (throughput),
the schedule in epochs and the warm-up's start."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_PARAMS

from benchmark import train
from benchmark.checkpoint import load_model
from benchmark.config import FieldError, ParamsTypeError, TrainConfig, from_mapping
from benchmark.data.prepared import PreparedDataset
from benchmark.layout import LOG_FILE, MODEL_FILE
from benchmark.methods.catalog import create_method


def expect_error(fn, error: type[BaseException], must_name: list[str]) -> None:
    """``fn()`` raises ``error`` whose one-line message names every string of ``must_name``."""
    with pytest.raises(error) as info:
        fn()
    assert all(str(s) in str(info.value) for s in must_name) and "\n" not in str(info.value), str(info.value)


BASE = {**TINY_PARAMS["train"], "steps": 3, "warmup_steps": 1, "checkpoint_every": 3}
# the options added after the first checkpoints were written
NEW_KEYS = ("precision", "channels_last", "compile", "warmup_start", "epochs", "warmup_epochs", "scale_range")


@pytest.mark.parametrize(
    ("values", "error", "must_name"),
    [
        ({"precision": "fp16"}, FieldError, ["params.yaml: train.precision", "'fp16'", "'fp32'", "'bf16'"]),
        ({"precision": "BF16"}, FieldError, ["train.precision", "'BF16'", "'fp32'", "'bf16'"]),
        ({"channels_last": "yes"}, ParamsTypeError, ["params.yaml: train.channels_last", "'yes'", "true or false"]),
        ({"compile": 1}, ParamsTypeError, ["params.yaml: train.compile", "1", "true or false"]),
    ],
)
def test_bad_option_values_are_named(values, error, must_name):
    expect_error(lambda: from_mapping(TrainConfig, values, "params.yaml: train"), error, must_name)


EPOCHS = {"steps": None, "warmup_steps": None, "epochs": 2, "warmup_epochs": 0.5}


@pytest.mark.parametrize(
    ("values", "must_name"),
    [
        ({"epochs": 2}, ["train.steps: 300", "exactly one of steps and epochs"]),
        ({"steps": None}, ["train.steps: None", "exactly one of steps and epochs"]),
        ({**EPOCHS, "warmup_steps": 3}, ["train.warmup_steps: 3", "exactly one of warmup_steps and warmup_epochs"]),
        ({**EPOCHS, "warmup_epochs": 2}, ["train.warmup_epochs: 2", "[0, epochs) = [0, 2"]),
        ({**EPOCHS, "epochs": 0}, ["train.epochs: 0", "> 0"]),
        ({"warmup_start": 0}, ["train.warmup_start: 0", "(0, 1]"]),
        ({"warmup_start": 1.5}, ["train.warmup_start: 1.5", "(0, 1]"]),
    ],
)
def test_a_schedule_in_epochs_takes_both_lengths_in_epochs_or_names_the_key(values, must_name):
    expect_error(lambda: from_mapping(TrainConfig, values, "params.yaml: train"), FieldError, must_name)


@pytest.mark.parametrize(
    ("values", "num_train", "steps", "warmup"),
    [
        (EPOCHS, 100, 24, 6),  # 100 // 8 = 12 steps per epoch (the last 4 tiles of each epoch are not drawn)
        ({**EPOCHS, "epochs": 1.3, "warmup_epochs": 0.25}, 80, 13, 2),  # 10 per epoch; round(2.5) = 2 (to even)
        ({**EPOCHS, "epochs": 0.01, "warmup_epochs": 0}, 16, 1, 0),  # at least one step
        ({"steps": None, "epochs": 3, "warmup_steps": 5}, 40, 15, 5),  # a warm-up may stay in steps
        ({"steps": 40, "warmup_steps": None, "warmup_epochs": 1}, 24, 40, 3),
    ],
)
def test_epochs_convert_to_whole_batches_of_the_training_split(values, num_train, steps, warmup):
    config = from_mapping(TrainConfig, values, "train").in_steps(num_train)
    assert (config.steps, config.warmup_steps, config.epochs, config.warmup_epochs) == (steps, warmup, None, None)
    assert TrainConfig().in_steps(num_train) == TrainConfig()  # a recipe in steps does not depend on the split


def test_a_recipe_in_epochs_has_no_total_steps_until_converted():
    config = from_mapping(TrainConfig, EPOCHS, "train")
    with pytest.raises(ValueError, match=r"train.steps is null .* in_steps"):
        _ = config.total_steps
    assert config.in_steps(100).total_steps == 24 and TrainConfig().total_steps == 300


def test_a_warm_up_as_long_as_the_converted_schedule_is_named_with_the_split():
    config = from_mapping(TrainConfig, {"steps": None, "epochs": 1, "warmup_steps": 20}, "train")
    expect_error(lambda: config.in_steps(80), FieldError, ["train.warmup_steps: 20", "10 steps", "80 tiles // batch 8"])
    config = from_mapping(TrainConfig, {**EPOCHS, "epochs": 1, "warmup_epochs": 0.97}, "train")
    expect_error(lambda: config.in_steps(80), FieldError, ["train.warmup_epochs: 0.97", "gives 10 warm-up steps"])


def test_options_are_checked_when_built_directly_too():
    expect_error(lambda: TrainConfig(precision="half"), FieldError, ["train.precision", "'half'", "'bf16'"])
    expect_error(lambda: TrainConfig(compile="no"), FieldError, ["train.compile", "'no'", "true or false"])
    expect_error(lambda: TrainConfig(channels_last=None), FieldError, ["train.channels_last", "None", "true or false"])
    config = from_mapping(TrainConfig, {"precision": "bf16", "channels_last": True, "compile": True}, "train")
    assert (config.precision, config.channels_last, config.compile) == ("bf16", True, True)
    assert (TrainConfig().precision, TrainConfig().channels_last, TrainConfig().compile) == ("fp32", False, False)


class ConvProbe:
    """Wraps ``train.build_method``: records ``(output dtype, output is channels_last)`` of every
    Conv2d call made with gradients on (the training steps; the contract check runs without).
    Outputs with one channel or one pixel, whose two formats are the same strides, are skipped."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[torch.dtype, bool]] = []
        original = train.build_method

        def create(*args, **kwargs):
            method = original(*args, **kwargs)
            for module in method.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.register_forward_hook(self.hook)
            return method

        monkeypatch.setattr(train, "build_method", create)

    def hook(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if torch.is_grad_enabled() and output.shape[1] > 1 and output.shape[-2:].numel() > 1:
            last = output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous()
            self.calls.append((output.dtype, last))


def _run(prepared: Path, out: Path, **options) -> dict:
    config = TrainConfig(**{**BASE, **options})
    record = torch.load(train.train(prepared, "muss", {}, config, 0, out, progress=False), weights_only=True)
    record["log"] = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    return record


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def fp32_run(tiny_prepared, tmp_path_factory):
    """The default options (fp32, contiguous, not compiled), with their Conv2d calls."""
    monkeypatch = pytest.MonkeyPatch()
    probe = ConvProbe(monkeypatch)
    try:
        record = _run(tiny_prepared, tmp_path_factory.mktemp("fp32"))
    finally:
        monkeypatch.undo()
    return record, probe.calls


def test_default_options_keep_the_fingerprint_of_configurations_without_them(fp32_run, tiny_prepared, tmp_path):
    record, calls = fp32_run
    assert calls and all(dtype == torch.float32 and not last for dtype, last in calls)
    # a checkpoint written before the options existed (its train section without them) still resumes
    old_train = {k: v for k, v in vars(TrainConfig(**BASE)).items() if k not in NEW_KEYS}
    assert len(old_train) == len(vars(TrainConfig())) - len(NEW_KEYS)
    expected = train.fingerprint(
        {
            "method": "muss",
            "init": record["init"],
            "train": old_train,
            "protocol": {"name": "uniform", "kind": "uniform"},  # train()'s default
            "seed": 0,
            "data": _meta(tiny_prepared),
        }
    )
    assert record["fingerprint"] == expected


def _meta(prepared: Path) -> dict:
    return json.loads((prepared / "meta.json").read_text())


def test_random_rescaling_trains_on_other_pixels_and_is_its_own_run(fp32_run, tiny_prepared, tmp_path):
    record = _run(tiny_prepared, tmp_path / "rescaled", scale_range=[0.5, 2.0])
    reference = fp32_run[0]
    assert all(math.isfinite(line["loss"]) for line in record["log"]) and len(record["log"]) == 3
    assert record["log"][0]["loss"] != reference["log"][0]["loss"]  # the first batch already differs
    assert record["fingerprint"] != reference["fingerprint"]


def test_bf16_autocasts_the_training_step_and_keeps_fp32_weights(fp32_run, tiny_prepared, tmp_path, monkeypatch):
    probe = ConvProbe(monkeypatch)
    record = _run(tiny_prepared, tmp_path / "bf16", precision="bf16")
    assert probe.calls and {dtype for dtype, _ in probe.calls} == {torch.bfloat16}  # autocast really on
    assert all(math.isfinite(line["loss"]) for line in record["log"]) and len(record["log"]) == 3
    assert all(v.dtype == torch.float32 for v in record["state_dict"].values() if v.is_floating_point())
    reference = fp32_run[0]
    assert record["fingerprint"] != reference["fingerprint"]  # another recipe: no resume across precisions
    # bf16 keeps ~3 significant digits: the losses agree to about 1e-2, the weights differ
    assert [line["loss"] for line in record["log"]] == pytest.approx(
        [line["loss"] for line in reference["log"]], rel=2e-2
    )
    assert _max_difference(record["state_dict"], reference["state_dict"]) > 1e-3  # measured 8.6e-3


def test_channels_last_trains_like_contiguous_memory(fp32_run, tiny_prepared, tmp_path, monkeypatch):
    probe = ConvProbe(monkeypatch)
    record = _run(tiny_prepared, tmp_path / "cl", channels_last=True)
    # every convolution writes channels_last (with channels_last weights and images)
    assert probe.calls and all(dtype == torch.float32 and last for dtype, last in probe.calls)
    reference = fp32_run[0]["state_dict"]
    assert record["state_dict"].keys() == reference.keys()
    # other convolution kernels round differently: measured up to 2.3e-5 after the AdamW steps
    # (lr 3e-3, so each step moves a weight by up to ~3e-3)
    for key, value in reference.items():
        torch.testing.assert_close(record["state_dict"][key], value, rtol=1e-4, atol=1e-4)
    method, _ = load_model(tmp_path / "cl" / MODEL_FILE)  # loads into a contiguous model
    for key, value in method.state_dict().items():
        assert torch.equal(value, record["state_dict"][key])


@pytest.mark.slow
def test_compile_trains_each_child_and_keeps_state_dict_keys(fp32_run, tiny_prepared, tmp_path, monkeypatch):
    """torch.compile with the default inductor backend needs ~150 s on 2 CPU cores (C++ codegen);
    this test swaps in dynamo's ``eager`` backend: the same graph capture (and graph breaks),
    no code generation, so it checks the wiring in ~15 s."""
    compiled: list[str] = []
    original = torch.nn.Module.compile

    def compile_eager(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return original(self, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eager)
    try:
        record = _run(tiny_prepared, tmp_path / "compiled", steps=2, checkpoint_every=2, compile=True)
    finally:
        torch._dynamo.reset()
    assert compiled == ["MultiModalEncoder", "AllMLPDecoder"]  # the direct children of MuSS
    assert all(math.isfinite(line["loss"]) for line in record["log"]) and len(record["log"]) == 2
    reference = fp32_run[0]["state_dict"]
    assert record["state_dict"].keys() == reference.keys()  # no "_orig_mod." prefix: checkpoints interchange
    method, _ = load_model(tmp_path / "compiled" / MODEL_FILE)
    assert method.state_dict().keys() == reference.keys()


def test_compile_reaches_the_modules_inside_containers(monkeypatch):
    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    method = create_method("sgma", modalities={"rgb": 3, "dsm": 1}, num_classes=6)
    train.compile_parts(method)
    # SGMA's SGF modules sit in a ModuleList, which is never called: each one is compiled
    assert compiled == ["MultiModalEncoder", "AllMLPDecoder"] + ["SemanticGuidedFusion"] * 4


def test_channels_last_converts_4d_tensors_only():
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Conv3d(2, 3, 3))
    train.to_channels_last(module)
    assert module[0].weight.is_contiguous(memory_format=torch.channels_last) and not module[0].weight.is_contiguous()
    assert module[1].weight.is_contiguous()  # a 5-D weight is left as it is (channels_last needs rank 4)


def test_median_frequency_weights_against_a_direct_count():
    """Eigen & Fergus's median-frequency balancing on hand-built labels: f_c = pixels of c / labelled
    pixels of the tiles holding c; w_c = median(f) / f_c; a class that never appears weighs 0."""
    labels = np.array(
        [
            [[0, 0, 1, 255]],  # 3 labelled pixels: class 0 twice, class 1 once
            [[0, 2, 2, 2]],  # 4: class 0 once, class 2 three times
        ],
        dtype=np.uint8,
    )
    f0, f1, f2 = 3 / 7, 1 / 3, 3 / 4  # class 0 is in both tiles (7 labelled pixels), 1 in the first, 2 in the second
    median = np.median([f0, f1, f2])
    expected = [median / f0, median / f1, median / f2, 0.0]
    assert train.median_frequency_weights(labels, 4, 255) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="no labelled pixel"):
        train.median_frequency_weights(np.full((1, 2, 2), 255, np.uint8), 4, 255)


def test_class_weights_reach_the_cross_entropy_of_every_gradient_method(tiny_prepared):
    data = PreparedDataset(tiny_prepared, "train")
    weighted = train.method_init(data, TrainConfig(**BASE), {}, "muss")
    plain = train.method_init(data, TrainConfig(**{**BASE, "class_weights": "none"}), {}, "muss")
    assert (
        weighted["class_weight"] == train.median_frequency_weights(data.labels, 6, 255) and "class_weight" not in plain
    )
    assert "class_weight" not in train.method_init(data, TrainConfig(**BASE), {}, "pixel-forest")  # no cross-entropy
    method = create_method("muss", **weighted)
    logits, target = torch.randn(2, 6, 4, 4), torch.randint(0, 6, (2, 4, 4))
    target[0, 0] = 255
    weight = torch.tensor(weighted["class_weight"])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.allclose(method.cross_entropy(logits, target), expected)
    assert "class_weight" not in method.state_dict()  # rebuilt from the init arguments
    expect_error(lambda: TrainConfig(class_weights="balanced"), FieldError, ["train.class_weights", "'balanced'",
                                                                             "'median_frequency'"])  # fmt: skip
