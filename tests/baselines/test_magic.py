"""MAGIC: cosine-ranked robust/fragile selection, masked aggregation, gradients, training step."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from method_checks import parameters_without_gradient

import baselines.magic  # noqa: F401  (registers "magic")
from baselines.magic import MultiModalAggregation, modality_similarity, split_robust_fragile
from benchmark.methods.catalog import create_method

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}
MIXED = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)


def _batch(b=4, size=32):
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(b, c, size, size, generator=g) for m, c in CHANNELS.items()}


def _orthogonal_unit(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random vector orthogonal to ``a`` with the norm of ``a``."""
    r = rng.standard_normal(a.shape)
    r -= (r * a).sum() / (a * a).sum() * a
    return r / np.linalg.norm(r) * np.linalg.norm(a)


def _constructed(scales, available):
    """Features ``a + s[b, m] * u`` with ``u`` orthogonal to ``a`` and ``|u| = |a|``, so that
    cos(feature, a) = 1 / sqrt(1 + s^2) at every scale by construction."""
    rng = np.random.default_rng(0)
    shapes = [(8, 8, 8), (16, 4, 4), (32, 2, 2), (64, 1, 1)]
    b, m = scales.shape
    aggregated, features = [], []
    for shape in shapes:
        a = rng.standard_normal((b, *shape))
        f = np.zeros((b, m, *shape))
        for i in range(b):
            u = [_orthogonal_unit(a[i], rng) for _ in range(m)]
            for j in range(m):
                f[i, j] = a[i] + scales[i, j] * u[j]
        aggregated.append(a)
        features.append(f)
    # sample 3: modality 2 is an exact copy of modality 0 -> a tie
    for f in features:
        f[3, 2] = f[3, 0]
    return [torch.tensor(f, dtype=torch.float32) for f in features], [
        torch.tensor(a, dtype=torch.float32) for a in aggregated
    ]


def test_robust_fragile_split_follows_cosine_ranking():
    scales = np.array(
        [
            [0.5, 0.1, 2.0],  # 3 available: order 1 > 0 > 2 -> k=2: robust {0,1}, fragile {2}
            [1.0, 0.0, 0.3],  # 2 available (1 missing, though identical to the benchmark): robust {2}, fragile {0}
            [0.0, 3.0, 0.0],  # 1 available (the least similar): robust {1}, fragile {}
            [0.7, 0.2, 0.7],  # 3 available, 0 and 2 tie for second: robust {1, 0}, fragile {2}
        ]
    )
    available = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    features, aggregated = _constructed(scales, available)

    similarity = modality_similarity(features, aggregated, available)
    # independent numpy cosine, averaged over scales
    expected = np.mean(
        [
            [
                [(f[i, j].ravel() @ a[i].ravel()) / (np.linalg.norm(f[i, j]) * np.linalg.norm(a[i])) for j in range(3)]
                for i in range(4)
            ]
            for f, a in zip((f.double().numpy() for f in features), (a.double().numpy() for a in aggregated))
        ],
        axis=0,
    )
    closed_form = 1.0 / np.sqrt(1.0 + scales**2)
    np.testing.assert_allclose(expected, closed_form, rtol=1e-5)
    avail = available.numpy()
    np.testing.assert_allclose(similarity.numpy()[avail], closed_form[avail], rtol=1e-5)
    assert torch.isneginf(similarity[~available]).all()
    assert similarity.requires_grad is False

    robust, fragile = split_robust_fragile(similarity, available)
    assert robust.tolist() == [[True, True, False], [False, False, True], [False, True, False], [True, True, False]]
    assert fragile.tolist() == [[False, False, True], [True, False, False], [False, False, False], [False, False, True]]


def test_split_on_hand_written_scores():
    available = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.bool)
    similarity = torch.tensor(
        [
            [0.3, 9.0, 0.3],  # tie of the two available; the missing one's high score is ignored
            [0.5, 0.5, 0.5],  # three-way tie -> the first two
            [-0.9, 0.0, -0.9],  # single available, negative score: still robust
            [-0.2, 0.4, 0.0],  # the 3rd slot's score is ignored
        ]
    )
    robust, fragile = split_robust_fragile(similarity, available)
    assert robust.tolist() == [[True, False, False], [True, True, False], [False, False, True], [False, True, False]]
    assert fragile.tolist() == [[False, False, True], [False, False, True], [False, False, False], [True, False, False]]
    robust, fragile = split_robust_fragile(similarity, available, robust_fraction=1.0)
    assert robust.tolist() == available.tolist() and not fragile.any()
    robust, fragile = split_robust_fragile(similarity, available, robust_fraction=0.1)
    assert robust.sum(1).tolist() == [1, 1, 1, 1]
    assert (robust | fragile).tolist() == available.tolist() and not (robust & fragile).any()


def _mam_reference(mam, mean, mx):
    """``mean + proj(cat[mean, mx])`` spelled out with the module's convs."""
    x = torch.cat([mean, mx], dim=1)
    return mean + mam.expand(F.gelu(mam.depthwise(mam.reduce(x))))


