"""Small statistical primitives shared by the metrics, the reports and the experiments.

Host-side NumPy/SciPy. Every function states the unit its interval or test is over; callers
pick the unit that varies in their question (models for a mean over targets, examples for
one target's metric).

  clopper_pearson(k, n)          exact binomial interval of a proportion k / n
  binomial_bounds(k, n, a)       its one-sided ends, vectorised, each exceeded with prob <= a
  order_statistic_ranks(n, p, a) ranks of the order statistics that bracket a p-quantile
  dkw_epsilon(n, a)              the DKW-Massart half-width of an empirical CDF's band
  logit_interval(x, se)          a normal interval on the logit scale (stays inside (0, 1))
  t_interval(values)             interval of a mean over independent units (e.g. target models)
  paired_test(a, b)              two-sided test of mean(a - b) = 0 over paired units
  one_sample_test(values, mu0)   the same against a fixed value (e.g. a no-leak level)
  holm(p_values)                 Holm's step-down adjustment for a family of tests
"""

import functools
from typing import Sequence

import numpy as np
from scipy import special
from scipy import stats as sps

from mia_jax.errors import ConfigError

_EXACT_SIGN_FLIPS = 16   # up to this many units the sign-flip test enumerates all 2**n flips


def clopper_pearson(k, n, confidence: float = 0.95) -> tuple[float, float]:
  """Exact (Clopper-Pearson) interval of a binomial proportion: k successes in n trials."""
  k, n = int(k), int(n)
  if n <= 0 or not 0 <= k <= n:
    raise ConfigError(f"clopper_pearson needs 0 <= k <= n and n > 0, got k={k}, n={n}")
  a = 1.0 - confidence
  lo = 0.0 if k == 0 else float(sps.beta.ppf(a / 2, k, n - k + 1))
  hi = 1.0 if k == n else float(sps.beta.ppf(1 - a / 2, k + 1, n - k))
  return lo, hi


def binomial_bounds(k, n, a: float) -> tuple[np.ndarray, np.ndarray]:
  """One-sided Clopper-Pearson bounds of binomial proportions, vectorised over k and n.

  Args:
    k: successes, int array (any shape); n: trials, broadcastable, n >= 1.
    a: the error of each bound: P(p < lower) <= a and P(p > upper) <= a for every p.

  Returns:
    (lower, upper), float64 arrays of the broadcast shape: lower = 0 at k = 0, upper = 1 at
    k = n. With a = (1 - confidence) / 2 they are clopper_pearson's two ends.
  """
  k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
  if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
    raise ConfigError("binomial_bounds needs 0 <= k <= n and n >= 1")
  # betaincinv(p, q, x) is beta.ppf(x, p, q) without scipy.stats' per-call overhead
  lower = np.where(k > 0, special.betaincinv(np.maximum(k, 1), n - k + 1, a), 0.0)
  upper = np.where(k < n, special.betaincinv(k + 1, np.maximum(n - k, 1), 1 - a), 1.0)
  return lower, upper


def order_statistic_ranks(n: int, p: float, a: float) -> tuple[int, int]:
  """Ranks (1 = the largest) of the order statistics of n draws that bracket a tail quantile.

  For n i.i.d. draws from any distribution F with u = 1 - F(x) the upper-tail probability of
  x, the j-th largest draw X_(j) has u(X_(j)) distributed as the j-th smallest of n uniforms,
  Beta(j, n - j + 1), whatever F is (P(u(X_(j)) <= p) = P(Binomial(n, p) >= j)). The ranks
  returned are the tightest with

    P(u(X_(j_lo)) > p) <= a    (j_lo: the largest such rank; 0 = "above every draw")
    P(u(X_(j_hi)) < p) <= a    (j_hi: the smallest such rank; n + 1 = "below every draw")

  so the rule "x > X_(j_lo)" has an upper-tail probability (an FPR) of at most p, and the rule
  "x >= X_(j_hi)" of at least p, each with probability >= 1 - a (ties only help: "x > X"
  never counts more of F's mass than u(X), "x >= X" never less).

  Returns:
    (j_lo, j_hi) with 0 <= j_lo <= floor(p n) + 1 and floor(p n) + 1 <= j_hi <= n + 1
    (the estimate's own rule "above X_(floor(p n) + 1)" lies between them).
  """
  n = int(n)
  if n < 1 or not 0.0 <= p <= 1.0 or not 0.0 < a < 0.5:
    raise ConfigError(f"order_statistic_ranks needs n >= 1, p in [0, 1], a in (0, 0.5); got "
                      f"n={n}, p={p}, a={a}")
  return _order_statistic_ranks(n, float(p), float(a))


