"""IMLT: InfoNCE, masked fusion-token attention, reconstruction target and selection, training step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_checks import parameters_without_gradient

import baselines.imlt  # noqa: F401  (registers "imlt")
from baselines.imlt import ModalityFusionBlock, choose_hidden, info_nce, num_heads
from benchmark.methods.catalog import create_method

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}
# one sample per non-empty subset of the 3 modalities, then the full set again
MIXED = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)


def _batch(b: int = 4, size: int = 32, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, c, size, size, generator=g) for m, c in CHANNELS.items()}


def _method(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method("imlt", modalities=CHANNELS, num_classes=6, decoder_dim=16, **kwargs)


# ---------------------------------------------------------------- InfoNCE


def _info_nce_numpy(a: np.ndarray, b: np.ndarray, temperature: float) -> float:
    logits = a @ b.T / temperature

    def ce(x: np.ndarray) -> float:  # mean over rows of -log softmax(x)[i, i], via log-sum-exp
        top = x.max(axis=1, keepdims=True)
        lse = (top + np.log(np.exp(x - top).sum(axis=1, keepdims=True)))[:, 0]
        return float(np.mean(lse - np.diag(x)))

    return (ce(logits) + ce(logits.T)) / 2


def test_info_nce_matches_a_log_sum_exp_computation():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    for temperature in (0.1, 0.5, 2.0):
        expected = _info_nce_numpy(a.numpy(), b.numpy(), temperature)
        assert float(info_nce(a, b, temperature)) == pytest.approx(expected, rel=1e-10)


def test_info_nce_is_lower_for_aligned_than_for_shuffled_pairs():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(32, 16, generator=g), dim=1)
    derangement = torch.roll(torch.arange(32), 1)  # no index stays in place
    aligned = float(info_nce(a, a, 0.1))
    shuffled = float(info_nce(a, a[derangement], 0.1))
    assert aligned < shuffled - 1.0


def test_info_nce_of_orthonormal_pairs_has_the_closed_form_and_vanishes_as_temperature_shrinks():
    n = 6
    a = torch.eye(n, dtype=torch.float64)  # diagonal logits 1/T, off-diagonal 0
    for temperature in (1.0, 0.5, 0.1):
        expected = math.log(1 + (n - 1) * math.exp(-1 / temperature))
        assert float(info_nce(a, a, temperature)) == pytest.approx(expected, rel=1e-10)
    # a near one-hot version: the loss decreases with the temperature towards 0
    noisy = F.normalize(a + 0.05 * torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=a.dtype), dim=1)
    losses = [float(info_nce(noisy, noisy, t)) for t in (1.0, 0.3, 0.1, 0.03, 0.01)]
    assert all(x > y for x, y in zip(losses, losses[1:]))
    assert losses[-1] < 1e-8


# ---------------------------------------------------------------- fusion block


def test_num_heads_is_the_largest_divisor_not_above_channels_over_head_dim():
    cases = {(16, 32): 1, (64, 32): 2, (128, 32): 4, (96, 32): 3, (48, 32): 1, (36, 8): 4, (28, 8): 2, (4, 32): 1}
    assert {k: num_heads(*k) for k in cases} == cases


def _randomised_block(channels: int, head_dim: int, seed: int = 0) -> ModalityFusionBlock:
    torch.manual_seed(seed)
    block = ModalityFusionBlock(channels, num_modalities=3, num_fusion_tokens=2, head_dim=head_dim)
    with torch.no_grad():
        for p in block.parameters():  # every weight (LayerNorm affine included) far from its default
            p.copy_(torch.randn_like(p) * 0.7)
    return block.double()


def _block_reference(block: ModalityFusionBlock, keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The pre-norm block written out for ONE pixel: ``keys: [L, C]`` (the available modality tokens,
    embeddings added, then the fusion tokens), ``queries: [Q, C]`` -> ``[Q, C]``."""

    def w(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy()

    def layer_norm(x: np.ndarray, norm: torch.nn.LayerNorm) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + norm.eps) * w(norm.weight) + w(norm.bias)

    def linear(x: np.ndarray, layer: torch.nn.Linear) -> np.ndarray:
        return x @ w(layer.weight).T + w(layer.bias)

    def gelu(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))

    c = queries.shape[1]
    heads = block.heads
    d = c // heads
    q = linear(layer_norm(queries, block.norm1), block.query)
    kv = linear(layer_norm(keys, block.norm1), block.key_value)
    k, v = kv[:, :c], kv[:, c:]
    mixed = np.zeros_like(q)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        logits = q[:, s] @ k[:, s].T / math.sqrt(d)
        weights = np.exp(logits - logits.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        mixed[:, s] = weights @ v[:, s]
    x = queries + linear(mixed, block.out)
    hidden = gelu(linear(layer_norm(x, block.norm2), block.mlp[0]))
    return x + linear(hidden, block.mlp[2])


@pytest.mark.parametrize(("channels", "head_dim"), [(4, 32), (8, 4)])  # 1 head, 2 heads
def test_fused_output_matches_pre_norm_attention_over_the_available_tokens_only(channels, head_dim):
    block = _randomised_block(channels, head_dim)
    g = torch.Generator().manual_seed(1)
    features = torch.randn(7, 3, channels, 2, 3, generator=g, dtype=torch.float64) * 2  # missing ones NOT zero
    fused = block(features, MIXED).detach().numpy()
    assert fused.shape == (7, channels, 2, 3)
    embed, fusion = block.modality_embed.detach().numpy(), block.fusion_tokens.detach().numpy()
    for b in range(7):
        kept = np.flatnonzero(MIXED[b].numpy())
        for y in range(2):
            for x in range(3):
                keys = np.concatenate([features[b, kept, :, y, x].numpy() + embed[kept], fusion])
                expected = _block_reference(block, keys, fusion).mean(0)
                np.testing.assert_allclose(fused[b, :, y, x], expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("channels", "head_dim"), [(4, 32), (8, 4)])
def test_reconstruction_query_matches_the_reference_and_never_sees_the_hidden_modality(channels, head_dim):
    block = _randomised_block(channels, head_dim)
    g = torch.Generator().manual_seed(2)
    features = torch.randn(4, 3, channels, 2, 2, generator=g, dtype=torch.float64)
    available = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.bool)
    hidden = torch.tensor([0, 1, 2, 2])
    keep = available & ~F.one_hot(hidden, 3).bool()
    predicted = block.reconstruct(features, keep, hidden).detach()
    assert predicted.shape == (4, channels, 2, 2)

    embed, fusion = block.modality_embed.detach().numpy(), block.fusion_tokens.detach().numpy()
    query = (block.mask_token.detach().numpy() + embed[hidden.numpy()])[:, None]  # [B, 1, C]
    head_w, head_b = block.reconstruction_head.weight.detach().numpy(), block.reconstruction_head.bias.detach().numpy()
    for b in range(4):
        kept = np.flatnonzero(keep[b].numpy())
        for y in range(2):
            for x in range(2):
                keys = np.concatenate([features[b, kept, :, y, x].numpy() + embed[kept], fusion])
                expected = _block_reference(block, keys, query[b])[0] @ head_w.T + head_b
                np.testing.assert_allclose(predicted[b, :, y, x], expected, rtol=1e-9, atol=1e-10)

    # the hidden modality's features (whatever they hold) do not reach its prediction
    altered = features.clone()
    altered[torch.arange(4), hidden] = 1e3 * torch.randn(4, channels, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(block.reconstruct(altered, keep, hidden).detach(), predicted)


# ---------------------------------------------------------------- reconstruction


def test_hidden_modality_is_available_never_the_only_one_and_uniform():
    torch.manual_seed(0)
    draws = 3000
    counts = torch.zeros(7, 3)
    for _ in range(draws):
        hidden, takes_part = choose_hidden(MIXED)
        assert takes_part.tolist() == [False, False, False, True, True, True, True]
        assert bool(MIXED[torch.arange(7), hidden].all())  # always an available modality
        counts += F.one_hot(hidden, 3).float()
    frequencies = counts[3:] / draws
    expected = MIXED[3:].float() / MIXED[3:].sum(1, keepdim=True)
    torch.testing.assert_close(frequencies, expected, atol=0.04, rtol=0)


def test_reconstruction_loss_target_is_the_hidden_modalitys_normalised_feature():
    method = _method()
    g = torch.Generator().manual_seed(3)
    available = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    hidden = torch.tensor([1, 0, 2, 2])
    takes_part = torch.tensor([True, False, True, False])
    features = [
        torch.randn(4, 3, c, s, s, generator=g, dtype=torch.float64)
        for c, s in zip(method.encoder.channels, (8, 4, 2, 1))
    ]
    method = method.double()
    biases = []
    with torch.no_grad():  # the head predicts a constant vector: the loss depends on the target alone
        for block in method.fusion:
            block.reconstruction_head.weight.zero_()
            biases.append(torch.randn(block.reconstruction_head.bias.shape, generator=g, dtype=torch.float64))
            block.reconstruction_head.bias.copy_(biases[-1])
    loss = method.reconstruction_loss(features, available, hidden, takes_part)

    per_scale = []
    for f, bias in zip(features, biases):
        errors = []
        for b in (0, 2):  # the samples that take part
            t = f[b, hidden[b]].numpy().reshape(f.shape[2], -1)  # [C, pixels] of the hidden modality
            t = (t - t.mean(0)) / np.sqrt(t.var(0) + 1e-5)  # layer norm over C, no affine
            errors.append((bias.numpy()[:, None] - t) ** 2)
        per_scale.append(np.concatenate(errors, axis=1).mean())
    assert float(loss.detach()) == pytest.approx(np.mean(per_scale), rel=1e-9)


def test_reconstruction_loss_is_zero_with_a_graph_when_every_sample_has_one_modality():
    method = _method()
    available = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    features = method.encoder(_batch(), available)
    hidden, takes_part = choose_hidden(available)
    loss = method.reconstruction_loss(features, available, hidden, takes_part)
    assert float(loss.detach()) == 0.0 and loss.requires_grad


# ---------------------------------------------------------------- contrastive


def test_contrastive_loss_pairs_only_locations_where_both_modalities_are_available():
    method = _method().double()
    g = torch.Generator().manual_seed(4)
    c = method.encoder.channels[2]
    features = torch.randn(3, 3, c, 2, 2, generator=g, dtype=torch.float64)
    available = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    loss = float(method.contrastive_loss(features, available).detach())

    def embed(b: list[int], m: int) -> torch.Tensor:  # [len(b) * 4, D]
        return F.normalize(method.projector(features[b, m].permute(0, 2, 3, 1).reshape(-1, c)), dim=1).detach()

    pairs = {(0, 1): [0, 2], (0, 2): [2], (1, 2): [1, 2]}  # samples where both are available
    expected = np.mean([_info_nce_numpy(embed(s, m).numpy(), embed(s, n).numpy(), 0.1) for (m, n), s in pairs.items()])
    assert loss == pytest.approx(expected, rel=1e-9)
    # no pair shares a location: zero, with a graph
    single = method.contrastive_loss(features, torch.eye(3, dtype=torch.bool))
    assert float(single.detach()) == 0.0 and single.requires_grad


def test_contrastive_loss_subsamples_at_most_max_tokens_locations(monkeypatch):
    method = _method(max_tokens=5)
    features = torch.randn(2, 3, method.encoder.channels[2], 4, 4)  # 32 shared locations per pair
    seen = []
    monkeypatch.setattr(baselines.imlt, "info_nce", lambda a, b, t: seen.append(a.shape[0]) or info_nce(a, b, t))
    method.contrastive_loss(features, torch.ones(2, 3, dtype=torch.bool))
    assert seen == [5, 5, 5]


# ---------------------------------------------------------------- training


def test_every_trainable_parameter_gets_a_gradient():
    method = _method()
    torch.manual_seed(0)
    masks = [torch.ones(4, 3, dtype=torch.bool), torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]]).bool()]
    assert parameters_without_gradient(method, _batch(), num_classes=6, availabilities=masks) == []


