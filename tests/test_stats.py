"""Tests of benchmark.stats against direct computations (brute-force enumerations, hand arithmetic)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmark.stats import (
    by_size,
    expected_miou,
    fragility,
    loss_trend,
    mean_std,
    paired_bootstrap,
    subset_probabilities,
    tied_ranks,
)

# --------------------------------------------------------------------------- helpers


def _all_subsets(modalities: list[str]) -> list[str]:
    """Every non-empty subset, named in data set order."""
    names = []
    for size in range(1, len(modalities) + 1):
        for combo in itertools.combinations(modalities, size):
            names.append("+".join(combo))
    return names


def _brute_force_probabilities(modalities: list[str], p: float) -> dict[frozenset, float]:
    """Enumerate every available/failed state of every modality, drop the all-failed one, normalise."""
    weights: dict[frozenset, float] = {}
    for state in itertools.product([True, False], repeat=len(modalities)):
        available = frozenset(m for m, up in zip(modalities, state) if up)
        if not available:
            continue
        prob = 1.0
        for up in state:
            prob *= (1 - p) if up else p
        weights[available] = prob
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items()}


def _direct_miou(conf: np.ndarray) -> float:
    """mIoU (percent) of one [K, K] matrix with explicit loops; classes with an empty union are skipped."""
    k = conf.shape[0]
    ious = []
    for c in range(k):
        tp = conf[c, c]
        fp = sum(conf[t, c] for t in range(k) if t != c)
        fn = sum(conf[c, q] for q in range(k) if q != c)
        if tp + fp + fn > 0:
            ious.append(100.0 * tp / (tp + fp + fn))
    return sum(ious) / len(ious) if ious else math.nan


def _images(rng: np.random.Generator, n: int, k: int, accuracy: float, pixels: int = 100) -> np.ndarray:
    """int64[N, K, K]: per-image confusions; each pixel correct with probability ``accuracy``, else a
    uniformly drawn wrong class."""
    out = np.zeros((n, k, k), dtype=np.int64)
    for i in range(n):
        target = rng.multinomial(pixels, np.full(k, 1.0 / k))
        for c in range(k):
            row = np.full(k, (1.0 - accuracy) / (k - 1))
            row[c] = accuracy
            out[i, c] = rng.multinomial(target[c], row)
    return out


# --------------------------------------------------------------------------- mean_std


@pytest.mark.parametrize("values", [[1.0, 2.0, 4.0], [50.25, 49.5], [3.0, 3.0, 3.0, 3.0], [-1.5, 10.0, 7.25, 0.0]])
def test_mean_std_matches_numpy(values):
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values), abs=1e-12)
    assert std == pytest.approx(np.std(values, ddof=1), abs=1e-12)


def test_mean_std_single_value_nan_and_empty():
    mean, std = mean_std([42.5])
    assert mean == 42.5 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([1.0, math.nan, 3.0]))
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])


# --------------------------------------------------------------------------- subset probabilities / E_p[mIoU]


@pytest.mark.parametrize("num_modalities", [1, 2, 3, 4])
@pytest.mark.parametrize("p", [0.0, 0.05, 0.1, 0.2, 0.5])
def test_subset_probabilities_and_expected_miou_match_enumeration(num_modalities, p):
    modalities = ["rgb", "dsm", "nir", "sar"][:num_modalities]
    rng = np.random.default_rng(num_modalities)
    names = _all_subsets(modalities)
    names = [names[i] for i in rng.permutation(len(names))]  # any order
    miou = {name: float(rng.uniform(20, 90)) for name in names}

    exact = _brute_force_probabilities(modalities, p)
    prob = subset_probabilities(names, modalities, p)
    assert prob.shape == (len(names),) and prob.dtype == np.float64
    np.testing.assert_allclose(prob, [exact[frozenset(n.split("+"))] for n in names], rtol=1e-12, atol=1e-15)
    assert prob.sum() == pytest.approx(1.0, abs=1e-12)

    expected = sum(exact[frozenset(n.split("+"))] * miou[n] for n in names)
    assert expected_miou(miou, modalities, p) == pytest.approx(expected, rel=1e-12)
    if p == 0.0:
        assert expected_miou(miou, modalities, p) == pytest.approx(miou["+".join(modalities)], rel=1e-12)


def test_subset_names_are_parsed_as_sets():
    prob = subset_probabilities(["dsm+rgb", "rgb", "dsm"], ["rgb", "dsm"], 0.2)
    exact = _brute_force_probabilities(["rgb", "dsm"], 0.2)
    np.testing.assert_allclose(
        prob, [exact[frozenset({"rgb", "dsm"})], exact[frozenset({"rgb"})], exact[frozenset({"dsm"})]]
    )


def test_subset_probabilities_errors():
    mods = ["rgb", "dsm", "nir"]
    names = _all_subsets(mods)
    with pytest.raises(ValueError, match="'dsm\\+nir' is missing"):
        subset_probabilities([n for n in names if n != "dsm+nir"], mods, 0.1)
    with pytest.raises(ValueError, match="'sar'"):
        subset_probabilities([*names, "rgb+sar"], mods, 0.1)
    with pytest.raises(ValueError, match="repeats"):
        subset_probabilities([*names, "nir+rgb"], mods, 0.1)
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="must lie in"):
            subset_probabilities(names, mods, bad)


# --------------------------------------------------------------------------- fragility / by_size

_TABLE = {
    "rgb": 50.0,
    "dsm": 30.0,
    "nir": 20.0,
    "rgb+dsm": 60.0,
    "rgb+nir": 55.0,
    "dsm+nir": 40.0,
    "rgb+dsm+nir": 65.0,
}


def test_fragility_hand_computed():
    out = fragility(_TABLE, ["rgb", "dsm", "nir"])
    assert list(out) == ["rgb", "dsm", "nir"]
    assert out["rgb"]["drop"] == pytest.approx(((60 - 30) + (55 - 20) + (65 - 40)) / 3)
    assert out["dsm"]["drop"] == pytest.approx(((60 - 50) + (40 - 20) + (65 - 55)) / 3)
    assert out["nir"]["drop"] == pytest.approx(((55 - 50) + (40 - 30) + (65 - 60)) / 3)
    assert {m: v["alone"] for m, v in out.items()} == {"rgb": 50.0, "dsm": 30.0, "nir": 20.0}


def test_fragility_single_modality_and_incomplete_table():
    out = fragility({"rgb": 70.0}, ["rgb"])
    assert math.isnan(out["rgb"]["drop"]) and out["rgb"]["alone"] == 70.0
    with pytest.raises(ValueError, match="missing"):
        fragility({k: v for k, v in _TABLE.items() if k != "rgb"}, ["rgb", "dsm", "nir"])


def test_by_size_hand_computed():
    reversed_table = dict(reversed(list(_TABLE.items())))
    out = by_size(reversed_table)
    assert list(out) == [1, 2, 3]
    assert out[1] == pytest.approx((50 + 30 + 20) / 3)
    assert out[2] == pytest.approx((60 + 55 + 40) / 3)
    assert out[3] == pytest.approx(65.0)


# --------------------------------------------------------------------------- paired bootstrap


def test_bootstrap_identical_inputs():
    a = np.stack([_images(np.random.default_rng(r), 12, 3, 0.7) for r in range(2)])
    res = paired_bootstrap(a, a.copy(), samples=200)
    assert res.diff == 0.0 and res.low == 0.0 and res.high == 0.0
    assert not res.significant
    assert res.samples == 200 and res.replicates.shape == (200,)


def test_bootstrap_diff_is_mean_over_seeds_of_summed_miou():
    rng = np.random.default_rng(1)
    a = np.stack([_images(rng, 15, 4, acc) for acc in (0.8, 0.7, 0.75)])
    b = np.stack([_images(rng, 15, 4, acc) for acc in (0.6, 0.65, 0.7)])
    a[..., 3, :] = 0  # class 3 absent from every target and prediction: ignored by mIoU
    a[..., :, 3] = 0
    b[..., 3, :] = 0
    b[..., :, 3] = 0
    res = paired_bootstrap(a, b, samples=50)
    oracle = np.mean([_direct_miou(a[r].sum(0)) - _direct_miou(b[r].sum(0)) for r in range(3)])
    assert math.isfinite(oracle)
    assert res.diff == pytest.approx(oracle, abs=1e-10)


def _exact_distribution(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Statistic of every equally likely resample: all N**N image sequences x all R**R seed sequences."""
    r_count, n = a.shape[:2]
    values = []
    for images in itertools.product(range(n), repeat=n):
        idx = list(images)
        d = [_direct_miou(a[r, idx].sum(0)) - _direct_miou(b[r, idx].sum(0)) for r in range(r_count)]
        for seeds in itertools.product(range(r_count), repeat=r_count):
            values.append(sum(d[s] for s in seeds) / r_count)
    return np.array(values)


