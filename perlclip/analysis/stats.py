"""Statistics of a comparison: means over seeds, paired tests, bootstrap intervals, ranks, Holm.

scipy provides the tests (`ttest_rel`, `binomtest`, `wilcoxon`, `friedmanchisquare`,
`studentized_range`), and this module fixes how they are applied to runs. The Nemenyi post-hoc
test and its critical difference follow Demšar, "Statistical Comparisons of Classifiers over
Multiple Data Sets", JMLR 7 (2006). Methods are ranked per dataset (rank 1 is the best). Two of k
methods differ over N datasets when their mean ranks differ by more than
q_alpha * sqrt(k (k + 1) / (6 N)). Here q_alpha is the studentized range quantile for k groups and
infinite degrees of freedom, divided by sqrt(2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 10_000
DEFAULT_BOOTSTRAP_SEED = 0


def harmonic_mean(base: float, new: float) -> float:
    """Return 2BN / (B + N), the base-to-new headline metric (0 when both are 0)."""
    total = base + new
    return 2.0 * base * new / total if total else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Return the mean and the sample standard deviation (ddof=1; None for fewer than two values)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else None
    return float(array.mean()), std


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class TTestResult:
    """A paired t-test over seeds: `pvalue` is None when fewer than two seeds pair up."""

    pvalue: float | None
    statistic: float | None
    n: int


def paired_ttest(values: Sequence[float], reference: Sequence[float]) -> TTestResult:
    """Run scipy's paired t-test of `values` against `reference` (paired by position, two-sided).

    The test is undefined when every seed has the same difference (zero variance): the p-value is
    then 1.0 for a zero difference and None otherwise.
    """
    n = len(values)
    if n != len(reference):
        raise ValueError(f"paired_ttest needs equal lengths, got {n} and {len(reference)}")
    if n < 2:
        return TTestResult(None, None, n)
    differences = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    if np.allclose(differences, differences[0], rtol=0.0, atol=1e-9):
        return TTestResult(1.0 if abs(differences[0]) <= 1e-9 else None, None, n)
    result = stats.ttest_rel(values, reference)
    return TTestResult(_finite(result.pvalue), _finite(result.statistic), n)


@dataclass(frozen=True)
class McNemarResult:
    """An exact McNemar test pooled over seeds.

    Attributes:
        only_reference: test samples the reference classifies correctly and the other method does not.
        only_other: test samples the other method classifies correctly and the reference does not.
    """

    pvalue: float
    only_reference: int
    only_other: int
    n_seeds: int


def mcnemar_exact(correct: Sequence[np.ndarray], reference_correct: Sequence[np.ndarray]) -> McNemarResult:
    """Run the exact McNemar test on per-sample correctness, pooling the discordant pairs of all seeds.

    Each array pair contains one seed's correctness on the same test images in the same order. Under the
    null hypothesis a discordant pair favours either method with probability 1/2, so the p-value is
    scipy's two-sided exact binomial test of `only_other` successes in `only_reference + only_other`
    trials (1.0 without discordant pairs).
    """
    if len(correct) != len(reference_correct):
        raise ValueError(f"mcnemar_exact needs one array per seed on both sides, got {len(correct)} and {len(reference_correct)}")
    only_reference = only_other = 0
    for ours, theirs in zip(correct, reference_correct, strict=True):
        ours, theirs = np.asarray(ours, dtype=bool), np.asarray(theirs, dtype=bool)
        if ours.shape != theirs.shape:
            raise ValueError(f"mcnemar_exact needs the same test samples, got shapes {ours.shape} and {theirs.shape}")
        only_reference += int(np.sum(theirs & ~ours))
        only_other += int(np.sum(ours & ~theirs))
    discordant = only_reference + only_other
    pvalue = stats.binomtest(only_other, discordant, 0.5).pvalue if discordant else 1.0
    return McNemarResult(float(pvalue), only_reference, only_other, len(correct))


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap interval of an accuracy difference, in percentage points."""

    difference: float
    low: float
    high: float
    level: float
    resamples: int
    seed: int


