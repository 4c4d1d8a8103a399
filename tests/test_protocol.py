"""The missing-modality protocol: subset enumeration, dropout draws, zeroing + mask."""

import itertools

import pytest
import torch

from benchmark.protocol import (
    apply_availability,
    draw_available,
    enumerate_subsets,
    parse_subset,
    subset_mask,
    subset_name,
)

MODALITIES = ("rgb", "dsm", "nir")


def test_enumerate_subsets_fixed_order_and_names():
    names = [subset_name(s) for s in enumerate_subsets(MODALITIES)]
    assert names == ["rgb", "dsm", "nir", "rgb+dsm", "rgb+nir", "dsm+nir", "rgb+dsm+nir"]


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_enumerate_subsets_counts_all_nonempty_once(m):
    mods = [f"m{i}" for i in range(m)]
    subsets = enumerate_subsets(mods)
    assert len(subsets) == 2**m - 1
    assert len({frozenset(s) for s in subsets}) == 2**m - 1
    # each subset keeps the data set's modality order
    assert all(list(s) == sorted(s, key=mods.index) for s in subsets)


def test_enumerate_subsets_rejects_duplicates():
    with pytest.raises(ValueError):
        enumerate_subsets(["rgb", "rgb"])


def test_parse_subset_reorders_and_validates():
    assert parse_subset("nir+rgb", MODALITIES) == ("rgb", "nir")
    with pytest.raises(ValueError, match="sar"):
        parse_subset("rgb+sar", MODALITIES)


def test_draw_available_seeded_nonempty_uniform():
    a = draw_available(20000, 3, torch.Generator().manual_seed(0))
    b = draw_available(20000, 3, torch.Generator().manual_seed(0))
    c = draw_available(20000, 3, torch.Generator().manual_seed(1))
    assert a.dtype == torch.bool and a.shape == (20000, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(a.any(dim=1).all())
    codes = (a.long() * torch.tensor([1, 2, 4])).sum(1)
    counts = torch.bincount(codes, minlength=8).float()
    assert counts[0] == 0
    # uniform over the 7 non-empty subsets: each within 5 sigma of 20000/7
    expected = 20000 / 7
    sigma = (20000 * (1 / 7) * (6 / 7)) ** 0.5
    assert bool(((counts[1:] - expected).abs() < 5 * sigma).all()), counts


def test_draw_available_drop_prob_conditional_on_nonempty():
    drop = [0.5, 0.2, 0.9]
    a = draw_available(40000, 3, torch.Generator().manual_seed(3), drop_prob=drop)
    assert bool(a.any(dim=1).all())
    # oracle: P(subset | non-empty) for independent drops
    keep = [1 - p for p in drop]
    probs = {}
    for bits in itertools.product([0, 1], repeat=3):
        if any(bits):
            probs[bits] = torch.tensor([k if b else 1 - k for b, k in zip(bits, keep)]).prod().item()
    z = sum(probs.values())
    for bits, p in probs.items():
        freq = (a == torch.tensor(bits, dtype=torch.bool)).all(1).float().mean().item()
        assert abs(freq - p / z) < 0.01, (bits, freq, p / z)


def test_draw_available_rejects_bad_probabilities():
    with pytest.raises(ValueError):
        draw_available(4, 3, torch.Generator(), drop_prob=[0.1, 1.0, 0.2])
    with pytest.raises(ValueError):
        draw_available(4, 3, torch.Generator(), drop_prob=[0.1, 0.2])


def test_apply_availability_zeroes_missing_even_nan_and_keeps_input():
    inputs = {
        "rgb": torch.randn(3, 3, 4, 4),
        "dsm": torch.full((3, 1, 4, 4), float("nan")),
        "nir": torch.randn(3, 1, 4, 4),
    }
    available = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
    out = apply_availability(inputs, available, MODALITIES)
    assert torch.equal(out["rgb"][1], torch.zeros(3, 4, 4))
    assert torch.equal(out["rgb"][0], inputs["rgb"][0])
    assert torch.equal(out["dsm"][:2], torch.zeros(2, 1, 4, 4))
    assert torch.isnan(out["dsm"][2]).all()  # available: passed through untouched
    assert torch.isnan(inputs["dsm"]).all()  # caller's batch not modified


def test_apply_availability_rejects_empty_rows_and_bad_masks():
    inputs = {m: torch.zeros(2, 1, 2, 2) for m in MODALITIES}
    with pytest.raises(ValueError, match="at least one"):
        apply_availability(inputs, torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool), MODALITIES)
    with pytest.raises(ValueError, match="bool"):
        apply_availability(inputs, torch.ones(2, 3), MODALITIES)


def test_subset_mask():
    mask = subset_mask(("rgb", "nir"), MODALITIES, 2)
    assert mask.tolist() == [[True, False, True], [True, False, True]]