@pytest.mark.parametrize(("r_count", "n"), [(1, 4), (2, 3)])
def test_bootstrap_matches_exact_distribution(r_count, n):
    rng = np.random.default_rng(10 + r_count)
    k = 3
    a = np.stack([_images(rng, n, k, rng.uniform(0.55, 0.95), pixels=40) for _ in range(r_count)])
    b = np.stack([_images(rng, n, k, rng.uniform(0.55, 0.95), pixels=40) for _ in range(r_count)])
    # Class 2 only in image 0: absent from every resample that leaves image 0 out.
    for x in (a, b):
        x[:, 1:, 2, :] = 0
        x[:, 1:, :, 2] = 0
    exact = np.sort(_exact_distribution(a, b))
    assert np.unique(exact.round(9)).size > 10  # a non-degenerate distribution

    samples, confidence = 20000, 0.8
    res = paired_bootstrap(a, b, samples=samples, confidence=confidence, seed=3)
    reps = res.replicates
    # Mean: 5 standard errors of a mean of `samples` independent draws.
    assert abs(reps.mean() - exact.mean()) <= 5 * exact.std() / math.sqrt(samples)
    # Whole distribution (DKW): P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2) = 1e-6.
    eps = math.sqrt(math.log(2 / 1e-6) / (2 * samples))
    support = np.unique(exact)
    exact_cdf = np.searchsorted(exact, support + 1e-9, side="right") / exact.size
    boot_cdf = np.searchsorted(np.sort(reps), support + 1e-9, side="right") / samples
    assert np.max(np.abs(boot_cdf - exact_cdf)) <= eps
    # Interval ends lie between exact quantiles at levels alpha -+ eps (the same DKW band).
    for end, alpha in ((res.low, (1 - confidence) / 2), (res.high, (1 + confidence) / 2)):
        lo_q, hi_q = np.quantile(exact, [alpha - eps, alpha + eps], method="inverted_cdf")
        assert lo_q - 1e-9 <= end <= hi_q + 1e-9


