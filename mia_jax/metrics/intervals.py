"""95% intervals of one target's metrics: the examples are the unit that varies (the target
model and its shadows held fixed). Each takes a `roc.Tally`.

  AUC        DeLong's variance of the Mann-Whitney statistic (members' and non-members'
             placement values, ties as one half), as a normal interval on the logit scale, so
             it stays inside (0, 1) and contains the estimate. At AUC 0 or 1 (perfect
             separation, no variance estimate) the Clopper-Pearson end of min(n_mem, n_non)
             trials replaces it.
  TPR @ FPR  built for extreme order statistics (tpr_interval): the FPR of the rule "above
             the j-th highest non-member" is Beta(j, n - j + 1) whatever the scores'
             distribution (stats.order_statistic_ranks), so two ranks bracket the threshold of
             FPR alpha; Clopper-Pearson bounds the members above it. The default joins the two
             errors in quadrature (approximate: its coverage is in experiments/results/
             interval_coverage.md); method "union" is a band valid for any distribution.
             Both contain the estimate; where the FPR is not resolved (k = 0) the lower end
             is 0, and the report shows "n/a" for the estimate.
  advantage  sup_x |F_n - F| <= eps for members and non-members each (the DKW inequality with
             Massart's constant, a/2 each), so the estimate +- (eps_mem + eps_non): valid for
             all thresholds at once, hence conservative. Balanced accuracy = (1 + advantage)/2.

The mean over target models gets its interval in attacks/evaluate.py (models are the unit).
"""

from typing import Optional, Sequence

import numpy as np

from mia_jax import stats
from mia_jax.errors import ConfigError
from mia_jax.metrics import roc
from mia_jax.metrics.roc import Tally


CONFIDENCE = 0.95            # the level of every "*_ci95" interval


def auc_interval(t: Tally, confidence: float = CONFIDENCE) -> tuple[float, float]:
  """DeLong interval of the AUC on the logit scale (module docstring); t from `tally`.

  Placement values: a member at score s beats the non-members below s (ties one half); a
  non-member at s is beaten by the members above s. Var(AUC) = Var(member placements) / n_mem
  + Var(non-member placements) / n_non (ddof 1).
  """
  return _auc_ci(*_mann_whitney(t), t.num_members, t.num_nonmembers, confidence)


def _mann_whitney(t: Tally) -> tuple[float, float]:
  """(AUC as the Mann-Whitney statistic, ties one half; DeLong's variance of it)."""
  n_mem, n_non = t.num_members, t.num_nonmembers
  v_mem = (n_non - t.fps + 0.5 * t.nonmembers) / n_non   # [G]: the placement of a member there
  v_non = (t.tps - 0.5 * t.members) / n_mem              # [G]: the placement of a non-member
  # sums of products, not np.dot: a float dot goes to the multithreaded BLAS, whose threads
  # spin for the cores when other processes hold them
  a = float(np.sum(t.members * v_mem) / n_mem)
  var = (np.sum(t.members * (v_mem - a) ** 2) / max(n_mem - 1, 1) / n_mem
         + np.sum(t.nonmembers * (v_non - a) ** 2) / max(n_non - 1, 1) / n_non)
  return a, float(var)


def _auc_ci(a: float, var: float, n_mem: int, n_non: int,
            confidence: float = CONFIDENCE) -> tuple[float, float]:
  if 0.0 < a < 1.0:
    return stats.logit_interval(a, float(np.sqrt(var)), confidence)
  n = min(n_mem, n_non)                    # perfect separation: no variance to estimate
  lo, hi = stats.clopper_pearson(round(a * n), n, confidence)
  return (lo, a) if a == 1.0 else (a, hi)


TPR_METHODS = ("quadrature", "union")


