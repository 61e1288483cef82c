"""Known answers for the comparison statistics: scipy's own results and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from perlclip.analysis.stats import (
    friedman_test,
    harmonic_mean,
    holm,
    mcnemar_exact,
    mean_ranks,
    mean_std,
    nemenyi_critical_difference,
    nemenyi_pvalue,
    paired_bootstrap_ci,
    paired_ttest,
    wilcoxon_test,
)
from perlclip.analysis.tables import pareto_front


def test_harmonic_mean_of_seed_means():
    base, _ = mean_std([80.0, 82.0, 84.0])
    new, _ = mean_std([70.0, 72.0, 74.0])
    assert round(harmonic_mean(base, new), 2) == 76.68
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_mean_std_is_sample_std():
    mean, std = mean_std([80.0, 82.0, 84.0])
    assert mean == 82.0
    assert std == pytest.approx(2.0)
    assert mean_std([70.0])[1] is None


def test_paired_ttest_matches_scipy():
    values, reference = [71.2, 70.4, 72.9], [69.8, 70.1, 71.0]
    result = paired_ttest(values, reference)
    expected = stats.ttest_rel(values, reference)
    assert result.pvalue == pytest.approx(expected.pvalue)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.n == 3


def test_paired_ttest_one_seed_has_no_pvalue():
    result = paired_ttest([71.0], [70.0])
    assert result.pvalue is None
    assert result.n == 1


def test_paired_ttest_constant_difference():
    assert paired_ttest([71.0, 72.0], [70.0, 71.0]).pvalue is None
    assert paired_ttest([71.0, 72.0], [71.0, 72.0]).pvalue == 1.0


def test_mcnemar_hand_computed():
    # 1 sample only the reference gets right, 9 only the other method: p = 2 * (1 + 10) / 2**10.
    reference = np.array([True] * 1 + [False] * 9 + [True] * 5 + [False] * 5)
    other = np.array([False] * 1 + [True] * 9 + [True] * 5 + [False] * 5)
    result = mcnemar_exact([other], [reference])
    assert result.only_reference == 1
    assert result.only_other == 9
    assert result.pvalue == pytest.approx(22 / 1024)


def test_mcnemar_pools_discordant_pairs_of_seeds():
    reference = [np.array([True, False, False, True]), np.array([True, True, False, False])]
    other = [np.array([False, True, True, True]), np.array([True, False, True, True])]
    result = mcnemar_exact(other, reference)
    assert (result.only_reference, result.only_other, result.n_seeds) == (2, 4, 2)
    assert result.pvalue == pytest.approx(stats.binomtest(4, 6, 0.5).pvalue)


def test_mcnemar_without_discordant_pairs_is_one():
    same = np.array([True, False, True])
    assert mcnemar_exact([same], [same.copy()]).pvalue == 1.0


def test_bootstrap_constant_difference_is_exact():
    # Every image: the other method right, the reference wrong, on 1 image in 4 -> +25 points always.
    reference = [np.array([False, True, True, True] * 25)]
    other = [np.array([True, True, True, True] * 25)]
    result = paired_bootstrap_ci(other, reference, resamples=200, seed=3)
    assert result.difference == pytest.approx(25.0)
    assert 0.0 < result.low < result.difference < result.high
    identical = paired_bootstrap_ci(reference, reference, resamples=50)
    assert (identical.low, identical.high) == (0.0, 0.0)


def test_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(7)
    reference = rng.random(400) < 0.7
    other = rng.random(400) < 0.78
    ours = paired_bootstrap_ci([other], [reference], resamples=10_000, seed=0)
    expected = stats.bootstrap(
        (other.astype(float) * 100, reference.astype(float) * 100),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        paired=True,
        method="percentile",
        n_resamples=10_000,
        rng=np.random.default_rng(1),
    ).confidence_interval
    assert ours.difference == pytest.approx(float(np.mean(other) - np.mean(reference)) * 100)
    # Different random streams: the intervals agree within Monte Carlo error.
    assert ours.low == pytest.approx(expected.low, abs=0.4)
    assert ours.high == pytest.approx(expected.high, abs=0.4)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    reference = [rng.random(300) < 0.6 for _ in range(3)]
    other = [rng.random(300) < 0.65 for _ in range(3)]
    first = paired_bootstrap_ci(other, reference, resamples=500, seed=4)
    again = paired_bootstrap_ci(other, reference, resamples=500, seed=4)
    moved = paired_bootstrap_ci(other, reference, resamples=500, seed=5)
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (moved.low, moved.high)


def test_wilcoxon_matches_scipy():
    values = [71.0, 80.5, 66.2, 90.1, 55.0, 62.3]
    reference = [70.0, 78.0, 67.0, 88.0, 51.5, 60.0]
    assert wilcoxon_test(values, reference) == pytest.approx(stats.wilcoxon(values, reference).pvalue)
    assert wilcoxon_test(values, values) == 1.0


def test_friedman_hand_computed():
    # Four datasets rank three methods identically: chi2 = 12N/(k(k+1)) * sum(R^2) - 3N(k+1) = 8.
    scores = np.array([[90.0, 80.0, 70.0], [85.0, 84.0, 60.0], [70.0, 65.0, 64.0], [99.0, 98.0, 97.0]])
    result = friedman_test(scores)
    assert result.ranks == (1.0, 2.0, 3.0)
    assert result.statistic == pytest.approx(8.0)
    assert result.pvalue == pytest.approx(math.exp(-4.0))
    assert result.pvalue == pytest.approx(stats.friedmanchisquare(*scores.T).pvalue)


def test_mean_ranks_share_ties():
    scores = np.array([[80.0, 80.0, 70.0], [60.0, 90.0, 90.0]])
    np.testing.assert_allclose(mean_ranks(scores), [(1.5 + 3.0) / 2, (1.5 + 1.5) / 2, (3.0 + 1.5) / 2])


def test_nemenyi_critical_values_match_demsar_table():
    # q_0.05 of the two-tailed Nemenyi test for k = 2..10 methods as tabulated by Demšar (JMLR 7, 2006),
    # printed there to three decimals.
    table = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
    for methods, q_alpha in table.items():
        datasets = 11
        scale = math.sqrt(methods * (methods + 1) / (6.0 * datasets))
        assert nemenyi_critical_difference(methods, datasets, 0.05) / scale == pytest.approx(q_alpha, abs=1e-3)


def test_nemenyi_pvalue_at_critical_difference_is_alpha():
    difference = nemenyi_critical_difference(4, 11, 0.05)
    assert nemenyi_pvalue(difference, 4, 11) == pytest.approx(0.05, abs=1e-6)
    assert nemenyi_pvalue(difference * 1.5, 4, 11) < 0.05


def test_holm_hand_computed():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    adjusted = holm([0.01, None, 0.04, 0.03, 0.005])
    assert adjusted[1] is None
    assert adjusted[0] == pytest.approx(0.03)
    assert adjusted[2] == pytest.approx(0.06)
    assert adjusted[3] == pytest.approx(0.06)
    assert adjusted[4] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_pareto_front_fixed_set():
    points = [
        (0, 65.0),  # zero-shot: fewest parameters
        (676, 70.0),  # on the front
        (2048, 69.0),  # beaten by (676, 70.0)
        (8192, 72.0),  # on the front
        (8192, 71.0),  # same parameters, lower metric
        (3_555_072, 72.0),  # more parameters, same metric
        (5_000_000, 75.0),  # best metric
        (None, 99.0),  # no count: not ranked
    ]
    assert pareto_front(points) == [True, True, False, True, False, False, True, None]
