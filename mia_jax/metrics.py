"""Membership-inference metrics and their 95% intervals, from scores where higher = "member".

All functions take 1-D numpy arrays: `scores` float [n] and `is_member` bool [n]. Tied scores
form ONE threshold (no staircase inside a tie), so the ROC is the step-free curve through the
points (FPR, TPR) of the decision rule "member iff score >= threshold", starting at (0, 0)
(threshold +inf) and ending at (1, 1). Its trapezoidal AUC equals the Mann-Whitney statistic
with ties counted as one half.

TPR at FPR alpha is the largest TPR over thresholds whose FPR <= alpha, i.e. whose number of
false positives is at most k = floor(alpha * num_nonmembers) (computed with a 1e-9 tolerance
so that, say, 0.29 * 100 counts as 29). At alpha = 0 it is the TPR above the highest
non-member score. Where k = 0 the FPR alpha is NOT RESOLVED by the non-members: the value is
the TPR at 0% empirical FPR, whatever alpha is (TPR at 0.1% and 0.01% FPR coincide with 500
non-members). Departure from the LiRA reference code, on purpose: it takes the last point
with FPR < alpha (strictly); `tpr_at_fpr(..., strict=True)` gives that form (the two differ
only where alpha * num_nonmembers is a whole number, k false positives then counting here and
not there).

Advantage is max over thresholds of TPR - FPR, the membership advantage of a rule that says
"member" above a threshold. The study this project reproduces reports max |TPR - FPR|, which
also counts rules that say "member" BELOW a threshold (an attack that ranks members low);
`advantage(..., absolute=True)` and evaluate's "advantage_abs" give that form.

Intervals (95%, per target: the examples are the unit that varies; the target model and its
shadows are held fixed):
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

The percentile bootstrap (`bootstrap_replicates`, `ci95`) is kept for comparison with older
results only: it resamples members and non-members separately, vectorised over replicates
(every replicate a vector of counts over the distinct scores: O(n) integer work, no sort). Its
interval of TPR at low FPR can exclude the estimate (a resample lacks the top non-member about
37% of the time, which lowers the threshold), so nothing reports it.
"""

from typing import NamedTuple, Optional, Sequence

import numpy as np

from mia_jax import stats
from mia_jax.errors import ConfigError

DEFAULT_FPRS = (1e-2, 1e-3, 1e-4, 0.0)
_FP_TOL = 1e-9
_BOOTSTRAP_CELLS = 1 << 22  # replicates x distinct scores per chunk (int64 counts: 32 MiB)
CONFIDENCE = 0.95            # the level of every "*_ci95" interval


def _check(scores, is_member, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, dtype=np.float64)
  is_member = np.asarray(is_member)
  if scores.ndim != 1 or is_member.shape != scores.shape:
    raise ConfigError(
        f"scores {scores.shape} and is_member {is_member.shape} must be 1-D of equal length; "
        "pass one target model's scores at a time")
  if is_member.dtype != np.bool_:
    if not np.isin(is_member, (0, 1)).all():
      raise ConfigError("is_member must be boolean (or 0/1); pass keep[target] as bool")
    is_member = is_member.astype(bool)
  if np.isnan(scores).any():
    raise ConfigError(
        f"{int(np.isnan(scores).sum())} scores are NaN; check the logits for NaN/inf")
  n_mem = int(is_member.sum())
  if need_both and (n_mem == 0 or n_mem == scores.size):
    raise ConfigError(
        f"need at least one member and one non-member, got {n_mem} members of {scores.size}")
  return scores, is_member


def _max_false_positives(alpha: float, num_nonmembers: int) -> int:
  if not 0.0 <= alpha <= 1.0:
    raise ConfigError(f"FPR alpha={alpha} must lie in [0, 1]")
  return int(np.floor(alpha * num_nonmembers + _FP_TOL))