def test_training_step_is_deterministic_under_the_global_seed_and_reports_finite_parts():
    method = _method()
    x, target = _batch(), torch.randint(0, 6, (4, 32, 32), generator=torch.Generator().manual_seed(0))
    available = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    results = []
    for _ in range(2):
        torch.manual_seed(5)
        total, parts = method.training_step(x, target, available)
        results.append((float(total.detach()), parts))
    assert results[0] == results[1]
    total, parts = results[0]
    assert set(parts) == {"ce", "contrastive", "reconstruction"}
    assert all(math.isfinite(v) for v in [total, *parts.values()])
    assert parts["contrastive"] > 0 and parts["reconstruction"] > 0
    expected = parts["ce"] + 0.1 * parts["contrastive"] + 0.5 * parts["reconstruction"]
    assert total == pytest.approx(expected, rel=1e-5)


def test_loss_on_forward_output_is_the_cross_entropy_alone():
    method = _method()
    x, target = _batch(), torch.randint(0, 6, (4, 32, 32), generator=torch.Generator().manual_seed(0))
    available = torch.ones(4, 3, dtype=torch.bool)
    with torch.no_grad():
        output = method(x, available)
    total, parts = method.loss(output, target, available)
    assert set(parts) == {"ce"}
    assert float(total) == pytest.approx(float(F.cross_entropy(output["logits"], target)), rel=1e-6)
