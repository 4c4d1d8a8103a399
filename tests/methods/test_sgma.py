"""SGMA: SGF shapes and masking, robustness maps, MAS probabilities, variants, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from method_checks import parameters_without_gradient
from tiny import TINY_PARAMS

from benchmark import train
from benchmark.config import TrainConfig
from benchmark.methods.catalog import create_method
from benchmark.methods.sgma import ModalityProjector, SemanticGuidedFusion, grouped_projection, mas_probabilities
from benchmark.models.backbones import STRIDES
from benchmark.protocol import apply_availability, enumerate_subsets, subset_mask

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}
NAMES = list(CHANNELS)
VARIANTS = ["sgma", "sgma-sgf", "sgma-mas"]
# one sample per non-empty subset of the 3 modalities, then the full set again
MIXED = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)


def _batch(b: int = 7, size: int = 32, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, c, size, size, generator=g) for m, c in CHANNELS.items()}


def _method(name: str, modalities: dict[str, int] = CHANNELS, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method(name, modalities=modalities, num_classes=6, decoder_dim=16, **kwargs)


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_on_every_subset_and_on_a_mixed_batch(name):
    method = _method(name).eval()
    x = _batch()
    batches = [subset_mask(s, NAMES, 7) for s in enumerate_subsets(NAMES)] + [MIXED]
    for available in batches:
        out = method.predict(apply_availability(x, available, NAMES), available)
        assert out["logits"].shape == (7, 6, 32, 32)
        assert [tuple(r.shape) for r in out["robustness"]] == [(7, 3, 32 // s, 32 // s) for s in STRIDES]


def test_sgf_module_shapes_and_prototypes_match_a_direct_computation():
    torch.manual_seed(0)
    sgf = SemanticGuidedFusion(NAMES, channels=16, num_classes=4, head_dim=8)  # 2 heads
    features = torch.randn(7, 3, 16, 5, 6)
    fused, robustness = sgf(features, MIXED)
    assert fused.shape == (7, 16, 5, 6) and robustness.shape == (7, 3, 5, 6)

    semantic = sgf.project(features, MIXED).detach()
    prototypes = sgf.prototypes(semantic, MIXED).detach().numpy()
    weight = sgf.semantic_filter.weight.detach().numpy()[:, :, 0, 0]  # [K, C]
    bias = sgf.semantic_filter.bias.detach().numpy()
    for b in range(7):
        kept = np.flatnonzero(MIXED[b].numpy())
        f = semantic[b, kept].numpy().transpose(0, 2, 3, 1).reshape(-1, 16)  # available pixels x C
        responses = f @ weight.T + bias  # pixels x K
        softmax = np.exp(responses - responses.max(0)) / np.exp(responses - responses.max(0)).sum(0)
        np.testing.assert_allclose(prototypes[b], softmax.T @ f, rtol=1e-4, atol=1e-5)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sgf_reference(sgf: SemanticGuidedFusion, semantic: np.ndarray, prototypes: np.ndarray, available: np.ndarray):
    """SP and RP written per pixel, per head and per class from the description (float64 numpy); with
    ``sgf.residual``, pre-norm blocks on a residual stream that starts at the mean of the MP features."""

    def conv1x1(conv, x):  # x: [..., C_in]
        w = conv.weight.detach().double().numpy().reshape(conv.weight.shape[0], -1)
        return x @ w.T + conv.bias.detach().double().numpy()

    def norm(layer, x):  # LayerNorm over the last axis
        if layer is None:
            return x
        centred = x - x.mean(-1, keepdims=True)
        scaled = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + layer.eps)
        return scaled * layer.weight.detach().double().numpy() + layer.bias.detach().double().numpy()

    b_, m_, c_, h_, w_ = semantic.shape
    heads, d = sgf.heads, c_ // sgf.heads
    fused = np.zeros((b_, c_, h_, w_))
    robustness = np.zeros((b_, m_, h_, w_))
    for b in range(b_):
        kept = np.flatnonzero(available[b])
        query_sp = conv1x1(sgf.sp_query, norm(sgf.sp_norm, prototypes[b]))  # [K, C]
        for y in range(h_):
            for x in range(w_):
                tokens = semantic[b, kept, :, y, x]  # [M_avail, C]
                stream = tokens.mean(0) if sgf.residual else 0.0
                sp_key, sp_value, rp_key, rp_value = np.split(
                    conv1x1(sgf.key_value, norm(sgf.token_norm, tokens)), 4, axis=1
                )
                per_class = np.zeros((len(query_sp), c_))  # each prototype's attention output, per class
                for g in range(heads):
                    part = slice(g * d, (g + 1) * d)
                    attention = _softmax(query_sp[:, part] @ sp_key[:, part].T / np.sqrt(d))  # [K, M_avail]
                    per_class[:, part] = attention @ sp_value[:, part]
                reference = stream + conv1x1(sgf.sp_out, per_class).mean(0)  # average of the K outputs
                query_rp = conv1x1(sgf.rp_query, norm(sgf.rp_norm, reference))
                mixed = np.zeros(c_)
                for g in range(heads):
                    part = slice(g * d, (g + 1) * d)
                    attention = _softmax(query_rp[part] @ rp_key[:, part].T / np.sqrt(d))  # [M_avail]
                    mixed[part] = attention @ rp_value[:, part]
                    robustness[b, kept, y, x] += attention / heads
                fused[b, :, y, x] = (reference if sgf.residual else 0.0) + conv1x1(sgf.rp_out, mixed)
    return fused, robustness


def _randomise(sgf: SemanticGuidedFusion) -> SemanticGuidedFusion:
    """``sgf`` with random output projections and LayerNorm affines (zero-init and unit norms hide terms)."""
    with torch.no_grad():
        for module in (sgf.sp_out, sgf.rp_out):
            for p in module.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
        for norm in (n for n in (sgf.token_norm, sgf.sp_norm, sgf.rp_norm) if n is not None):
            norm.weight.copy_(1 + 0.3 * torch.randn_like(norm.weight))
            norm.bias.copy_(0.3 * torch.randn_like(norm.bias))
    return sgf


@pytest.mark.parametrize("residual", [False, True])
def test_sgf_spatial_and_robustness_perceptrons_match_a_per_pixel_reference(residual):
    torch.manual_seed(0)
    sgf = _randomise(SemanticGuidedFusion(NAMES, 16, 4, head_dim=8, residual=residual, zero_init=residual))  # 2 heads
    features = torch.randn(7, 3, 16, 3, 4)
    with torch.no_grad():
        fused, robustness = sgf(features, MIXED)
        semantic = sgf.project(features, MIXED).double().numpy()
        prototypes = sgf.prototypes(sgf.project(features, MIXED), MIXED).double().numpy()
    expected_fused, expected_robustness = _sgf_reference(sgf, semantic, prototypes, MIXED.numpy())
    np.testing.assert_allclose(fused.numpy(), expected_fused, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(robustness.numpy(), expected_robustness, rtol=1e-4, atol=1e-6)


def test_sgf_hides_missing_features_by_the_mask_not_by_zeros():
    # the encoder already zeroes missing features; SGF must not rely on it
    torch.manual_seed(0)
    sgf = SemanticGuidedFusion(NAMES, channels=16, num_classes=4, head_dim=8)
    features = torch.randn(7, 3, 16, 5, 6)
    clean = torch.where(MIXED.view(7, 3, 1, 1, 1), features, 0.0)
    for junk in (float("nan"), 1e4):
        dirty = torch.where(MIXED.view(7, 3, 1, 1, 1), features, junk)
        for a, b in zip(sgf(dirty, MIXED), sgf(clean, MIXED)):
            torch.testing.assert_close(a, b)
    # the method's own path (tokens in encode, fuse per subset) does not zero: finite junk is ignored
    dirty = torch.where(MIXED.view(7, 3, 1, 1, 1), features, 1e4)
    for a, b in zip(sgf.fuse(*sgf.tokens(dirty), MIXED), sgf(clean, MIXED)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", VARIANTS)
def test_robustness_is_a_distribution_over_available_modalities(name):
    method = _method(name).eval()
    out = method.predict(apply_availability(_batch(), MIXED, NAMES), MIXED)
    for r in out["robustness"]:
        assert bool((r >= 0).all())
        torch.testing.assert_close(r.sum(dim=1), torch.ones_like(r[:, 0]))
        missing = ~MIXED.view(7, 3, 1, 1).expand_as(r)
        assert bool((r[missing] == 0).all())  # exactly zero, not small


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("garbage", ["large", "nan"])
def test_missing_modality_garbage_does_not_change_outputs(name, garbage):
    method = _method(name).eval()
    x = apply_availability(_batch(), MIXED, NAMES)

    def junk(v: torch.Tensor) -> torch.Tensor:
        return torch.full_like(v, float("nan")) if garbage == "nan" else torch.randn_like(v) * 1e4

    dirty = {m: torch.where(MIXED[:, i].view(-1, 1, 1, 1), v, junk(v)) for i, (m, v) in enumerate(x.items())}
    clean_out, dirty_out = method.predict(x, MIXED), method.predict(dirty, MIXED)
    torch.testing.assert_close(dirty_out["logits"], clean_out["logits"])
    for a, b in zip(dirty_out["robustness"], clean_out["robustness"]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", VARIANTS)
def test_permuting_modalities_permutes_robustness_and_keeps_the_prediction(name):
    method = _method(name).eval()
    order = ["nir", "rgb", "dsm"]
    permuted = _method(name, {m: CHANNELS[m] for m in order}).eval()
    permuted.load_state_dict(method.state_dict())  # stems and projectors are keyed by modality name
    index = [NAMES.index(m) for m in order]
    x = apply_availability(_batch(), MIXED, NAMES)
    out = method.predict(x, MIXED)
    out_perm = permuted.predict({m: x[m] for m in order}, MIXED[:, index])
    torch.testing.assert_close(out_perm["logits"], out["logits"], rtol=1e-4, atol=1e-5)
    for a, b in zip(out_perm["robustness"], out["robustness"]):
        torch.testing.assert_close(a, b[:, index], rtol=1e-4, atol=1e-6)


def test_mas_probabilities_are_normalised_inverse_robustness():
    g = torch.Generator().manual_seed(3)
    robustness = []
    for size in (8, 4, 2, 1):
        raw = torch.rand(7, 3, size, size, generator=g) + 0.05
        raw = raw * MIXED.view(7, 3, 1, 1)
        robustness.append(raw / raw.sum(dim=1, keepdim=True))
    probabilities = mas_probabilities(robustness, MIXED).numpy()

    expected = np.zeros((7, 3))
    for b in range(7):
        kept = np.flatnonzero(MIXED[b].numpy())
        per_scale = []
        for r in robustness:
            inverse = 1.0 / r[b, kept].numpy().reshape(len(kept), -1)  # modalities x pixels
            per_scale.append((inverse / inverse.sum(0)).mean(1))
        expected[b, kept] = np.mean(per_scale, axis=0)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-6)
    assert (probabilities[~MIXED.numpy()] == 0).all()
    # no gradient flows through the sampling distribution
    assert not mas_probabilities([r.requires_grad_() for r in robustness], MIXED).requires_grad


@pytest.mark.parametrize("name", ["sgma", "sgma-mas"])
def test_mas_branch_trains_on_one_available_modality_per_sample(name, monkeypatch):
    method = _method(name)
    seen = []
    original = type(method).decode_single

    def spy(self, features, single, size):
        seen.append(single.clone())
        return original(self, features, single, size)

    monkeypatch.setattr(type(method), "decode_single", spy)
    x = apply_availability(_batch(), MIXED, NAMES)
    target = torch.randint(0, 6, (7, 32, 32))
    for _ in range(20):
        method.training_step(x, target, MIXED)
    assert len(seen) == 20
    for single in seen:
        assert single.sum(dim=1).tolist() == [1] * 7  # exactly one modality per sample
        assert not bool((single & ~MIXED).any())  # never a missing one
    picks = torch.stack(seen).float().mean(0)  # samples with 2-3 modalities do vary their pick
    assert bool(((picks[3:] > 0) & (picks[3:] < 1)).any())


@pytest.mark.parametrize("name", ["sgma", "sgma-mas"])
def test_mas_prediction_depends_on_the_sampled_modality_only(name):
    method = _method(name).eval()
    x = apply_availability(_batch(), MIXED, NAMES)
    with torch.no_grad():
        features = method.encode(x, MIXED)
        single = torch.zeros_like(MIXED)
        single[torch.arange(7), MIXED.float().argmax(dim=1)] = True  # first available modality
        noisy = [torch.where(single.view(7, 3, 1, 1, 1), f, torch.randn_like(f) * 100) for f in features]
        a = method.decode_single(features, single, (32, 32))
        b = method.decode_single(noisy, single, (32, 32))
    torch.testing.assert_close(a, b)


def test_sgma_mas_scorer_does_not_train_the_encoder():
    method = _method("sgma-mas")
    x = apply_availability(_batch(), MIXED, NAMES)
    output = method(x, MIXED)
    target = torch.randint(0, 6, (7, 32, 32))
    method.score_loss(output["scored"], target).backward()
    assert all(p.grad is None for p in method.encoder.parameters())
    assert all(p.grad is not None for p in method.sgf.parameters())


def test_loss_is_weighted_sum_of_the_two_branches():
    method = _method("sgma", lambda_sgf=2.0, lambda_mas=1.0)
    x = apply_availability(_batch(), MIXED, NAMES)
    target = torch.randint(0, 6, (7, 32, 32))
    total, parts = method.training_step(x, target, MIXED)
    assert float(total.detach()) == pytest.approx(2 * parts["ce_sgf"] + parts["ce_mas"], rel=1e-5)
    only_sgf = _method("sgma-sgf", lambda_sgf=2.0)
    total, parts = only_sgf.training_step(x, target, MIXED)
    assert "ce_mas" not in parts and float(total.detach()) == pytest.approx(2 * parts["ce_sgf"], rel=1e-5)


def test_sgma_mas_predicts_with_plain_fusion():
    # sgma-mas fuses by masked mean: its logits do not depend on the scorer's weights
    method = _method("sgma-mas").eval()
    x = apply_availability(_batch(), MIXED, NAMES)
    before = method.predict(x, MIXED)
    with torch.no_grad():
        for p in method.sgf.parameters():
            p.add_(torch.randn_like(p))
    after = method.predict(x, MIXED)
    torch.testing.assert_close(after["logits"], before["logits"])
    assert not torch.allclose(after["robustness"][0], before["robustness"][0])


@pytest.mark.parametrize("name, options", [*((v, {}) for v in VARIANTS), ("sgma", {"branch_pointwise": True})])
def test_gradients_reach_every_parameter(name, options):
    assert parameters_without_gradient(_method(name, **options), _batch(), num_classes=6) == []


@pytest.mark.slow  # trains 60 steps
def test_short_seeded_training_run_lowers_the_loss(tmp_path, tiny_prepared):
    # the unweighted loss: on 16 tiny tiles the class-weighted one is dominated by the few rare-class pixels
    # of each batch and too noisy over 60 steps for a fixed threshold
    config = TrainConfig(
        **{**TINY_PARAMS["train"], "steps": 60, "warmup_steps": 5, "checkpoint_every": 60, "class_weights": "none"}
    )
    train.train(tiny_prepared, "sgma", {}, config, 0, tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    first = np.mean([r["loss"] for r in log[:15]])
    last = np.mean([r["loss"] for r in log[-15:]])
    assert {"ce_sgf", "ce_mas"} <= set(log[0])
    print(f"sgma loss: first 15 steps {first:.3f}, last 15 steps {last:.3f}")
    assert last < 0.85 * first, (first, last)


@pytest.mark.parametrize("branch_pointwise", [False, True])
@pytest.mark.parametrize("size", [16, 3, 1])
def test_grouped_projection_equals_each_modality_projector_alone(size, branch_pointwise):
    # the fast path (grouped convs, kernels cropped on small maps) computes the plain MP
    torch.manual_seed(0)
    projectors = [ModalityProjector(8, branch_pointwise) for _ in range(3)]
    features = torch.randn(2, 3, 8, size, size + 1)
    plain = torch.stack([p(features[:, i]) for i, p in enumerate(projectors)], dim=1)
    torch.testing.assert_close(grouped_projection(projectors, features), plain, rtol=1e-5, atol=1e-6)


# --- the options of docs/sgma.md ------------------------------------------------------------


def test_zero_initialised_projections_start_as_the_residual_stream():
    # at initialisation SGF is the masked mean of the MP features; the method is then plain fusion of them
    torch.manual_seed(0)
    sgf = SemanticGuidedFusion(NAMES, channels=16, num_classes=4, head_dim=8)  # residual + zero_init by default
    features = torch.randn(7, 3, 16, 5, 6)
    fused, robustness = sgf(features, MIXED)
    semantic = sgf.project(features, MIXED)
    kept = MIXED.view(7, 3, 1, 1, 1).float()
    torch.testing.assert_close(fused, (semantic * kept).sum(1) / kept.sum(1))
    torch.testing.assert_close(robustness.sum(1), torch.ones(7, 5, 6))
    legacy = SemanticGuidedFusion(NAMES, channels=16, num_classes=4, head_dim=8, residual=False, zero_init=False)
    assert legacy.token_norm is None
    assert not torch.allclose(legacy(features, MIXED)[0], legacy.project(features, MIXED).mean(1), atol=1e-2)


def test_zero_init_without_a_residual_is_refused():
    with pytest.raises(ValueError, match="zero_init"):
        _method("sgma", residual=False, zero_init=True)
    for bad in ({"lambda_csf": -1.0}, {"prototype_temperature": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _method("sgma", **bad)


def test_temperature_changes_the_pooling_weights():
    torch.manual_seed(0)
    responses = torch.randn(7, 3, 4, 5, 6)
    weights = {}
    for t in (1.0, 0.5):
        sgf = SemanticGuidedFusion(NAMES, channels=16, num_classes=4, head_dim=8, prototype_temperature=t)
        weights[t] = sgf.pooling_weights(responses, MIXED).numpy()
    for b in range(7):
        kept = np.flatnonzero(MIXED[b].numpy())
        c = responses[b].numpy().transpose(1, 0, 2, 3)  # [K, M, h, w]
        for t, w in weights.items():
            expected = np.zeros_like(c)
            expected[:, kept] = _softmax(c[:, kept].reshape(4, -1) / t).reshape(4, len(kept), 5, 6)
            np.testing.assert_allclose(w[b], expected.reshape(4, -1), rtol=1e-5, atol=1e-7)
    assert np.abs(weights[1.0] - weights[0.5]).max() > 1e-3


def test_auxiliary_class_loss_reaches_the_semantic_filter():
    # one modality per sample: the modality softmaxes are constant, so only the auxiliary CE trains CSF
    single = torch.eye(3, dtype=torch.bool)[torch.tensor([0, 1, 2, 0, 1, 2, 0])]
    x = apply_availability(_batch(), single, NAMES)
    target = torch.randint(0, 6, (7, 32, 32), generator=torch.Generator().manual_seed(0))
    grads = {}
    for weight in (0.0, 0.4):
        method = _method("sgma-sgf", lambda_csf=weight, zero_init=False)
        total, parts = method.training_step(x, target, single)
        total.backward()
        grads[weight] = sum(float(sgf.semantic_filter.weight.grad.abs().sum()) for sgf in method.sgf)
    assert grads[0.0] == 0.0 and grads[0.4] > 0
    # its value: CE of each available pair's upsampled responses, averaged over pairs' pixels, then scales
    responses = method(x, single)["class_responses"]
    expected = []
    for r in responses:
        nll = []
        for b, m in single.nonzero().tolist():
            up = torch.nn.functional.interpolate(r[b : b + 1, m], size=(32, 32), mode="bilinear", align_corners=False)
            log_p = up[0].double().log_softmax(0).detach().numpy()
            nll.append(-np.take_along_axis(log_p, target[b][None].numpy(), 0).mean())
        expected.append(np.mean(nll))
    assert parts["ce_csf"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert float(total.detach()) == pytest.approx(2 * parts["ce_sgf"] + 0.4 * parts["ce_csf"], rel=1e-5)


@pytest.mark.parametrize("options", [{}, {"residual": False, "zero_init": False}])
def test_gradient_reaches_csf_and_sp_from_two_available_modalities(options):
    method = _method("sgma-sgf", **options)
    x = _batch()
    target = torch.randint(0, 6, (7, 32, 32), generator=torch.Generator().manual_seed(0))
    every = torch.ones(7, 3, dtype=torch.bool)
    optimiser = torch.optim.SGD(method.parameters(), lr=0.1)  # zero-init blocks the upstream gradient at step 0 only
    method.training_step(x, target, every)[0].backward()
    optimiser.step()

    def attention_gradient(rows: slice) -> float:
        available = MIXED[rows]
        method.zero_grad(set_to_none=False)
        inputs = apply_availability({m: v[rows] for m, v in x.items()}, available, NAMES)
        method.training_step(inputs, target[rows], available)[0].backward()
        modules = [m for sgf in method.sgf for m in (sgf.semantic_filter, sgf.sp_query, sgf.rp_query)]
        return sum(float(p.grad.abs().sum()) for m in modules for p in m.parameters())

    assert attention_gradient(slice(3, 7)) > 0  # two or three modalities per sample
    assert attention_gradient(slice(0, 3)) == 0.0  # one modality: a softmax over one entry is constant
