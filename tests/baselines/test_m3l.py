"""M3L: EMA teacher, mask-token linear fusion, student masking, pseudo-label consistency."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_checks import parameters_without_gradient

import baselines.m3l  # noqa: F401  (registers "m3l")
from benchmark.efficiency import parameter_count
from benchmark.methods.catalog import create_method

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}
MIXED = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)


def _batch(b=4, size=32):
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(b, c, size, size, generator=g) for m, c in CHANNELS.items()}


def _target(b=4, size=32):
    return torch.randint(0, 6, (b, size, size), generator=torch.Generator().manual_seed(2))


def _method(**kwargs):
    """M3L with the mean-teacher phase from the first step unless ``supervised_warmup`` is given."""
    torch.manual_seed(0)
    return create_method("m3l", modalities=CHANNELS, num_classes=6, **{"supervised_warmup": 0, **kwargs})


def _named(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _student(method):
    return {
        f"{part}.{n}": p for part in ("encoder", "fusion", "decoder") for n, p in _named(getattr(method, part)).items()
    }


def _teacher(method):
    return _named(method.teacher)


def _train_step(method, opt, x, y):
    total, _ = method.training_step(x, y, torch.ones(4, 3, dtype=torch.bool))
    opt.zero_grad()
    total.backward()
    opt.step()


@pytest.mark.parametrize("previous_updates, alpha", [(50, 50 / 51), (200, 0.99)])
def test_teacher_is_an_ema_of_the_student(previous_updates, alpha):
    method = _method()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    x, y = _batch(), _target()

    # first update: alpha = min(1 - 1/1, 0.99) = 0 -> the teacher becomes an exact copy of the student
    before = _teacher(method)
    _train_step(method, opt, x, y)
    method.after_optimizer_step()
    student_1, teacher_1 = _student(method), _teacher(method)
    assert teacher_1.keys() == student_1.keys()
    assert any(not torch.equal(before[n], teacher_1[n]) for n in before)  # the step moved something
    for n in teacher_1:
        torch.testing.assert_close(teacher_1[n], student_1[n], rtol=0, atol=0)
    assert int(method.ema_updates) == 1

    # a later update: alpha = min(1 - 1/(n + 1), 0.99), computed by hand in the parametrisation
    method.ema_updates.fill_(previous_updates)
    _train_step(method, opt, x, y)
    method.after_optimizer_step()
    student_2, teacher_2 = _student(method), _teacher(method)
    moved = 0
    for n in teacher_2:
        expected = alpha * teacher_1[n].double() + (1 - alpha) * student_2[n].double()
        torch.testing.assert_close(teacher_2[n].double(), expected, rtol=1e-5, atol=1e-6)
        moved += not torch.allclose(student_2[n], student_1[n])
    assert moved > 0  # the second step changed the student, so the EMA is not a copy
    assert int(method.ema_updates) == previous_updates + 1
    assert "ema_updates" in method.state_dict()


def test_supervised_warmup_then_teacher_starts_as_a_copy():
    method = _method(supervised_warmup=2)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    x, y = _batch(), _target()
    initial = _teacher(method)
    for step in range(2):  # warm-up: CE only (no mask, no teacher), the teacher copies the student
        torch.manual_seed(step)
        total, parts = method.training_step(x, y, torch.ones(4, 3, dtype=torch.bool))
        assert parts["consistency"] == 0.0
        expected_ce = F.cross_entropy(method(x, torch.ones(4, 3, dtype=torch.bool))["logits"], y)
        assert float(total.detach()) == pytest.approx(float(expected_ce.detach()), rel=1e-6)
        opt.zero_grad()
        total.backward()
        opt.step()
        method.after_optimizer_step()
        for n, t in _teacher(method).items():
            torch.testing.assert_close(t, _student(method)[n], rtol=0, atol=0)
    assert any(not torch.equal(initial[n], t) for n, t in _teacher(method).items())
    # first update after the warm-up: n = 0 -> a = 0, a copy; the next: n = 1 -> a = 1/2
    _train_step(method, opt, x, y)
    method.after_optimizer_step()
    copied = _teacher(method)
    _train_step(method, opt, x, y)
    method.after_optimizer_step()
    student = _student(method)
    for n, t in _teacher(method).items():
        torch.testing.assert_close(
            t.double(), 0.5 * copied[n].double() + 0.5 * student[n].double(), rtol=1e-5, atol=1e-6
        )
    torch.manual_seed(0)
    assert method.training_step(x, y, torch.ones(4, 3, dtype=torch.bool))[1]["consistency"] > 0


def test_teacher_frozen_and_every_student_parameter_trains():
    method = _method()
    teacher = [n for n, _ in method.named_parameters() if n.startswith("teacher.")]
    assert teacher and all(not p.requires_grad for p in method.teacher.parameters())
    torch.manual_seed(0)
    full = torch.ones(4, 3, dtype=torch.bool)
    assert parameters_without_gradient(method, _batch(), num_classes=6, availabilities=[full, MIXED]) == []
    assert all(p.grad is None for p in method.teacher.parameters())


def test_fusion_matches_hand_computed_weighted_sum_with_mask_tokens():
    method = _method()
    fusion = method.fusion
    alpha = np.array([0.5, -1.0, 2.0])
    rng = np.random.default_rng(0)
    available = MIXED.numpy()
    feats = []
    with torch.no_grad():
        for i, c in enumerate(method.encoder.channels):
            fusion.alpha[i].copy_(torch.tensor(alpha * (i + 1)))
            tokens = rng.normal(size=(3, c))
            fusion.mask_tokens[i].copy_(torch.tensor(tokens))
            feats.append(rng.normal(size=(4, 3, c, 3, 2)))
        fused = fusion([torch.tensor(f, dtype=torch.float32) for f in feats], MIXED)
    for i, (f, out) in enumerate(zip(feats, fused)):
        a = alpha * (i + 1)
        w = np.exp(a) / np.exp(a).sum()
        tokens = fusion.mask_tokens[i].detach().numpy().astype(np.float64)
        expected = np.zeros((4, f.shape[2], 3, 2))
        for b in range(4):
            for m in range(3):
                value = f[b, m] if available[b, m] else tokens[m][:, None, None]
                expected[b] += w[m] * value
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_student_mask_only_masks_available_and_keeps_one():
    method = _method()
    rows = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)
    available = rows.repeat(2000, 1)  # [8000, 3]
    torch.manual_seed(3)
    masked = method.draw_student_mask(available)
    assert not (masked & ~available).any()  # only available modalities are masked
    assert (masked.sum(dim=1) <= 1).all()  # at most one per sample
    assert ((available & ~masked).sum(dim=1) >= 1).all()  # never the last one
    assert not masked[2::4].any()  # a single available modality is never masked
    # uniform over {none} + available modalities: 1/4 each for 3 available, 1/3 for 2
    for r, row in enumerate(rows):
        m = masked[r::4].float()
        n = int(row.sum())
        if n < 2:
            continue
        expected = np.where(row.numpy(), 1.0 / (n + 1), 0.0)
        np.testing.assert_allclose(m.mean(dim=0).numpy(), expected, atol=0.03)
        assert abs(float((m.sum(dim=1) == 0).float().mean()) - 1.0 / (n + 1)) < 0.03


def test_training_step_deterministic_under_global_seed():
    method = _method()
    x, y = _batch(8), _target(8)
    available = torch.ones(8, 3, dtype=torch.bool)
    results = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        total, parts = method.training_step(x, y, available)
        results.append((float(total.detach()), parts))
    assert results[0] == results[1]
    assert results[0][0] != results[2][0]  # the student mask depends on the seed


def test_consistency_uses_teacher_pseudo_labels():
    # one modality per sample: nothing can be masked, so the student's logits are forward()'s
    method = _method()
    x, y = _batch(), _target()
    single = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        log_p = torch.log_softmax(method(x, single)["logits"].double(), dim=1).numpy()
        # teacher biased to class 4 everywhere -> pseudo labels are all 4
        method.teacher["decoder"].classify.bias.copy_(torch.tensor([0.0, 0, 0, 0, 1e4, 0]))
        _, parts = method.training_step(x, y, single)
    expected_consistency = -log_p[:, 4].mean()
    expected_ce = -np.take_along_axis(log_p, y.numpy()[:, None], axis=1).mean()
    assert parts["consistency"] == pytest.approx(expected_consistency, rel=1e-5)
    assert parts["ce"] == pytest.approx(expected_ce, rel=1e-5)


def test_parameter_count_excludes_teacher():
    method = _method()
    student = sum(p.numel() for part in (method.encoder, method.fusion, method.decoder) for p in part.parameters())
    teacher = sum(p.numel() for p in method.teacher.parameters())
    assert teacher == student  # the teacher is a full copy
    assert parameter_count(method) == student
    assert sum(p.numel() for p in method.parameters()) == student + teacher