def _coverage_sets(rng: np.random.Generator, trials: int, n: int, pixels: int):
    """Binary-class test sets where the population mIoU difference is known analytically.

    Per image: class-1 share f ~ U(0.2, 0.5), n1 ~ Bin(pixels, f), n0 = pixels - n1; difficulty
    d ~ U(0, 1) shared by both methods (the pairing); a pixel of class c is right with probability
    q_c(d) = base_c - slope_c d, else predicted as the other class. With E[n1] = 0.35 pixels and
    E[q_c] = base_c - slope_c / 2, the population IoUs are ratios of expectations:
    IoU_1 = E[q_1] E[n1] / (E[n1] + (1 - E[q_0]) E[n0]), IoU_0 likewise.
    """
    base = {"a": (0.92, 0.80), "b": (0.90, 0.74)}
    slope = (0.2, 0.3)
    shape = (trials, n)
    n1 = rng.binomial(pixels, rng.uniform(0.2, 0.5, size=shape))
    n0 = pixels - n1
    d = rng.uniform(0.0, 1.0, size=shape)
    conf, truth = {}, {}
    for method, (b0, b1) in base.items():
        tp0 = rng.binomial(n0, b0 - slope[0] * d)
        tp1 = rng.binomial(n1, b1 - slope[1] * d)
        c = np.zeros((trials, n, 2, 2), dtype=np.int64)
        c[..., 0, 0], c[..., 0, 1], c[..., 1, 0], c[..., 1, 1] = tp0, n0 - tp0, n1 - tp1, tp1
        conf[method] = c
        eq0, eq1 = b0 - slope[0] / 2, b1 - slope[1] / 2
        en1, en0 = 0.35 * pixels, 0.65 * pixels
        iou1 = eq1 * en1 / (en1 + (1 - eq0) * en0)
        iou0 = eq0 * en0 / (en0 + (1 - eq1) * en1)
        truth[method] = 100 * (iou0 + iou1) / 2
    return conf["a"], conf["b"], truth["a"] - truth["b"]


