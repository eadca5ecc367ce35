"""ROC curve and its point metrics, from scores where higher = "member".

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

Every metric and interval of this package is computed from a `Tally` (members and
non-members at each distinct score, one sort of the scores). The sort need not be stable:
a tally counts each tie group as a whole, whatever the order inside it.
"""

from typing import NamedTuple, Sequence

import numpy as np

from mia_jax.errors import ConfigError

DEFAULT_FPRS = (1e-2, 1e-3, 1e-4, 0.0)

FP_TOL = 1e-9


def check_scores(scores, is_member, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
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


def max_false_positives(alpha: float, num_nonmembers: int) -> int:
  if not 0.0 <= alpha <= 1.0:
    raise ConfigError(f"FPR alpha={alpha} must lie in [0, 1]")
  return int(np.floor(alpha * num_nonmembers + FP_TOL))


def group_breaks(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
  scores, is_member = check_scores(scores, is_member)
  order = np.argsort(-scores)        # unstable is enough: a tally counts whole tie groups
  return tally_sorted(scores[order], is_member[order])


def tally_sorted(s: np.ndarray, m: np.ndarray) -> Tally:
  """tally of scores already sorted descending, s [n] with is_member m [n]."""
  _, ends = group_breaks(s)
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
    ok = fpr < alpha * (1.0 - FP_TOL) - 1e-15
  else:
    ok = fpr <= alpha * (1.0 + FP_TOL) + 1e-15
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


def members_within(t: Tally, alphas: Sequence[float]) -> np.ndarray:
  """Members at or above the lowest threshold with at most floor(alpha n_non) false positives,
  int [A] (tpr_at_fpr's count)."""
  k = [max_false_positives(x, t.num_nonmembers) for x in alphas]
  g = np.searchsorted(t.fps, k, side="right")     # thresholds 0 .. g - 1 qualify
  return np.where(g > 0, t.tps[np.maximum(g - 1, 0)], 0)


def members_above(t: Tally, j: np.ndarray, strict: bool) -> np.ndarray:
  """Members above (strict) or at or above the j-th highest non-member, int [len(j)]
  (j = 0: none; j past the last non-member: all)."""
  j = np.asarray(j)
  g = np.minimum(np.searchsorted(t.fps, np.maximum(j, 1)), t.fps.size - 1)  # group of the j-th
  count = t.tps[g] - t.members[g] if strict else t.tps[g]
  return np.where(j == 0, 0, np.where(j > t.num_nonmembers, t.num_members, count))


def fpr_key(alpha: float) -> str:
  return str(float(alpha))
