"""Small statistical primitives shared by the metrics, the reports and the experiments.

Host-side NumPy/SciPy. Every function states the unit its interval or test is over; callers
pick the unit that varies in their question (models for a mean over targets, examples for
one target's metric).

  clopper_pearson(k, n)          exact binomial interval of a proportion k / n
  t_interval(values)             interval of a mean over independent units (e.g. target models)
  paired_test(a, b)              two-sided test of mean(a - b) = 0 over paired units
  one_sample_test(values, mu0)   the same against a fixed value (e.g. a no-leak level)
  holm(p_values)                 Holm's step-down adjustment for a family of tests
"""

from typing import Sequence

import numpy as np
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