def test_bootstrap_coverage_of_known_difference():
    trials, n = 200, 60
    a, b, true_diff = _coverage_sets(np.random.default_rng(2024), trials, n, pixels=200)
    covered = 0
    for t in range(trials):
        res = paired_bootstrap(a[t][None], b[t][None], samples=400, confidence=0.95, seed=t)
        covered += res.low <= true_diff <= res.high
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_clear_winner_is_significant():
    rng = np.random.default_rng(5)
    target = _images(rng, 20, 3, 1.0)  # perfect predictions: diagonal only
    worse = _images(rng, 20, 3, 0.6)
    res = paired_bootstrap(target[None], worse[None], samples=300)
    assert res.diff > 10 and res.low > 0 and res.significant
    flipped = paired_bootstrap(worse[None], target[None], samples=300)
    assert flipped.high < 0 and flipped.significant
    assert flipped.diff == pytest.approx(-res.diff)


def test_bootstrap_disagreeing_seeds_widen_interval():
    rng = np.random.default_rng(7)
    n = 40
    a = np.stack([_images(rng, n, 3, acc) for acc in (0.6, 0.75, 0.9)])  # seeds disagree strongly
    b = np.stack([_images(rng, n, 3, 0.7)] * 3)
    width_multi = paired_bootstrap(a, b, samples=500)
    widths_single = [paired_bootstrap(a[r][None], b[r][None], samples=500) for r in range(3)]
    w = width_multi.high - width_multi.low
    assert all(w > 1.5 * (s.high - s.low) for s in widths_single)
    # Identical seeds: seed resampling changes nothing, and image draws do not depend on R.
    same = paired_bootstrap(np.stack([a[1]] * 3), b, samples=500)
    np.testing.assert_array_equal(same.replicates, widths_single[1].replicates)


def test_bootstrap_is_deterministic_per_seed():
    rng = np.random.default_rng(9)
    a = np.stack([_images(rng, 25, 3, 0.8), _images(rng, 25, 3, 0.7)])
    b = np.stack([_images(rng, 25, 3, 0.75), _images(rng, 25, 3, 0.72)])
    first = paired_bootstrap(a, b, samples=300, seed=11)
    again = paired_bootstrap(a, b, samples=300, seed=11)
    assert (first.low, first.high, first.diff) == (again.low, again.high, again.diff)
    np.testing.assert_array_equal(first.replicates, again.replicates)
    other = paired_bootstrap(a, b, samples=300, seed=12)
    assert (other.low, other.high) != (first.low, first.high)
    assert other.diff == first.diff


