"""Statistics of the report: mean ± std over seeds, expected mIoU under random modality failure,
per-modality fragility, the by-size curve and a paired bootstrap of mIoU differences.

All mIoU values are percent floats (0..100); NaN means "no value". Subsets are named as
:mod:`benchmark.protocol` spells them (``"rgb+dsm"``), parsed with its ``subset_parts`` and compared
as sets. Definitions and caveats: docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from benchmark.metrics import mean_iou
from benchmark.protocol import subset_name, subset_parts

__all__ = [
    "BootstrapResult",
    "by_size",
    "expected_miou",
    "fragility",
    "mean_std",
    "paired_bootstrap",
    "subset_probabilities",
    "LossTrend",
    "loss_trend",
    "tied_ranks",
]

# Replicates drawn per block. Fixed (never derived from K or memory) so that the random draws
# depend only on (seed, N, R, samples).
_DRAW_BLOCK = 256
# Float64 elements of one block of resampled confusion matrices (32 MB).
_MAX_ELEMENTS = 1 << 22


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample std)`` of ``values`` (e.g. one score over seeds, percent).

    The std uses ``ddof=1`` and is NaN for a single value. Any NaN in ``values`` gives
    ``(nan, nan)``; an empty sequence raises ``ValueError``.
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"mean_std needs a flat sequence of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("mean_std needs at least one value")
    if np.isnan(x).any():
        return math.nan, math.nan
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    return mean, std


def _check_modalities(modalities: Sequence[str]) -> list[str]:
    mods = list(modalities)
    if not mods:
        raise ValueError("at least one modality is needed")
    if len(set(mods)) != len(mods):
        raise ValueError(f"duplicate modality in {mods}")
    return mods


def _parse_subsets(subsets: Sequence[str], modalities: Sequence[str]) -> list[frozenset[str]]:
    """The modality sets of ``subsets``, checked to be exactly the ``2^M - 1`` non-empty subsets.

    Raises ``ValueError`` naming an unknown modality, a repeated subset or a missing subset.
    """
    mods = _check_modalities(modalities)
    known = set(mods)
    parsed: list[frozenset[str]] = []
    seen: dict[frozenset[str], str] = {}
    for name in subsets:
        parts = subset_parts(str(name))
        unknown = [m for m in parts if m not in known]
        if unknown:
            raise ValueError(f"subset {name!r} has unknown modality {unknown[0]!r} (modalities: {mods})")
        if len(set(parts)) != len(parts):
            raise ValueError(f"subset {name!r} lists a modality twice")
        key = frozenset(parts)
        if key in seen:
            raise ValueError(f"subset {name!r} repeats subset {seen[key]!r}")
        seen[key] = str(name)
        parsed.append(key)
    expected = 2 ** len(mods) - 1
    if len(parsed) != expected:
        for mask in range(1, 2 ** len(mods)):
            key = frozenset(m for i, m in enumerate(mods) if mask >> i & 1)
            if key not in seen:
                missing = subset_name([m for m in mods if m in key])
                raise ValueError(f"subset {missing!r} is missing ({len(parsed)} of {expected} subsets given)")
    return parsed


def subset_probabilities(subsets: Sequence[str], modalities: Sequence[str], p: float) -> np.ndarray:
    """``float64[S]``: probability that exactly each subset is available.

    Each of the ``M`` modalities fails independently with probability ``p``; the all-failed
    state is excluded and the rest renormalised:
    ``P(S) = (1 - p)^|S| p^(M - |S|) / (1 - p^M)``. ``subsets`` must be exactly the ``2^M - 1``
    non-empty subsets (any order) and ``0 <= p < 1``, else ``ValueError``.
    """
    p = float(p)
    if not 0.0 <= p < 1.0:  # also rejects NaN
        raise ValueError(f"failure probability p must lie in [0, 1), got {p}")
    parsed = _parse_subsets(subsets, modalities)
    m = len(modalities)
    sizes = np.array([len(s) for s in parsed], dtype=np.float64)
    return (1.0 - p) ** sizes * p ** (m - sizes) / (1.0 - p**m)


def expected_miou(subset_miou: Mapping[str, float], modalities: Sequence[str], p: float) -> float:
    """``E_p[mIoU] = sum_S P(S) mIoU(S)`` (percent) with ``P`` from :func:`subset_probabilities`.

    Subsets of probability 0 (all but the full set when ``p == 0``) do not contribute, even when
    their mIoU is NaN; a NaN mIoU of a subset with ``P(S) > 0`` gives NaN.
    """
    names = list(subset_miou)
    prob = subset_probabilities(names, modalities, p)
    values = np.array([float(subset_miou[n]) for n in names], dtype=np.float64)
    used = prob > 0
    return float(np.sum(prob[used] * values[used]))


def fragility(subset_miou: Mapping[str, float], modalities: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per modality ``m``: ``{"drop": ..., "alone": ...}`` (percentage points / percent).

    ``drop`` is the mean, over the subsets ``S`` that contain ``m`` and at least one other
    modality, of ``mIoU(S) - mIoU(S \\ {m})``: positive when removing ``m`` hurts; NaN when
    ``M == 1``. ``alone`` is ``mIoU({m})``. ``subset_miou`` must hold every non-empty subset.
    """
    mods = _check_modalities(modalities)
    names = list(subset_miou)
    parsed = _parse_subsets(names, mods)
    table = {key: float(subset_miou[name]) for key, name in zip(parsed, names)}
    out: dict[str, dict[str, float]] = {}
    for m in mods:
        diffs = [table[s] - table[s - {m}] for s in parsed if m in s and len(s) >= 2]
        drop = float(np.mean(diffs)) if diffs else math.nan
        out[m] = {"drop": drop, "alone": table[frozenset([m])]}
    return out


