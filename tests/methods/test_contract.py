"""The method contract: every registered method keeps it, and a method that breaks it is stopped
with an error naming the method and the fault, before or at its first step."""

from __future__ import annotations

import pytest
import torch
from method_checks import parameters_without_gradient
from tiny import REPO, TINY_PARAMS

from benchmark import checkpoint, evaluate, train
from benchmark.config import TrainConfig, load_params
from benchmark.data.prepared import PreparedDataset
from benchmark.layout import CHECKPOINT_FILE, MODEL_FILE
from benchmark.methods import (
    SegmentationMethod,
    import_method_modules,
    is_training_only,
    masked_mean,
    register_method,
)
from benchmark.methods.catalog import create_method, get_method_class, list_methods
from benchmark.methods.contract import ContractError, check_contract, check_step_result
from benchmark.protocol import apply_availability, enumerate_subsets, subset_mask

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}
NUM_CLASSES = 6
MIXED = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
TRAIN = TrainConfig(**TINY_PARAMS["train"])


def _suite_methods() -> list[str]:
    """Every method the suite ships plus those of params.yaml's ``method_modules`` (a user's own);
    not the throw-away methods tests register."""
    user_modules = load_params(REPO / "params.yaml").get("method_modules") or []
    import_method_modules(user_modules)
    return [
        n
        for n in list_methods()
        if get_method_class(n).__module__.split(".")[0] in ("baselines", "benchmark")
        or get_method_class(n).__module__ in user_modules
    ]


def _batch(size: int = 32, batch: int = 4) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    inputs = {m: torch.randn(batch, c, size, size, generator=g) for m, c in CHANNELS.items()}
    target = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=g)
    target[0, :3] = 255
    return inputs, target


# Constructor arguments that put a method in the phase the checks should see from the first step.
PHASE = {"m3l": {"supervised_warmup": 0}}  # the mean-teacher phase, not the supervised warm-up


def _method(name: str) -> SegmentationMethod:
    torch.manual_seed(0)
    return create_method(name, modalities=CHANNELS, num_classes=NUM_CLASSES, decoder_dim=16, **PHASE.get(name, {}))


def test_the_suite_ships_every_method_of_the_benchmark():
    assert {"muss", "m3l", "imlt", "magic", "sgma", "sgma-sgf", "sgma-mas"} <= set(_suite_methods())


@pytest.mark.parametrize("name", _suite_methods())
def test_forward_loss_and_training_step_on_every_subset(name):
    method = _method(name).train()
    inputs, target = _batch()
    for subset in enumerate_subsets(list(CHANNELS)):
        available = subset_mask(subset, list(CHANNELS), target.shape[0])
        x = apply_availability(inputs, available, list(CHANNELS))
        with torch.no_grad():
            check_contract(name, method, x, target, available, NUM_CLASSES)
        torch.manual_seed(1)
        total = check_step_result(name, method.training_step(x, target, available), step=0)
        assert total.requires_grad, f"{name}: training_step total has no graph on {subset}"
        assert method.predict(x, available)["logits"].shape == (4, NUM_CLASSES, 32, 32)