def test_bootstrap_rejects_bad_inputs():
    good = np.ones((1, 3, 2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="\\[R, N, K, K\\] or \\[R, S, N, K, K\\]"):
        paired_bootstrap(good[0], good[0])
    with pytest.raises(ValueError, match="!="):
        paired_bootstrap(good, np.ones((1, 4, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="square"):
        paired_bootstrap(np.ones((1, 3, 2, 3)), np.ones((1, 3, 2, 3)))
    with pytest.raises(ValueError, match="negative"):
        paired_bootstrap(-good, good)
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match=f"samples must be.*{bad}"):
            paired_bootstrap(good, good, samples=bad)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=f"confidence must lie.*{bad}"):
            paired_bootstrap(good, good, confidence=bad)


def test_bootstrap_over_subsets_scores_the_mean_of_their_miou():
    """[R, S, N, K, K]: the Avg column; the same image draws for every subset (common random numbers)."""
    rng = np.random.default_rng(7)
    accuracy = [(0.8, 0.6), (0.7, 0.72), (0.9, 0.5)]  # (a, b) per subset
    a = np.stack([np.stack([_images(rng, 10, 3, acc_a) for acc_a, _ in accuracy]) for _ in range(2)])
    b = np.stack([np.stack([_images(rng, 10, 3, acc_b) for _, acc_b in accuracy]) for _ in range(2)])
    avg = paired_bootstrap(a, b, samples=300, seed=4)
    per_subset = [paired_bootstrap(a[:, s], b[:, s], samples=300, seed=4) for s in range(3)]
    oracle = np.mean(
        [[_direct_miou(a[r, s].sum(0)) - _direct_miou(b[r, s].sum(0)) for s in range(3)] for r in range(2)]
    )
    assert avg.diff == pytest.approx(oracle, abs=1e-10)
    np.testing.assert_allclose(avg.replicates, np.mean([p.replicates for p in per_subset], axis=0), atol=1e-10)
    one = paired_bootstrap(a[:, :1], b[:, :1], samples=300, seed=4)  # a subset axis of length 1
    np.testing.assert_array_equal(one.replicates, per_subset[0].replicates)


def test_bootstrap_last1_is_the_difference_of_each_sides_own_worst_subset():
    rng = np.random.default_rng(21)
    # [R=2, S=3, N, K, K]: a is worst on subset 0, b on subset 2
    a = np.stack([np.stack([_images(rng, 15, 3, acc) for acc in (0.5, 0.8, 0.7)]) for _ in range(2)])
    b = np.stack([np.stack([_images(rng, 15, 3, acc) for acc in (0.75, 0.7, 0.45)]) for _ in range(2)])
    res = paired_bootstrap(a, b, samples=300, statistic="last1", seed=2)

    def last1(x):  # min over subsets of the mean over seeds of the summed-confusion mIoU
        return min(np.mean([_direct_miou(x[r, s].sum(0)) for r in range(x.shape[0])]) for s in range(x.shape[1]))

    assert res.diff == pytest.approx(last1(a) - last1(b), abs=1e-10)
    assert res.low <= res.diff <= res.high
    avg = paired_bootstrap(a, b, samples=300, statistic="avg", seed=2)
    oracle = np.mean([[_direct_miou(x[r, s].sum(0)) for s in range(3) for r in range(2)] for x in (a,)]) - np.mean(
        [_direct_miou(b[r, s].sum(0)) for s in range(3) for r in range(2)]
    )
    assert avg.diff == pytest.approx(oracle, abs=1e-10)
    # the worst subset is a minimum: never above the mean, so Last-1's replicates differ from Avg's
    assert not np.allclose(res.replicates, avg.replicates)


def test_bootstrap_last1_with_one_subset_equals_avg():
    rng = np.random.default_rng(22)
    a = np.stack([_images(rng, 12, 3, 0.7)[None] for _ in range(2)])  # [R, 1, N, K, K]
    b = np.stack([_images(rng, 12, 3, 0.6)[None] for _ in range(2)])
    first = paired_bootstrap(a, b, samples=200, statistic="last1", seed=4)
    second = paired_bootstrap(a, b, samples=200, statistic="avg", seed=4)
    np.testing.assert_allclose(first.replicates, second.replicates, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="statistic must be one of"):
        paired_bootstrap(a, b, statistic="median")


# --- ranks that respect ties ---------------------------------------------------------------------


def test_tied_ranks_share_the_rank_of_the_run_just_above():
    scores = {"a": 50.0, "b": 49.0, "c": 40.0, "d": 39.9, "e": math.nan, "f": 10.0}
    ties = {("a", "b"), ("c", "d")}
    ranks = tied_ranks(scores, lambda above, run: (above, run) in ties)
    assert ranks == {"a": 1, "b": 1, "c": 3, "d": 3, "f": 5}  # competition ranking; e has no Avg
    assert tied_ranks(scores, lambda above, run: False) == {"a": 1, "b": 2, "c": 3, "d": 4, "f": 5}
    chain = tied_ranks({"a": 3.0, "b": 2.0, "c": 1.0}, lambda above, run: True)
    assert chain == {"a": 1, "b": 1, "c": 1}  # a~b and b~c: one rank, though a and c may differ
    assert tied_ranks({"x": 1.0, "y": 1.0}, lambda above, run: False) == {"x": 1, "y": 2}  # listed order


# --- the training loss at the end of a run -----------------------------------------------------


def test_loss_trend_is_the_least_squares_slope_of_the_last_quarter():
    """Against scipy.stats.linregress on the same window (slope and its standard error, per 100 steps)."""
    from scipy.stats import linregress

    rng = np.random.default_rng(0)
    steps = np.arange(0, 300, dtype=float)
    loss = 2.0 * np.exp(-steps / 120) + rng.normal(0, 0.05, len(steps))
    trend = loss_trend(steps, loss)
    fit = linregress(steps[-75:], loss[-75:])  # ceil(0.25 * 300) = 75
    assert trend.slope == pytest.approx(100 * fit.slope) and trend.stderr == pytest.approx(100 * fit.stderr)
    assert trend.last_step == 299 and trend.verdict == "falling"
    flat = loss_trend(steps, 0.3 + 0.05 * (-1.0) ** steps)  # batch-to-batch noise around a constant
    assert flat.verdict == "flat" and abs(flat.slope) <= 2 * flat.stderr
    assert loss_trend(steps, 0.3 + steps / 1000).verdict == "rising"
    assert loss_trend(steps[:2], loss[:2]) is None
    assert loss_trend(steps[:5], loss[:5]).last_step == 4  # at least 3 entries: the last 3 of 5