def tpr_interval(t: Tally, alpha: float, confidence: float = CONFIDENCE,
                 method: str = "quadrature") -> tuple[float, float]:
  """Interval of the TPR at FPR alpha from order statistics and Clopper-Pearson; t: `tally`.

  Two sources of error, each with its exact small-sample law: where the threshold of FPR
  alpha lies among the non-members (stats.order_statistic_ranks, error a = (1 - confidence)
  / 2 per side: the ranks j_lo, j_hi bracket it), and how many members lie above it
  (Clopper-Pearson, a per side). Per side, with T the estimate:

    "quadrature" (default): T -+ sqrt(d_rank^2 + d_binomial^2), where d_rank is the distance
      from T to the TPR at the bracketing rank and d_binomial from T to its Clopper-Pearson
      bound: the two independent errors added as for normal errors. Approximate (its
      coverage is in experiments/results/interval_coverage.md); it reads the ROC's slope near
      alpha from the data.
    "union": from the Clopper-Pearson lower bound of the TPR above rank j_lo to the upper
      bound of the TPR at or above rank j_hi, every piece at error a / 2: a band that holds
      at `confidence` for ANY score distribution (the union bound over its four pieces), and
      so is conservative: the two errors seldom add up.

  Both contain the estimate and lie in [0, 1]. Where the FPR is not resolved (floor(alpha *
  n_non) = 0) the lower end is 0.
  """
  if method not in TPR_METHODS:
    raise ConfigError(f"unknown TPR interval method {method!r}; choose one of {TPR_METHODS}")
  lo, hi = tpr_intervals(t, [alpha], confidence, method)
  return float(lo[0]), float(hi[0])


def tpr_intervals(t: Tally, alphas: Sequence[float], confidence: float = CONFIDENCE,
                   method: str = "quadrature", tp: Optional[np.ndarray] = None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """tpr_interval for each alpha [A]: (lo [A], hi [A]); tp: roc.members_within(t, alphas) if
  known."""
  n_mem, n_non = t.num_members, t.num_nonmembers
  a = (1.0 - confidence) / 2
  piece = a / 2 if method == "union" else a
  ranks = np.array([stats.order_statistic_ranks(n_non, x, piece) for x in alphas])  # [A, 2]
  rank_lo = roc.members_above(t, ranks[:, 0], strict=True)
  rank_hi = roc.members_above(t, ranks[:, 1], strict=False)
  if method == "union":
    return (stats.binomial_bounds(rank_lo, n_mem, piece)[0],
            stats.binomial_bounds(rank_hi, n_mem, piece)[1])
  tp = roc.members_within(t, alphas) if tp is None else tp
  est = tp / n_mem
  cp_lo, cp_hi = stats.binomial_bounds(tp, n_mem, a)
  lo = est - np.hypot(est - rank_lo / n_mem, est - cp_lo)
  hi = est + np.hypot(rank_hi / n_mem - est, cp_hi - est)
  return np.maximum(lo, 0.0), np.minimum(hi, 1.0)


def tpr_at_fpr_lower(t: Tally, alpha: float) -> float:
  """The TPR of the rule whose EXPECTED FPR is alpha, at most the estimate; t: `tally`.

  The rule "above the j-th highest non-member" has an FPR of expectation j / (n_non + 1)
  whatever the scores' distribution (stats.order_statistic_ranks), so with j = floor(alpha
  (n_non + 1)) and w = alpha (n_non + 1) - j, the TPRs above the j-th and the (j + 1)-th
  interpolated with weight w estimate the TPR at FPR alpha without the upward bias of
  tpr_at_fpr's estimate (its rule, above the (k + 1)-th, has expected FPR (k + 1) / (n_non +
  1) > alpha). Unbiased where the ROC is straight between those FPRs, a little low where it is
  concave. Capped at the estimate; the interval of the mean over targets is built on it.
  """
  return float(tpr_at_fpr_lowers(t, [alpha])[0])


def tpr_at_fpr_lowers(t: Tally, alphas: Sequence[float], tp: Optional[np.ndarray] = None
               ) -> np.ndarray:
  """tpr_at_fpr_lower for each alpha [A]; tp: roc.members_within(t, alphas) if known."""
  n_non = t.num_nonmembers
  pos = np.asarray(alphas, np.float64) * (n_non + 1)
  j = np.minimum(np.floor(pos + roc.FP_TOL), n_non).astype(np.int64)
  w = np.clip(pos - j, 0.0, 1.0)
  counts = roc.members_above(t, np.concatenate([j, np.minimum(j + 1, n_non)]), strict=True)
  below, above = counts[:j.size], counts[j.size:]
  tp = roc.members_within(t, alphas) if tp is None else tp
  return np.minimum((1 - w) * below + w * above, tp) / t.num_members


def advantage_interval(value: float, n_mem: int, n_non: int,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
  """value +- (eps_mem + eps_non), the DKW band (module docstring), clipped to [0, 1]."""
  a = (1.0 - confidence) / 2
  eps = float(stats.dkw_epsilon(n_mem, a) + stats.dkw_epsilon(n_non, a))
  return max(0.0, value - eps), min(1.0, value + eps)