@pytest.mark.parametrize("name", _suite_methods())
def test_missing_modality_garbage_does_not_change_the_prediction(name):
    method = _method(name).eval()
    inputs, _ = _batch()
    zeros = apply_availability(inputs, MIXED, list(CHANNELS))
    garbage = {
        m: torch.where(MIXED[:, i].view(-1, 1, 1, 1), x, torch.randn_like(x) * 1e3 + 50)
        for i, (m, x) in enumerate(inputs.items())
    }
    a = method.predict(zeros, MIXED)
    b = method.predict(garbage, MIXED)
    torch.testing.assert_close(a["logits"], b["logits"])
    # and each sample's prediction is its own: the same sample alone in a batch gives the same logits
    alone = method.predict({m: x[2:3] for m, x in zeros.items()}, MIXED[2:3])["logits"]
    torch.testing.assert_close(alone, a["logits"][2:3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", _suite_methods())
def test_gradients_reach_every_parameter_that_trains(name):
    method = _method(name).train()
    inputs, _ = _batch()
    torch.manual_seed(0)
    all_available = torch.ones(4, 3, dtype=torch.bool)
    missed = parameters_without_gradient(method, inputs, NUM_CLASSES, [all_available, MIXED])
    assert missed == [], f"{name}: parameters without gradient (declare them frozen or fix the method): {missed}"
    for param_name, param in method.named_parameters():
        if is_training_only(method, param_name):  # declared frozen: an EMA teacher
            assert not param.requires_grad and param.grad is None, param_name
        else:  # nothing else may opt out of the check above by not requiring a gradient
            assert param.requires_grad, f"{name}: {param_name} is frozen but not in training_only_modules"


# --- methods that break the contract ------------------------------------------------------


@register_method("test-wrong-logits")
class WrongLogits(SegmentationMethod):
    def decode(self, features, available, size):
        return {"logits": self.decoder([masked_mean(f, available) for f in features], (5, 5))}


@register_method("test-nan-loss")
class NanLoss(SegmentationMethod):
    def decode(self, features, available, size):
        return {"logits": self.decoder([masked_mean(f, available) for f in features], size)}

    def training_step(self, inputs, target, available):
        total, parts = self.loss(self(inputs, available), target, available)
        return total * float("nan"), {**parts, "aux": float("nan")}


@register_method("test-no-loss")
class NoLoss(torch.nn.Module):
    def __init__(self, modalities, num_classes, **kwargs):
        super().__init__()
        self.conv = torch.nn.Conv2d(sum(modalities.values()), num_classes, 1)

    def forward(self, inputs, available):
        return {"logits": self.conv(torch.cat(list(inputs.values()), dim=1))}


@register_method("test-not-a-module")
class NotAModule:
    def __init__(self, **kwargs):
        pass


@register_method("test-bad-step")
class BadStep(NanLoss):
    def training_step(self, inputs, target, available):
        return float(self.loss(self(inputs, available), target, available)[0].detach())


@register_method("test-bad-predict")
class BadPredict(NanLoss):
    shares_encoder = False  # its own predict(): decoding shared features would bypass it

    def training_step(self, inputs, target, available):
        return self.loss(self(inputs, available), target, available)

    @torch.no_grad()
    def predict(self, inputs, available):
        return {"logits": self(inputs, available)["logits"][:, :2]}


@register_method("test-detached-total")
class DetachedTotal(NanLoss):
    def training_step(self, inputs, target, available):
        total, parts = self.loss(self(inputs, available), target, available)
        return total.detach(), parts


@register_method("test-tensor-part")
class TensorPart(NanLoss):
    def training_step(self, inputs, target, available):
        total, parts = self.loss(self(inputs, available), target, available)
        return total, {**parts, "aux": total}


@register_method("test-reserved-part")
class ReservedPart(NanLoss):
    def training_step(self, inputs, target, available):
        total, parts = self.loss(self(inputs, available), target, available)
        return total, {**parts, "step": 1.0}


@register_method("test-unfrozen-teacher")
class UnfrozenTeacher(NanLoss):
    training_only_modules = ("teacher",)

    def __init__(self, modalities, num_classes, **common):
        super().__init__(modalities, num_classes, **common)
        self.teacher = torch.nn.Conv2d(1, 1, 1)  # forgot requires_grad_(False)


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("test-wrong-logits", ContractError, r"'test-wrong-logits'.*forward\(\)\['logits'\] has shape \(4, 6, 5, 5\), "
         r"expected \(4, 6, 32, 32\)"),
        ("test-nan-loss", FloatingPointError, r"'test-nan-loss'.*non-finite loss nan at step 0.*aux=nan"),
        ("test-no-loss", ContractError, r"'test-no-loss'.*missing loss\(\)"),
        ("test-not-a-module", TypeError, r"'test-not-a-module'.*must be a torch.nn.Module"),
        ("test-bad-step", ContractError, r"'test-bad-step'.*training_step\(\) must return \(total, parts"),
        ("test-detached-total", ContractError, r"'test-detached-total'.*no gradient graph"),
        ("test-tensor-part", ContractError, r"'test-tensor-part'.*part 'aux' must be a Python float, got Tensor"),
        ("test-reserved-part", ContractError, r"'test-reserved-part'.*part 'step' clashes"),
        ("test-unfrozen-teacher", ContractError, r"'test-unfrozen-teacher'.*'teacher.weight'.*training_only_modules"),
    ],
)  # fmt: skip
def test_broken_method_is_stopped_at_its_first_step_naming_it(tmp_path, tiny_prepared, name, error, match):
    with pytest.raises(error, match=match):
        train.train(tiny_prepared, name, {}, TRAIN, 0, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / MODEL_FILE).exists()
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()