def _groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sorts descending; returns (order [n], group id of each sorted position [n], group ends)."""
  order = np.argsort(-scores, kind="stable")
  new_group, ends = _breaks(scores[order])
  return order, np.cumsum(new_group), ends


def _breaks(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """For scores sorted descending [n]: (starts a new group [n], last position of each [G])."""
  new_group = np.empty(s.size, bool)
  new_group[0] = False
  np.not_equal(s[1:], s[:-1], out=new_group[1:])
  ends = np.append(np.flatnonzero(new_group[1:]), s.size - 1)
  return new_group, ends


class Tally(NamedTuple):
  """Members and non-members at each distinct score, highest score first (G distinct scores)."""
  thresholds: np.ndarray   # float64 [G], descending
  members: np.ndarray      # int64 [G]
  nonmembers: np.ndarray   # int64 [G]
  tps: np.ndarray          # int64 [G], members at or above each threshold
  fps: np.ndarray          # int64 [G], non-members at or above each threshold

  @property
  def num_members(self) -> int:
    return int(self.tps[-1])

  @property
  def num_nonmembers(self) -> int:
    return int(self.fps[-1])


def tally(scores, is_member) -> Tally:
  """The counts every metric and interval here is computed from (one sort of the scores)."""
  scores, is_member = _check(scores, is_member)
  order = np.argsort(-scores, kind="stable")
  return _tally_sorted(scores[order], is_member[order])


def _tally_sorted(s: np.ndarray, m: np.ndarray) -> Tally:
  """tally of scores already sorted descending, s [n] with is_member m [n]."""
  _, ends = _breaks(s)
  tps = np.cumsum(m)[ends]
  fps = ends + 1 - tps
  members, nonmembers = tps.copy(), fps.copy()
  members[1:] -= tps[:-1]
  nonmembers[1:] -= fps[:-1]
  return Tally(s[ends], members, nonmembers, tps, fps)


def roc_curve(scores, is_member) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC curve, one point per distinct score.

  Args:
    scores: float [n]; higher = more likely a member.
    is_member: bool [n].

  Returns:
    (fpr, tpr, thresholds), each float64 [G + 1] for G distinct scores: point g is the rule
    "member iff score >= thresholds[g]"; thresholds[0] = +inf gives (0, 0), the last gives
    (1, 1). fpr and tpr are non-decreasing.
  """
  return roc_from_tally(tally(scores, is_member))


def roc_from_tally(t: Tally) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """roc_curve's (fpr, tpr, thresholds) [G + 1] from a tally."""
  return (np.concatenate(([0.0], t.fps / t.num_nonmembers)),
          np.concatenate(([0.0], t.tps / t.num_members)),
          np.concatenate(([np.inf], t.thresholds)))


def auc(fpr, tpr) -> float:
  """Trapezoidal area under a ROC curve given as non-decreasing fpr [G], tpr [G]."""
  return float(np.trapezoid(np.asarray(tpr, np.float64), np.asarray(fpr, np.float64)))


def tpr_at_fpr(fpr, tpr, alpha: float, strict: bool = False) -> float:
  """Largest TPR among points with FPR <= alpha (alpha = 0 allowed); fpr, tpr [G].

  strict=True: among points with FPR < alpha, the LiRA reference code's form (0 at alpha = 0).
  """
  fpr = np.asarray(fpr, np.float64)
  if strict:
    ok = fpr < alpha * (1.0 - _FP_TOL) - 1e-15
  else:
    ok = fpr <= alpha * (1.0 + _FP_TOL) + 1e-15
  return float(np.max(np.asarray(tpr)[ok], initial=0.0))


def advantage(fpr, tpr, absolute: bool = False) -> float:
  """Max over thresholds of TPR - FPR (>= 0 since the curve holds (0, 0)).

  absolute=True: max |TPR - FPR|, the study's form (it also counts "member below a threshold").
  """
  d = np.asarray(tpr) - np.asarray(fpr)
  return float(np.max(np.abs(d) if absolute else d))


def balanced_accuracy(fpr, tpr) -> float:
  """Max over thresholds of 1 - (FPR + 1 - TPR) / 2 = (1 + advantage) / 2."""
  return float(np.max(1.0 - (np.asarray(fpr) + 1.0 - np.asarray(tpr)) / 2.0))


def _key(alpha: float) -> str:
  return str(float(alpha))


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
  a = float(np.dot(t.members, v_mem) / n_mem)
  var = (np.dot(t.members, (v_mem - a) ** 2) / max(n_mem - 1, 1) / n_mem
         + np.dot(t.nonmembers, (v_non - a) ** 2) / max(n_non - 1, 1) / n_non)
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
  lo, hi = _tpr_intervals(t, [alpha], confidence, method)
  return float(lo[0]), float(hi[0])


