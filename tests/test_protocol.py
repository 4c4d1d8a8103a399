"""The missing-modality protocol: subset enumeration, training protocols and their draws, run names, zeroing + mask."""

import itertools
import math

import pytest
import torch

from benchmark.protocol import (
    Protocol,
    apply_availability,
    builtin_protocol,
    draw_available,
    enumerate_subsets,
    parse_run,
    parse_subset,
    random_combination,
    run_name,
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


# --- named training protocols ---------------------------------------------------------------


def _frequencies(available: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Frequency of each availability pattern (a tuple of 0/1 per modality) among the rows."""
    patterns = [tuple(int(v) for v in row) for row in available.tolist()]
    return {p: patterns.count(p) / len(patterns) for p in set(patterns)}


def _oracle(weights: dict[tuple[int, ...], float]) -> dict[tuple[int, ...], float]:
    total = sum(weights.values())
    return {p: w / total for p, w in weights.items() if w > 0}


NONEMPTY = [bits for bits in itertools.product([0, 1], repeat=3) if any(bits)]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("complete", {(1, 1, 1): 1.0}),
        ("uniform", _oracle({bits: 1.0 for bits in NONEMPTY})),
        # size k uniform in 1..3, then each of the C(3, k) k-subsets alike
        ("size_uniform", _oracle({bits: 1 / (3 * math.comb(3, sum(bits))) for bits in NONEMPTY})),
        # the full set and the 3 sets lacking one modality, alike
        ("drop_one", _oracle({bits: 1.0 for bits in NONEMPTY if sum(bits) >= 2})),
    ],
)
def test_builtin_protocols_draw_their_distribution(kind, expected):
    protocol = builtin_protocol(kind)
    draws = protocol.draw(30000, 3, torch.Generator().manual_seed(4))
    assert draws.dtype == torch.bool and draws.shape == (30000, 3) and bool(draws.any(dim=1).all())
    freq = _frequencies(draws)
    assert set(freq) == set(expected)
    for pattern, p in expected.items():
        assert abs(freq[pattern] - p) < 5 * math.sqrt(p * (1 - p) / 30000) + 1e-9, (kind, pattern, freq[pattern], p)
    again = protocol.draw(30000, 3, torch.Generator().manual_seed(4))
    assert torch.equal(draws, again)  # seeded: same generator state, same draws


def test_uniform_and_bernoulli_are_the_draws_of_draw_available_bit_for_bit():
    """A -uniform run reproduces the suite's draws from before protocols existed."""
    for step in range(3):
        old = draw_available(8, 3, torch.Generator().manual_seed(step))
        assert torch.equal(builtin_protocol("uniform").draw(8, 3, torch.Generator().manual_seed(step), step), old)
    drop = (0.5, 0.2, 0.9)
    old = draw_available(64, 3, torch.Generator().manual_seed(1), drop_prob=list(drop))
    new = Protocol("p", "bernoulli", drop_prob=drop).draw(64, 3, torch.Generator().manual_seed(1))
    assert torch.equal(new, old)


def test_bernoulli_with_one_half_has_the_uniform_distribution():
    draws = Protocol("half", "bernoulli", drop_prob=(0.5, 0.5, 0.5)).draw(30000, 3, torch.Generator().manual_seed(2))
    for pattern, f in _frequencies(draws).items():
        assert abs(f - 1 / 7) < 5 * math.sqrt((1 / 7) * (6 / 7) / 30000), pattern


def test_staged_switches_at_the_fraction_of_the_steps():
    staged = Protocol(
        "s", "staged", fraction=0.3, first=builtin_protocol("complete"), then=builtin_protocol("drop_one")
    )
    assert staged.switch_step(10) == 3
    for step in range(10):
        draws = staged.draw(200, 3, torch.Generator().manual_seed(step), step, 10)
        expected = builtin_protocol("complete" if step < 3 else "drop_one").draw(
            200, 3, torch.Generator().manual_seed(step), step, 10
        )
        assert torch.equal(draws, expected)
    assert bool(staged.draw(200, 3, torch.Generator().manual_seed(5), 5, 10).logical_not().any())
    record = staged.record()
    assert record == {
        "name": "s",
        "kind": "staged",
        "fraction": 0.3,
        "first": {"name": "complete", "kind": "complete"},
        "then": {"name": "drop_one", "kind": "drop_one"},
    }


def test_drop_one_with_one_modality_keeps_it():
    assert bool(builtin_protocol("drop_one").draw(50, 1, torch.Generator().manual_seed(0)).all())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "moddrop"},
        {"kind": "bernoulli"},
        {"kind": "bernoulli", "drop_prob": (0.2, 1.0)},
        {"kind": "uniform", "drop_prob": (0.2,)},
        {"kind": "staged", "fraction": 1.0},
        {"kind": "complete", "fraction": 0.5},
    ],
)
def test_protocol_refuses_inconsistent_parameters(kwargs):
    if kwargs["kind"] == "staged":
        kwargs = {**kwargs, "first": builtin_protocol("complete"), "then": builtin_protocol("uniform")}
    with pytest.raises(ValueError, match="protocol 'p'"):
        Protocol("p", **kwargs)


def test_run_names_split_at_the_last_dash():
    assert run_name("sgma-mas", "drop_one") == "sgma-mas-drop_one"
    assert parse_run("sgma-mas-drop_one") == ("sgma-mas", "drop_one")
    assert parse_run("muss-complete") == ("muss", "complete")
    for bad in ("muss", "-complete", "muss-", "muss-Complete"):
        with pytest.raises(ValueError, match="<method>-<protocol>"):
            parse_run(bad)


def test_random_combination_is_uniform_within_the_available_modalities():
    torch.manual_seed(0)
    available = torch.tensor([[True, True, True], [True, False, True], [False, True, False]]).repeat(9000, 1)
    chosen = random_combination(available)
    assert bool((chosen <= available).all()) and bool(chosen.any(dim=1).all())
    full = _frequencies(chosen[0::3])
    assert set(full) == set(NONEMPTY)
    assert all(abs(f - 1 / 7) < 5 * math.sqrt((1 / 7) * (6 / 7) / 9000) for f in full.values())
    two = _frequencies(chosen[1::3])
    assert set(two) == {(1, 0, 0), (0, 0, 1), (1, 0, 1)}
    assert all(abs(f - 1 / 3) < 5 * math.sqrt((1 / 3) * (2 / 3) / 9000) for f in two.values())
    assert bool(chosen[2::3].eq(torch.tensor([False, True, False])).all())  # the only one stays
    torch.manual_seed(0)
    assert torch.equal(random_combination(available), chosen)  # torch's global generator: seeded