def test_aggregation_honours_the_member_mask():
    torch.manual_seed(0)
    mam = MultiModalAggregation(8)
    members = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    # negative member features: a max that treated non-members as zeros would return 0 here
    features = -torch.rand(3, 3, 8, 5, 5) - 0.1
    garbage = torch.where(members.view(3, 3, 1, 1, 1), features, torch.randn_like(features) * 1e3)
    with torch.no_grad():
        out = mam(features, members)
        torch.testing.assert_close(mam(garbage, members), out)
        # numpy oracle for the masked mean and max
        f, m = features.numpy(), members.numpy()
        mean = np.stack([f[i][m[i]].mean(axis=0) for i in range(3)])
        mx = np.stack([f[i][m[i]].max(axis=0) for i in range(3)])
        torch.testing.assert_close(out, _mam_reference(mam, torch.tensor(mean), torch.tensor(mx)))


def test_aggregation_of_identical_members():
    torch.manual_seed(0)
    mam = MultiModalAggregation(8)
    members = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    f = torch.randn(3, 8, 6, 6)
    features = torch.where(
        members.view(3, 3, 1, 1, 1), f.unsqueeze(1).expand(3, 3, 8, 6, 6), torch.randn(3, 3, 8, 6, 6)
    )
    with torch.no_grad():
        torch.testing.assert_close(mam(features, members), _mam_reference(mam, f, f))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    method = create_method("magic", modalities=CHANNELS, num_classes=6)
    all_ones = torch.ones(4, 3, dtype=torch.bool)
    assert parameters_without_gradient(method, _batch(), num_classes=6, availabilities=[all_ones, MIXED]) == []


def test_training_step_deterministic_and_parts():
    torch.manual_seed(0)
    method = create_method("magic", modalities=CHANNELS, num_classes=6, decoder_dim=32)
    x = _batch()
    target = torch.randint(0, 6, (4, 32, 32), generator=torch.Generator().manual_seed(2))
    target[0, :4] = 255
    total_a, parts_a = method.training_step(x, target, MIXED)
    total_b, parts_b = method.training_step(x, target, MIXED)
    assert set(parts_a) == {"ce", "ce_robust", "ce_fragile", "consistency"}
    assert all(math.isfinite(v) for v in parts_a.values()) and torch.isfinite(total_a)
    assert torch.equal(total_a, total_b) and parts_a == parts_b
    expected = parts_a["ce"] + 1.0 * parts_a["ce_robust"] + 0.5 * parts_a["ce_fragile"] + 0.5 * parts_a["consistency"]
    assert math.isclose(total_a.detach().item(), expected, rel_tol=1e-5)
    # samples 0 and 2 have >= 2 modalities, so there is a fragile set to learn from
    assert parts_a["ce_fragile"] > 0 and parts_a["consistency"] >= 0


def test_single_modality_has_no_fragile_term():
    torch.manual_seed(0)
    method = create_method("magic", modalities=CHANNELS, num_classes=6, decoder_dim=32)
    x = _batch()
    target = torch.randint(0, 6, (4, 32, 32), generator=torch.Generator().manual_seed(2))
    single = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    total, parts = method.training_step(x, target, single)
    assert parts["ce_fragile"] == 0.0
    # with one modality the robust set is the whole set: robust branch = aggregated branch
    assert math.isclose(parts["ce_robust"], parts["ce"], rel_tol=1e-5)
    assert abs(parts["consistency"]) < 1e-5
    total.backward()
    assert torch.isfinite(total)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_branches_decode_the_selected_subsets(monkeypatch):
    # a fixed ranking (the last modality most similar) makes the selected sets known:
    # MIXED rows -> robust {2}, {1}, {1, 2}, {2}; fragile {0}, {}, {0}, {}
    monkeypatch.setattr(
        baselines.magic,
        "modality_similarity",
        lambda features, aggregated, available: torch.tensor([1.0, 2.0, 3.0]).expand(available.shape[0], 3),
    )
    torch.manual_seed(0)
    method = create_method("magic", modalities=CHANNELS, num_classes=6, decoder_dim=32)
    x = _batch()
    target = torch.randint(0, 6, (4, 32, 32), generator=torch.Generator().manual_seed(2))
    _, parts = method.training_step(x, target, MIXED)

    robust = torch.tensor([[0, 0, 1], [0, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    fragile = torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.bool)  # samples 0 and 2
    with torch.no_grad():
        p_agg = method(x, MIXED)["logits"]
        p_rob = method(x, robust)["logits"]
        p_frag = method({m: v[[0, 2]] for m, v in x.items()}, fragile)["logits"]
        ce = F.cross_entropy(p_agg, target).item()
        ce_robust = F.cross_entropy(p_rob, target).item()
        ce_fragile = F.cross_entropy(p_frag, target[[0, 2]]).item()
    log_p, log_q = _log_softmax(p_agg.double().numpy()), _log_softmax(p_rob.double().numpy())
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean()
    assert math.isclose(parts["ce"], ce, rel_tol=1e-4)
    assert math.isclose(parts["ce_robust"], ce_robust, rel_tol=1e-4)
    assert math.isclose(parts["ce_fragile"], ce_fragile, rel_tol=1e-4)
    assert math.isclose(parts["consistency"], kl, rel_tol=1e-3, abs_tol=1e-6) and kl > 1e-4