def paired_bootstrap_ci(
    correct: Sequence[np.ndarray],
    reference_correct: Sequence[np.ndarray],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    level: float = 0.95,
) -> BootstrapResult:
    """Return the percentile bootstrap interval of accuracy(other) - accuracy(reference) over test samples.

    Test images are resampled with replacement, the same images for every seed, and the statistic
    is the difference averaged over seeds. The per-image difference (averaged over seeds) takes few
    distinct values, so drawing their counts from a multinomial is the same as resampling images and
    costs O(resamples) instead of O(resamples * images).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ours = np.asarray(correct, dtype=float)
    theirs = np.asarray(reference_correct, dtype=float)
    if ours.shape != theirs.shape or ours.ndim != 2 or ours.shape[1] == 0:
        raise ValueError(f"paired_bootstrap_ci needs (seeds, samples) arrays of one shape, got {ours.shape} and {theirs.shape}")
    per_sample = (ours - theirs).mean(axis=0)  # (samples,)
    values, counts = np.unique(per_sample, return_counts=True)
    size = per_sample.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(size, counts / size, size=resamples)  # (resamples, distinct values)
    means = draws @ values / size * 100.0
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return BootstrapResult(float(per_sample.mean() * 100.0), float(low), float(high), level, resamples, seed)


def wilcoxon_test(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """Return the two-sided p-value of scipy's Wilcoxon signed-rank test over paired datasets.

    Returns 1.0 when every difference is zero and None without any pair.
    """
    differences = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    if differences.size == 0:
        return None
    if not np.any(differences):
        return 1.0
    return _finite(stats.wilcoxon(values, reference).pvalue)


def mean_ranks(scores: np.ndarray) -> np.ndarray:
    """Return each method's mean rank over datasets; `scores` is (datasets, methods), higher is better.

    Rank 1 is the best method of a dataset; tied methods share the average of their ranks.
    """
    scores = np.asarray(scores, dtype=float)
    return np.vstack([stats.rankdata(-row) for row in scores]).mean(axis=0)


@dataclass(frozen=True)
class FriedmanResult:
    """A Friedman test over datasets with the Nemenyi critical difference of the mean ranks."""

    statistic: float | None
    pvalue: float | None
    ranks: tuple[float, ...]
    critical_difference: float
    n_datasets: int
    alpha: float


def friedman_test(scores: np.ndarray, alpha: float = 0.05) -> FriedmanResult:
    """Run scipy's Friedman test on (datasets, methods) scores and add the Nemenyi critical difference."""
    scores = np.asarray(scores, dtype=float)
    n_datasets, n_methods = scores.shape
    if n_methods < 3 or n_datasets < 2:
        raise ValueError(f"the Friedman test needs >= 3 methods and >= 2 datasets, got {n_methods} and {n_datasets}")
    result = stats.friedmanchisquare(*scores.T)
    return FriedmanResult(
        _finite(result.statistic),
        _finite(result.pvalue),
        tuple(float(rank) for rank in mean_ranks(scores)),
        nemenyi_critical_difference(n_methods, n_datasets, alpha),
        n_datasets,
        alpha,
    )


def _rank_scale(n_methods: int, n_datasets: int) -> float:
    return math.sqrt(n_methods * (n_methods + 1) / (6.0 * n_datasets))


def nemenyi_critical_difference(n_methods: int, n_datasets: int, alpha: float = 0.05) -> float:
    """Return the mean-rank difference beyond which two of `n_methods` methods differ (Demšar 2006)."""
    q_alpha = stats.studentized_range.ppf(1.0 - alpha, n_methods, np.inf) / math.sqrt(2.0)
    return float(q_alpha * _rank_scale(n_methods, n_datasets))


def nemenyi_pvalue(rank_difference: float, n_methods: int, n_datasets: int) -> float:
    """Return the Nemenyi p-value of a mean-rank difference (the alpha at which it equals the critical difference)."""
    statistic = abs(rank_difference) * math.sqrt(2.0) / _rank_scale(n_methods, n_datasets)
    return float(stats.studentized_range.sf(statistic, n_methods, np.inf))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Return Holm-adjusted p-values in input order; None entries stay None and do not count.

    The i-th smallest of m p-values is multiplied by (m - i + 1), running maxima keep the order,
    and results are capped at 1 (Holm, "A Simple Sequentially Rejective Multiple Test Procedure",
    Scandinavian Journal of Statistics 6, 1979).
    """
    present = [(value, index) for index, value in enumerate(pvalues) if value is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    count = len(present)
    for position, (value, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (count - position) * value))
        adjusted[index] = running
    return adjusted