def _tpr_intervals(t: Tally, alphas: Sequence[float], confidence: float = CONFIDENCE,
                   method: str = "quadrature", tp: Optional[np.ndarray] = None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """tpr_interval for each alpha [A]: (lo [A], hi [A]); tp: _within(t, alphas) if known."""
  n_mem, n_non = t.num_members, t.num_nonmembers
  a = (1.0 - confidence) / 2
  piece = a / 2 if method == "union" else a
  ranks = np.array([stats.order_statistic_ranks(n_non, x, piece) for x in alphas])  # [A, 2]
  rank_lo, rank_hi = _above(t, ranks[:, 0], strict=True), _above(t, ranks[:, 1], strict=False)
  if method == "union":
    return (stats.binomial_bounds(rank_lo, n_mem, piece)[0],
            stats.binomial_bounds(rank_hi, n_mem, piece)[1])
  tp = _within(t, alphas) if tp is None else tp
  est = tp / n_mem
  cp_lo, cp_hi = stats.binomial_bounds(tp, n_mem, a)
  lo = est - np.hypot(est - rank_lo / n_mem, est - cp_lo)
  hi = est + np.hypot(rank_hi / n_mem - est, cp_hi - est)
  return np.maximum(lo, 0.0), np.minimum(hi, 1.0)


def _within(t: Tally, alphas: Sequence[float]) -> np.ndarray:
  """Members at or above the lowest threshold with at most floor(alpha n_non) false positives,
  int [A] (tpr_at_fpr's count)."""
  k = [_max_false_positives(x, t.num_nonmembers) for x in alphas]
  g = np.searchsorted(t.fps, k, side="right")     # thresholds 0 .. g - 1 qualify
  return np.where(g > 0, t.tps[np.maximum(g - 1, 0)], 0)


def _above(t: Tally, j: np.ndarray, strict: bool) -> np.ndarray:
  """Members above (strict) or at or above the j-th highest non-member, int [len(j)]
  (j = 0: none; j past the last non-member: all)."""
  j = np.asarray(j)
  g = np.minimum(np.searchsorted(t.fps, np.maximum(j, 1)), t.fps.size - 1)  # group of the j-th
  count = t.tps[g] - t.members[g] if strict else t.tps[g]
  return np.where(j == 0, 0, np.where(j > t.num_nonmembers, t.num_members, count))


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
  return float(_tpr_lower(t, [alpha])[0])


def _tpr_lower(t: Tally, alphas: Sequence[float], tp: Optional[np.ndarray] = None
               ) -> np.ndarray:
  """tpr_at_fpr_lower for each alpha [A]; tp: _within(t, alphas) if known."""
  n_non = t.num_nonmembers
  pos = np.asarray(alphas, np.float64) * (n_non + 1)
  j = np.minimum(np.floor(pos + _FP_TOL), n_non).astype(np.int64)
  w = np.clip(pos - j, 0.0, 1.0)
  counts = _above(t, np.concatenate([j, np.minimum(j + 1, n_non)]), strict=True)
  below, above = counts[:j.size], counts[j.size:]
  tp = _within(t, alphas) if tp is None else tp
  return np.minimum((1 - w) * below + w * above, tp) / t.num_members


def advantage_interval(value: float, n_mem: int, n_non: int,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
  """value +- (eps_mem + eps_non), the DKW band (module docstring), clipped to [0, 1]."""
  a = (1.0 - confidence) / 2
  eps = float(stats.dkw_epsilon(n_mem, a) + stats.dkw_epsilon(n_non, a))
  return max(0.0, value - eps), min(1.0, value + eps)


def bootstrap_replicates(scores, is_member, fprs: Sequence[float] = DEFAULT_FPRS, num: int = 1000,
              seed: int = 0) -> dict:
  """Percentile-bootstrap replicates of AUC and TPR at FPR.

  Members and non-members are resampled separately, so every replicate keeps the counts.

  Args:
    scores: float [n]; is_member: bool [n].
    fprs: the alphas for TPR at FPR.
    num: number of replicates B.
    seed: seed of numpy's default_rng.

  Returns:
    {"auc": float64 [B], "tpr_at_fpr": {str(alpha): float64 [B]}}.
  """
  scores, is_member = _check(scores, is_member)
  if num < 1:
    raise ConfigError(f"bootstrap={num} replicates; use a positive number (e.g. 1000)")
  order, group, ends = _groups(scores)
  num_groups = ends.size
  m_sorted = is_member[order]
  g_mem, g_non = group[m_sorted], group[~m_sorted]
  n_mem, n_non = g_mem.size, g_non.size
  limits = {_key(a): _max_false_positives(a, n_non) for a in fprs}
  rng = np.random.default_rng(seed)
  aucs = np.empty(num)
  tprs = {k: np.empty(num) for k in limits}
  chunk = max(1, min(num, _BOOTSTRAP_CELLS // max(num_groups, n_mem, n_non)))
  for start in range(0, num, chunk):
    b = min(chunk, num - start)
    offsets = (np.arange(b) * num_groups)[:, None]

    def counts(g, n):
      draw = g[rng.integers(0, n, size=(b, n))] + offsets
      return np.bincount(draw.ravel(), minlength=b * num_groups).reshape(b, num_groups)

    c_mem, c_non = counts(g_mem, n_mem), counts(g_non, n_non)
    cum_tp, cum_fp = np.cumsum(c_mem, axis=1), np.cumsum(c_non, axis=1)
    beaten = (n_non - cum_fp) + 0.5 * c_non  # non-members below (ties: one half)
    aucs[start:start + b] = np.einsum("bg,bg->b", c_mem, beaten) / (n_mem * n_non)
    for k, limit in limits.items():
      included = np.sum(cum_fp <= limit, axis=1)  # prefix length: cum_fp is monotone
      tp = np.take_along_axis(cum_tp, np.maximum(included - 1, 0)[:, None], axis=1)[:, 0]
      tprs[k][start:start + b] = np.where(included > 0, tp, 0) / n_mem
  return {"auc": aucs, "tpr_at_fpr": tprs}


def ci95(samples) -> list[float]:
  """[2.5th, 97.5th] percentiles of bootstrap replicates [B]."""
  lo, hi = np.percentile(np.asarray(samples), [2.5, 97.5])
  return [float(lo), float(hi)]


def evaluate(scores, is_member, fprs: Sequence[float] = DEFAULT_FPRS, bootstrap: int = 0,
             seed: int = 0, intervals: bool = True) -> dict:
  """All metrics of one target's scores, each with its 95% interval over examples.

  Args:
    scores: float [n], higher = member.
    is_member: bool [n].
    fprs: alphas for TPR at FPR; keys are str(float(alpha)), e.g. "0.001", "0.0".
    bootstrap: replicates of the percentile bootstrap, recorded for comparison with older
      results only (0: none; module docstring).
    seed: bootstrap seed.
    intervals: False leaves out the "*_ci95" entries (an interval over targets needs only
      the values: evaluate_slices with several targets).

  Returns:
    {"auc", "advantage", "advantage_abs", "balanced_accuracy": float,
     "tpr_at_fpr": {key: float}, "num_nonmembers", "num_members": int,
     "nonmembers_at_fpr": {key: k = floor(alpha * num_nonmembers)} (k = 0: not resolved),
     "auc_ci95", "advantage_ci95", "advantage_abs_ci95", "balanced_accuracy_ci95": [lo, hi],
     "tpr_at_fpr_ci95": {key: [lo, hi]} (the band; lo = 0 where k = 0),
     "tpr_at_fpr_lower": {key: float} (tpr_at_fpr_lower: <= the estimate)}
    and, with bootstrap > 0, "bootstrap_ci95": {"auc": [lo, hi], "tpr_at_fpr": {key: [lo, hi]}}.
    Every interval contains its estimate.
  """
  out = evaluate_tally(tally(scores, is_member), fprs, intervals=intervals)
  if bootstrap:
    out["bootstrap_ci95"] = bootstrap_ci95(scores, is_member, fprs, bootstrap, seed)
  return out


def bootstrap_ci95(scores, is_member, fprs: Sequence[float] = DEFAULT_FPRS, num: int = 1000,
                   seed: int = 0) -> dict:
  """The percentile bootstrap's intervals (for comparison only: module docstring).

  Returns:
    {"auc": [lo, hi], "tpr_at_fpr": {key: [lo, hi]}}.
  """
  reps = bootstrap_replicates(scores, is_member, fprs, num, seed)
  return {"auc": ci95(reps["auc"]),
          "tpr_at_fpr": {k: ci95(v) for k, v in reps["tpr_at_fpr"].items()}}


def evaluate_tally(t: Tally, fprs: Sequence[float] = DEFAULT_FPRS, intervals: bool = True
                   ) -> dict:
  """evaluate's dict, without the bootstrap, from a tally (one sort serves the ROC too).

  The AUC is auc(roc_curve(...)), bit for bit; its interval is centred on the Mann-Whitney
  statistic, which equals it up to rounding.
  """
  n_mem, n_non = t.num_members, t.num_nonmembers
  keys = [_key(a) for a in fprs]
  tp = _within(t, fprs)
  d = t.tps / n_mem - t.fps / n_non                 # TPR - FPR at every threshold but +inf
  adv = max(0.0, float(d.max()))                    # +inf gives (0, 0): 0
  adv_abs = max(adv, float(-d.min()))
  a, var = _mann_whitney(t)
  fpr, tpr = (np.concatenate(([0.0], c)) for c in (t.fps / n_non, t.tps / n_mem))
  out = {
      "auc": auc(fpr, tpr),
      "advantage": adv,
      "advantage_abs": adv_abs,
      "balanced_accuracy": (1.0 + adv) / 2,
      "tpr_at_fpr": dict(zip(keys, (tp / n_mem).tolist())),
      "num_nonmembers": n_non,
      "num_members": n_mem,
      "nonmembers_at_fpr": {k: _max_false_positives(x, n_non) for k, x in zip(keys, fprs)},
      "tpr_at_fpr_lower": dict(zip(keys, _tpr_lower(t, fprs, tp).tolist())),
  }
  if intervals:
    adv_ci = advantage_interval(adv, n_mem, n_non)
    lo, hi = _tpr_intervals(t, fprs, tp=tp)
    out.update({
        "auc_ci95": list(_auc_ci(a, var, n_mem, n_non)),
        "advantage_ci95": list(adv_ci),
        "advantage_abs_ci95": list(advantage_interval(adv_abs, n_mem, n_non)),
        "balanced_accuracy_ci95": [(1 + adv_ci[0]) / 2, (1 + adv_ci[1]) / 2],
        "tpr_at_fpr_ci95": {k: [float(l), float(h)] for k, l, h in zip(keys, lo, hi)},
    })
  return out


def evaluate_slices(scores, is_member, labels, predictions,
                    fprs: Sequence[float] = DEFAULT_FPRS, intervals: bool = True) -> dict:
  """Metrics per true class and for correctly vs incorrectly classified examples.

  Args:
    scores: float [n]; is_member: bool [n].
    labels: int [n] true classes; predictions: int [n] the target model's predicted classes.
    fprs: alphas for TPR at FPR.
    intervals: as evaluate.

  Returns:
    {"class": {str(c): metrics}, "correct": metrics, "incorrect": metrics}, where metrics is
    `evaluate`'s dict, or {"num_members", "num_nonmembers", "skipped": reason} for a slice
    lacking members or non-members.
  """
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  if not np.shape(scores) == np.shape(is_member) == labels.shape == predictions.shape:
    raise ConfigError("scores, is_member, labels and predictions must all have shape [n]")
  scores, is_member = _check(scores, is_member, need_both=False)   # a slice may lack either
  order = np.argsort(-scores, kind="stable")      # one sort; each slice keeps its order
  s, m, labels = scores[order], is_member[order], labels[order]
  correct = labels == predictions[order]

  def one(mask):
    n_mem = int(np.count_nonzero(m[mask]))
    n_non = int(np.count_nonzero(mask)) - n_mem
    if n_mem == 0 or n_non == 0:
      return {"num_members": n_mem, "num_nonmembers": n_non,
              "skipped": "slice lacks members or non-members"}
    return evaluate_tally(_tally_sorted(s[mask], m[mask]), fprs, intervals=intervals)

  return {
      "class": {str(int(c)): one(labels == c) for c in np.unique(labels)},
      "correct": one(correct),
      "incorrect": one(~correct),
  }