def test_broken_prediction_is_stopped_by_the_evaluator_naming_it(tmp_path, tiny_prepared):
    path = train.train(tiny_prepared, "test-bad-predict", {}, TRAIN, 0, tmp_path / "run", progress=False)
    method, _ = checkpoint.load_model(path)
    with pytest.raises(ContractError, match=r"'test-bad-predict'.*predict\(\)\['logits'\] has shape \(\d+, 2, "):
        evaluate.evaluate_subsets(method, PreparedDataset(tiny_prepared, "test"))


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("imlt", {"contrastive_scale": 4}, r"method 'imlt': parameter contrastive_scale=4 must be an encoder scale"),
        ("imlt", {"temperature": 0.0}, r"method 'imlt': parameter temperature=0.0 must be > 0"),
        ("m3l", {"ema_decay": 1.5}, r"method 'm3l': parameter ema_decay=1.5 must be in \[0, 1\)"),
        ("magic", {"robust_fraction": 0.0}, r"method 'magic': parameter robust_fraction=0.0 must be in \(0, 1\]"),
    ],
)
def test_out_of_range_parameters_are_named_at_construction(name, params, match):
    with pytest.raises(ValueError, match=match):
        create_method(name, modalities=CHANNELS, num_classes=NUM_CLASSES, **params)


# --- the shared-encoder path --------------------------------------------------------------


@register_method("test-forward-only")
class ForwardOnly(SegmentationMethod):
    """Claims to share its encoder (the default) but implements forward() only."""

    def forward(self, inputs, available):
        size = next(iter(inputs.values())).shape[-2:]
        return {"logits": self.decoder([masked_mean(f, available) for f in self.encoder(inputs, available)], size)}


@register_method("test-mixing-encoder")
class MixingEncoder(NanLoss):
    """Claims to share its encoder, but its features mix in the other available modalities."""

    def training_step(self, inputs, target, available):
        return self.loss(self(inputs, available), target, available)

    def encode(self, inputs, available):
        features = self.encoder(inputs, available)
        return [f + masked_mean(f, available).unsqueeze(1) for f in features]


@register_method("test-early-fusion")
class EarlyFusion(torch.nn.Module):
    """Concatenates the modalities' channels before one conv: it cannot share an encoder per modality,
    so it says so and is evaluated by one predict() per subset."""

    shares_encoder = False

    def __init__(self, modalities, num_classes, **common):
        super().__init__()
        self.conv = torch.nn.Conv2d(sum(modalities.values()), num_classes, 3, padding=1)
        self.calls = 0

    def forward(self, inputs, available):
        return {"logits": self.conv(torch.cat(list(inputs.values()), dim=1))}

    def loss(self, output, target, available):
        ce = torch.nn.functional.cross_entropy(output["logits"], target, ignore_index=255)
        return ce, {"ce": float(ce.detach())}

    def training_step(self, inputs, target, available):
        return self.loss(self(inputs, available), target, available)

    def after_optimizer_step(self):
        pass

    @torch.no_grad()
    def predict(self, inputs, available):
        self.calls += 1
        return self(inputs, available)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("test-forward-only", r"'test-forward-only': shares_encoder is True but .*does not implement decode\(\).*"
         r"shares_encoder = False"),
        ("test-mixing-encoder", r"'test-mixing-encoder': shares_encoder is True but decoding the shared features "
         r"of the subset .* differs from predict\(\) by up to"),
    ],
)  # fmt: skip
def test_a_method_that_cannot_share_its_encoder_is_stopped_at_its_first_step(tmp_path, tiny_prepared, name, match):
    with pytest.raises(ContractError, match=match):
        train.train(tiny_prepared, name, {}, TRAIN, 0, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / MODEL_FILE).exists()


def test_the_evaluator_stops_a_method_whose_shared_path_disagrees(tiny_prepared):
    method = _method("test-mixing-encoder").eval()
    test = PreparedDataset(tiny_prepared, "test")
    with pytest.raises(ContractError, match=r"'test-mixing-encoder': shares_encoder is True but decoding"):
        evaluate.evaluate_subsets(method, test, batch_size=4)
    # the naive path does not need the encoder to be per-modality
    evaluate.evaluate_subsets(method, test, batch_size=4, shared_encoder=False)


def test_a_method_that_opts_out_is_evaluated_by_one_predict_per_subset(tmp_path, tiny_prepared):
    path = train.train(tiny_prepared, "test-early-fusion", {}, TRAIN, 0, tmp_path / "run", progress=False)
    method, _ = checkpoint.load_model(path)
    test = PreparedDataset(tiny_prepared, "test")
    evaluation = evaluate.evaluate_subsets(method, test, batch_size=len(test))
    assert method.calls == 7 and len(evaluation.confusion) == 7