def by_size(subset_miou: Mapping[str, float]) -> dict[int, float]:
    """``{k: mean mIoU over the given subsets of k modalities}`` (percent), keys ascending.

    Sizes count the "+"-separated names; a NaN mIoU makes its size's mean NaN.
    """
    if not subset_miou:
        raise ValueError("by_size needs at least one subset")
    groups: dict[int, list[float]] = {}
    for name, value in subset_miou.items():
        groups.setdefault(len(subset_parts(str(name))), []).append(float(value))
    return {k: float(np.mean(groups[k])) for k in sorted(groups)}


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap of ``mIoU_a - mIoU_b`` (percentage points).

    ``diff`` is the observed difference, ``[low, high]`` the percentile interval, ``samples``
    the number of replicates and ``replicates`` (``float64[samples]``, read-only) their values.
    """

    diff: float
    low: float
    high: float
    samples: int
    replicates: np.ndarray = field(repr=False, compare=False)

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (``low > 0`` or ``high < 0``)."""
        return bool(self.low > 0 or self.high < 0)


def _check_confusions(confusion_a: np.ndarray, confusion_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(confusion_a)
    b = np.asarray(confusion_b)
    if a.ndim not in (4, 5):
        raise ValueError(f"confusion_a must be [R, N, K, K] or [R, S, N, K, K], got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"confusion_a shape {a.shape} != confusion_b shape {b.shape}")
    if a.ndim == 4:  # one subset
        a, b = a[:, None], b[:, None]
    r, s, n, k, k2 = a.shape
    if k != k2:
        raise ValueError(f"confusion matrices must be square, got shape {a.shape}")
    if r < 1 or s < 1 or n < 1 or k < 1:
        raise ValueError(f"need at least one seed, image and class, got shape {a.shape}")
    for name, x in (("confusion_a", a), ("confusion_b", b)):
        if x.dtype.kind not in "iuf":
            raise ValueError(f"{name} must hold counts, got dtype {x.dtype}")
        if (x < 0).any():
            raise ValueError(f"{name} has negative counts")
    return a, b


TREND_WINDOW = 0.25  # share of a run's logged steps, the last ones, that loss_trend fits a line to
TREND_Z = 2.0  # a slope this many standard errors from 0 is "falling" or "rising", else "flat"


@dataclass(frozen=True)
class LossTrend:
    """The training loss at the end of a run: the least-squares slope of loss against step over the
    last :data:`TREND_WINDOW` of the logged steps, in loss units per 100 steps, and its standard error."""

    slope: float
    stderr: float
    last_step: int

    @property
    def verdict(self) -> str:
        """``"falling"`` (the slope is more than :data:`TREND_Z` standard errors below 0: still learning),
        ``"rising"`` (as far above) or ``"flat"``."""
        if self.slope + TREND_Z * self.stderr < 0:
            return "falling"
        return "rising" if self.slope - TREND_Z * self.stderr > 0 else "flat"


def loss_trend(steps: np.ndarray, loss: np.ndarray, window: float = TREND_WINDOW) -> LossTrend | None:
    """:class:`LossTrend` of a step log (``steps`` and ``loss``, one entry per logged step, in order):
    ordinary least squares over its last ``ceil(window * T)`` entries (at least 3); ``None`` with
    fewer than 3 entries. The per-step losses are noisy (one batch each), hence the standard error:
    ``sqrt(RSS / (n - 2) / Σ (x - x̄)²)``, the textbook one for a slope."""
    steps, loss = np.asarray(steps, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if len(steps) < 3:
        return None
    take = max(3, math.ceil(window * len(steps)))
    x, y = steps[-take:], loss[-take:]
    dx = x - x.mean()
    spread = float(dx @ dx)
    slope = float(dx @ (y - y.mean())) / spread
    residuals = y - (y.mean() + slope * dx)
    stderr = math.sqrt(float(residuals @ residuals) / (take - 2) / spread)
    return LossTrend(100.0 * slope, 100.0 * stderr, int(steps[-1]))


def tied_ranks(scores: Mapping[str, float], tied: Callable[[str, str], bool]) -> dict[str, int]:
    """Ranks (1 = best) by ``scores`` (higher is better; a NaN score gets no rank) that respect ties:
    walking down the sorted runs, a run shares the rank of the run just above it when
    ``tied(above, run)``, and otherwise takes its position (competition ranking: 1, 2, 2, 4).
    Equal scores keep the order of ``scores``. The chain is not transitive: A tied with B and B with
    C share one rank even when A and C are not tied (docs/statistics.md)."""
    ordered = sorted((run for run, score in scores.items() if not math.isnan(score)), key=lambda run: -scores[run])
    ranks: dict[str, int] = {}
    for position, run in enumerate(ordered, 1):
        above = ordered[position - 2] if position > 1 else None
        ranks[run] = ranks[above] if above is not None and tied(above, run) else position
    return ranks


#: How :func:`paired_bootstrap` reduces each side's per-subset mIoU (mean over seeds) to one number.
BOOTSTRAP_STATISTICS = {"avg": np.mean, "last1": np.min}


def paired_bootstrap(
    confusion_a: np.ndarray,
    confusion_b: np.ndarray,
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    statistic: str = "avg",
) -> BootstrapResult:
    """Paired percentile bootstrap of the mIoU difference between methods a and b.

    ``confusion_a``/``confusion_b``: counts ``[R, N, K, K]`` (R seeds, N test images, rows =
    target), paired by seed index and by image index. The statistic is the mean over seeds of
    ``mean_iou(sum over images of a[r]) - mean_iou(sum over images of b[r])``. With a subset axis,
    ``[R, S, N, K, K]``, each side's mIoU per subset is its mean over seeds, reduced over the S
    subsets by ``statistic``: ``"avg"``, their mean (the Avg column), or ``"last1"``, their minimum
    (the Last-1 column: each side's own worst subset); the images are drawn once for all subsets.
    Each replicate
    draws the N images with replacement (one draw shared by a, b and every seed) and, if
    ``R > 1``, the R seeds with replacement (shared by a and b); it scores the mean over drawn
    seeds of ``mIoU_a - mIoU_b`` of the drawn images' summed confusion. ``[low, high]`` are the
    ``(1 -+ confidence) / 2`` quantiles of the replicates.

    Image draws depend only on ``(seed, N, samples)`` and seed draws only on ``(seed, R, samples)``,
    so every comparison made with the same ``seed`` uses common random numbers.
    """
    a, b = _check_confusions(confusion_a, confusion_b)
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples}")
    samples = int(samples)
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")

    if statistic not in BOOTSTRAP_STATISTICS:
        raise ValueError(f"statistic must be one of {list(BOOTSTRAP_STATISTICS)}, got {statistic!r}")
    reduce = BOOTSTRAP_STATISTICS[statistic]

    r_count, s_count, n, k, _ = a.shape
    observed = [reduce(mean_iou(x.sum(axis=2)).mean(axis=0), axis=-1) for x in (a, b)]  # over seeds, then subsets
    diff = float(observed[0] - observed[1])

    # [R, N, 2 S K^2]: a and b side by side, so one matmul per seed scores both.
    width = s_count * k * k
    per_image_a = a.transpose(0, 2, 1, 3, 4).reshape(r_count, n, width)
    per_image_b = b.transpose(0, 2, 1, 3, 4).reshape(r_count, n, width)
    stacked = np.concatenate([per_image_a, per_image_b], axis=2, dtype=np.float64)
    image_ss, seed_ss = np.random.SeedSequence(seed).spawn(2)
    image_rng, seed_rng = np.random.default_rng(image_ss), np.random.default_rng(seed_ss)
    image_p = np.full(n, 1.0 / n)
    seed_p = np.full(r_count, 1.0 / r_count)
    rows = max(1, min(_DRAW_BLOCK, _MAX_ELEMENTS // (2 * width)))

    replicates = np.empty(samples, dtype=np.float64)
    for start in range(0, samples, _DRAW_BLOCK):
        size = min(_DRAW_BLOCK, samples - start)
        weights = image_rng.multinomial(n, image_p, size=size).astype(np.float64)  # [B, N]
        per_seed = np.empty((size, r_count, 2, s_count), dtype=np.float64)  # mIoU per replicate, seed, side, subset
        for lo in range(0, size, rows):
            w = weights[lo : lo + rows]
            for r in range(r_count):
                conf = (w @ stacked[r]).reshape(len(w), 2, s_count, k, k)  # resampled summed confusions
                per_seed[lo : lo + len(w), r] = mean_iou(conf)
        if r_count > 1:
            seed_counts = seed_rng.multinomial(r_count, seed_p, size=size)[:, :, None, None]  # [B, R, 1, 1]
            # Undrawn seeds contribute nothing (not even a NaN).
            means = np.where(seed_counts > 0, seed_counts * per_seed, 0.0).sum(axis=1) / r_count  # [B, 2, S]
        else:
            means = per_seed[:, 0]
        sides = reduce(means, axis=-1)  # [B, 2]
        replicates[start : start + size] = sides[:, 0] - sides[:, 1]

    low, high = np.quantile(replicates, [(1.0 - confidence) / 2, (1.0 + confidence) / 2])
    replicates.setflags(write=False)
    return BootstrapResult(diff=diff, low=float(low), high=float(high), samples=samples, replicates=replicates)
