"""mia_jax.stats against closed forms, scipy and simulation."""

import numpy as np
import pytest
from scipy import stats as sps

from mia_jax import stats


def test_clopper_pearson_matches_beta_quantiles_and_edges():
  lo, hi = stats.clopper_pearson(3, 10)
  assert lo == pytest.approx(sps.beta.ppf(0.025, 3, 8))
  assert hi == pytest.approx(sps.beta.ppf(0.975, 4, 7))
  assert stats.clopper_pearson(0, 10)[0] == 0.0
  assert stats.clopper_pearson(10, 10)[1] == 1.0
  # 0 of n: the upper end is 1 - (alpha/2)^(1/n)
  assert stats.clopper_pearson(0, 50)[1] == pytest.approx(1 - 0.025 ** (1 / 50))


def test_clopper_pearson_covers_at_least_nominal():
  rng = np.random.default_rng(0)
  p, n = 0.03, 200
  k = rng.binomial(n, p, size=2000)
  cover = np.mean([lo <= p <= hi for lo, hi in (stats.clopper_pearson(x, n) for x in k)])
  assert cover >= 0.95


def test_t_interval_is_mean_plus_minus_t_se():
  v = np.array([1.0, 2.0, 4.0, 7.0])
  lo, hi = stats.t_interval(v)
  half = sps.t.ppf(0.975, 3) * v.std(ddof=1) / 2.0
  assert (lo, hi) == pytest.approx((v.mean() - half, v.mean() + half))
  assert np.isnan(stats.t_interval([1.0])[0])


def test_sign_flip_exact_p_values():
  # all five differences positive: only the all-plus and all-minus flips are as extreme
  assert stats.paired_test([2, 3, 4, 5, 6], [1, 1, 1, 1, 1])["p_value"] == pytest.approx(2 / 32)
  assert stats.paired_test([1, 2, 3], [1, 2, 3])["p_value"] == 1.0


def test_sign_flip_is_valid_under_the_null():
  rng = np.random.default_rng(1)
  p = [stats.paired_test(rng.normal(size=8), rng.normal(size=8))["p_value"] for _ in range(400)]
  assert 0.02 <= np.mean(np.array(p) <= 0.05) <= 0.08


def test_paired_t_matches_scipy():
  a, b = np.array([1.0, 2.5, 3.0, 4.2]), np.array([0.5, 2.0, 3.1, 3.0])
  assert stats.paired_test(a, b, method="t")["p_value"] == pytest.approx(
      sps.ttest_rel(a, b).pvalue)


def test_holm_by_hand():
  adjusted = stats.holm([0.01, 0.04, 0.03, 0.5])
  # sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, 0.09 (monotone), 0.5
  assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_binomial_bounds_are_clopper_pearsons_ends():
  k, n = np.array([0, 3, 10, 7]), np.array([10, 10, 10, 50])
  lower, upper = stats.binomial_bounds(k, n, 0.025)
  for i in range(k.size):
    assert (lower[i], upper[i]) == pytest.approx(stats.clopper_pearson(k[i], n[i]), abs=1e-12)
  assert lower[0] == 0.0 and upper[2] == 1.0


def _ranks_by_enumeration(n, p, a):
  j = np.arange(n + 2)
  cdf = sps.binom.cdf(j - 1, n, p)          # P(u(X_(j)) > p) = P(Binomial(n, p) <= j - 1)
  ok_hi = j[1:n + 1][cdf[1:n + 1] >= 1 - a]
  return int(j[cdf <= a].max()), int(ok_hi.min()) if ok_hi.size else n + 1


@pytest.mark.parametrize("n", [1, 7, 500, 5000])
@pytest.mark.parametrize("p", [0.0, 1e-4, 1e-3, 0.01, 0.37, 1.0])
def test_order_statistic_ranks_match_enumeration(n, p):
  for a in (0.0125, 0.025, 0.2):
    j_lo, j_hi = stats.order_statistic_ranks(n, p, a)
    assert (j_lo, j_hi) == _ranks_by_enumeration(n, p, a)
    k = int(np.floor(p * n + 1e-9))
    assert j_lo <= k + 1 <= j_hi


def test_order_statistic_ranks_bracket_the_quantile_in_simulation():
  # 2000 samples of n = 300 exponentials: the rule "x > X_(j_lo)" has a tail mass <= p, and
  # "x >= X_(j_hi)" >= p, each in at least 1 - a of the samples (exact tail: exp(-x)).
  rng = np.random.default_rng(2)
  n, p, a = 300, 0.02, 0.05
  j_lo, j_hi = stats.order_statistic_ranks(n, p, a)
  x = -np.sort(-rng.exponential(size=(2000, n)), axis=1)     # descending
  tail_lo = np.exp(-x[:, j_lo - 1]) if j_lo else np.zeros(2000)
  tail_hi = np.exp(-x[:, j_hi - 1])
  assert np.mean(tail_lo > p) <= a + 0.012
  assert np.mean(tail_hi < p) <= a + 0.012


def test_dkw_epsilon_closed_form_and_validity():
  assert stats.dkw_epsilon(100, 0.05) == pytest.approx(np.sqrt(np.log(40) / 200))
  # the exact law of sup |F_n - F| (Kolmogorov's, scipy's kstwo) puts at most a above eps
  for n in (5, 50, 500, 5000):
    for a in (0.0125, 0.05):
      assert sps.kstwo.sf(stats.dkw_epsilon(n, a), n) <= a


def test_logit_interval_contains_the_estimate_inside_zero_one():
  for x, se in ((0.5, 0.1), (0.99, 0.05), (0.01, 0.2)):
    lo, hi = stats.logit_interval(x, se)
    assert 0.0 < lo < x < hi < 1.0
  lo, hi = stats.logit_interval(0.6, 0.01)
  z = sps.norm.ppf(0.975)
  assert (hi - lo) / 2 == pytest.approx(z * 0.01, rel=1e-3)   # the delta method near 0.6
  assert stats.logit_interval(1.0, 0.1) == (1.0, 1.0)
