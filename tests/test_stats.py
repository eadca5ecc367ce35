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