@functools.lru_cache(maxsize=65536)
def _order_statistic_ranks(n: int, p: float, a: float) -> tuple[int, int]:
  # P(Binomial(n, p) <= x) by scipy.special.bdtr (scipy.stats' per-call overhead is 100x)
  cdf = lambda x: 0.0 if x < 0 else 1.0 if x >= n else float(special.bdtr(x, n, p))
  # j_lo - 1 = the largest x with cdf(x) <= a (none: j_lo = 0); j_hi - 1 = the smallest x with
  # cdf(x) >= 1 - a. A normal guess, then steps to the exact place.
  mean, sd = n * p, np.sqrt(n * p * (1 - p))
  z = float(special.ndtri(1 - a))
  x = int(np.clip(np.floor(mean - z * sd), -1, n))
  while x >= 0 and cdf(x) > a:
    x -= 1
  while x + 1 <= n and cdf(x + 1) <= a:
    x += 1
  y = int(np.clip(np.ceil(mean + z * sd), 0, n))
  while y > 0 and cdf(y - 1) >= 1 - a:
    y -= 1
  while y < n and cdf(y) < 1 - a:
    y += 1
  return x + 1, y + 1


def dkw_epsilon(n, a: float) -> np.ndarray:
  """Half-width eps with P(sup_x |F_n(x) - F(x)| > eps) <= a for an empirical CDF of n draws.

  The Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant: 2 exp(-2 n eps^2) = a.
  """
  return np.sqrt(np.log(2.0 / a) / (2.0 * np.asarray(n, np.float64)))


def logit_interval(estimate: float, se: float, confidence: float = 0.95) -> tuple[float, float]:
  """estimate +- z se on the logit scale (delta method), mapped back: inside (0, 1).

  Contains the estimate for any se >= 0; (estimate, estimate) where se = 0, and also where the
  estimate is 0 or 1 (the logit is infinite there: the caller gives its own bound).
  """
  x, se = float(estimate), float(se)
  if not 0.0 < x < 1.0 or se <= 0.0:
    return x, x
  z = float(special.ndtri(0.5 + confidence / 2))
  centre, half = np.log(x / (1 - x)), z * se / (x * (1 - x))
  return float(1 / (1 + np.exp(-(centre - half)))), float(1 / (1 + np.exp(-(centre + half))))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
  """Student-t interval of the mean of independent units [n]; (nan, nan) for fewer than 2."""
  v = np.asarray(values, np.float64)
  if v.size < 2:
    return float("nan"), float("nan")
  m = float(v.mean())
  half = float(sps.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
  return m - half, m + half


def _sign_flip_p(d: np.ndarray, num: int, seed: int) -> float:
  """Two-sided p-value of mean(d) = 0 by flipping the signs of d [n] (exact for small n)."""
  n = d.size
  observed = abs(d.sum())
  if n <= _EXACT_SIGN_FLIPS:
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
  else:
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1, 1), size=(num, n))
  sums = np.abs(signs @ d)
  extreme = np.sum(sums >= observed - 1e-12 * max(observed, 1.0))
  if n > _EXACT_SIGN_FLIPS:   # the observed flip counts once (a valid Monte-Carlo p-value)
    return float((extreme + 1) / (num + 1))
  return float(extreme / signs.shape[0])


def paired_test(a: Sequence[float], b: Sequence[float], *, method: str = "sign_flip",
                num: int = 20000, seed: int = 0) -> dict:
  """Two-sided test that paired units (the same target models, say) have mean(a - b) = 0.

  method: "sign_flip" (permutation test of the mean difference: exact over all 2**n sign
  flips for n <= 16, else `num` random flips; valid for any symmetric null, no normality) or
  "t" (paired Student t). With n units the smallest sign-flip p-value is 2 / 2**n: five pairs
  cannot reach p < 0.0625, six reach 0.03125.

  Returns:
    {"n", "mean_difference", "p_value", "method"}.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size < 2:
    raise ConfigError(f"paired_test needs two 1-D arrays of equal length >= 2, got {a.shape} "
                      f"and {b.shape}")
  d = a - b
  if method == "t":
    p = float(sps.ttest_rel(a, b).pvalue) if np.any(d != d[0]) else (0.0 if d[0] else 1.0)
  elif method == "sign_flip":
    p = _sign_flip_p(d, num, seed)
  else:
    raise ConfigError(f"unknown paired test {method!r}; choose 'sign_flip' or 't'")
  return {"n": int(d.size), "mean_difference": float(d.mean()), "p_value": p, "method": method}


def one_sample_test(values: Sequence[float], mu0: float, **kwargs) -> dict:
  """paired_test of values [n] against the constant mu0 (two-sided)."""
  v = np.asarray(values, np.float64)
  return paired_test(v, np.full_like(v, float(mu0)), **kwargs)


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjusted p-values [K] (reject at level a where adjusted <= a).

  Controls the family-wise error rate at a for any dependence between the K tests.
  """
  p = np.asarray(p_values, np.float64)
  if p.ndim != 1:
    raise ConfigError("holm takes a 1-D list of p-values")
  order = np.argsort(p)
  k = p.size
  adjusted = np.maximum.accumulate((k - np.arange(k)) * p[order])
  out = np.empty(k)
  out[order] = np.minimum(adjusted, 1.0)
  return out
