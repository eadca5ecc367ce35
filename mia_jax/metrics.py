"""Membership-inference metrics from scores where a higher score means "member".

All functions take 1-D numpy arrays: `scores` float [n] and `is_member` bool [n]. Tied scores
form ONE threshold (no staircase inside a tie), so the ROC is the step-free curve through the
points (FPR, TPR) of the decision rule "member iff score >= threshold", starting at (0, 0)
(threshold +inf) and ending at (1, 1). Its trapezoidal AUC equals the Mann-Whitney statistic
with ties counted as one half.

TPR at FPR alpha is the largest TPR over thresholds whose FPR <= alpha, i.e. whose number of
false positives is at most floor(alpha * num_nonmembers) (computed with a 1e-9 tolerance so
that, say, 0.29 * 100 counts as 29). At alpha = 0 it is the TPR above the highest
non-member score.

The bootstrap resamples members and non-members separately (with replacement). It is written
by hand because it is vectorised over replicates: every replicate is a vector of counts over
the distinct score values, so one replicate costs O(n) integer work and no sort.
"""

from typing import Sequence

import numpy as np

from mia_jax.errors import ConfigError

DEFAULT_FPRS = (1e-2, 1e-3, 1e-4, 0.0)
_FP_TOL = 1e-9
_BOOTSTRAP_CELLS = 1 << 22  # replicates x distinct scores per chunk (int64 counts: 32 MiB)


def _check(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
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
  if n_mem == 0 or n_mem == scores.size:
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
  s = scores[order]
  new_group = np.r_[False, s[1:] != s[:-1]]
  group = np.cumsum(new_group)
  ends = np.r_[np.nonzero(new_group[1:])[0], s.size - 1]
  return order, group, ends


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
  scores, is_member = _check(scores, is_member)
  order, _, ends = _groups(scores)
  tps = np.cumsum(is_member[order])[ends]
  fps = ends + 1 - tps
  n_mem, n_non = tps[-1], fps[-1]
  fpr = np.r_[0.0, fps / n_non]
  tpr = np.r_[0.0, tps / n_mem]
  thresholds = np.r_[np.inf, scores[order][ends]]
  return fpr, tpr, thresholds


def auc(fpr, tpr) -> float:
  """Trapezoidal area under a ROC curve given as non-decreasing fpr [G], tpr [G]."""
  return float(np.trapezoid(np.asarray(tpr, np.float64), np.asarray(fpr, np.float64)))


def tpr_at_fpr(fpr, tpr, alpha: float) -> float:
  """Largest TPR among points with FPR <= alpha (alpha = 0 allowed); fpr, tpr [G]."""
  fpr = np.asarray(fpr, np.float64)
  ok = fpr <= alpha * (1.0 + _FP_TOL) + 1e-15
  return float(np.max(np.asarray(tpr)[ok], initial=0.0))


def advantage(fpr, tpr) -> float:
  """Max over thresholds of TPR - FPR (>= 0 since the curve holds (0, 0))."""
  return float(np.max(np.asarray(tpr) - np.asarray(fpr)))


def balanced_accuracy(fpr, tpr) -> float:
  """Max over thresholds of 1 - (FPR + 1 - TPR) / 2 = (1 + advantage) / 2."""
  return float(np.max(1.0 - (np.asarray(fpr) + 1.0 - np.asarray(tpr)) / 2.0))


def _key(alpha: float) -> str:
  return str(float(alpha))


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
             seed: int = 0) -> dict:
  """All metrics of one target's scores.

  Args:
    scores: float [n], higher = member.
    is_member: bool [n].
    fprs: alphas for TPR at FPR; keys are str(float(alpha)), e.g. "0.001", "0.0".
    bootstrap: number of bootstrap replicates for 95% intervals (0: none).
    seed: bootstrap seed.

  Returns:
    {"auc", "advantage", "balanced_accuracy": float, "tpr_at_fpr": {key: float},
     "num_nonmembers", "num_members": int,
     "nonmembers_at_fpr": {key: floor(alpha * num_nonmembers)}} and, with bootstrap > 0,
    "auc_ci95": [lo, hi], "tpr_at_fpr_ci95": {key: [lo, hi]}.
  """
  fpr, tpr, _ = roc_curve(scores, is_member)
  is_member = np.asarray(is_member).astype(bool)
  n_mem = int(is_member.sum())
  n_non = int(is_member.size - n_mem)
  out = {
      "auc": auc(fpr, tpr),
      "advantage": advantage(fpr, tpr),
      "balanced_accuracy": balanced_accuracy(fpr, tpr),
      "tpr_at_fpr": {_key(a): tpr_at_fpr(fpr, tpr, a) for a in fprs},
      "num_nonmembers": n_non,
      "num_members": n_mem,
      "nonmembers_at_fpr": {_key(a): _max_false_positives(a, n_non) for a in fprs},
  }
  if bootstrap:
    reps = bootstrap_replicates(scores, is_member, fprs, bootstrap, seed)
    out["auc_ci95"] = ci95(reps["auc"])
    out["tpr_at_fpr_ci95"] = {k: ci95(v) for k, v in reps["tpr_at_fpr"].items()}
  return out


def evaluate_slices(scores, is_member, labels, predictions,
                    fprs: Sequence[float] = DEFAULT_FPRS) -> dict:
  """Metrics per true class and for correctly vs incorrectly classified examples.

  Args:
    scores: float [n]; is_member: bool [n].
    labels: int [n] true classes; predictions: int [n] the target model's predicted classes.
    fprs: alphas for TPR at FPR.

  Returns:
    {"class": {str(c): metrics}, "correct": metrics, "incorrect": metrics}, where metrics is
    `evaluate`'s dict, or {"num_members", "num_nonmembers", "skipped": reason} for a slice
    lacking members or non-members.
  """
  scores = np.asarray(scores)
  is_member = np.asarray(is_member).astype(bool)
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  if not scores.shape == is_member.shape == labels.shape == predictions.shape:
    raise ConfigError("scores, is_member, labels and predictions must all have shape [n]")

  def one(mask):
    n_mem = int(is_member[mask].sum())
    n_non = int(mask.sum()) - n_mem
    if n_mem == 0 or n_non == 0:
      return {"num_members": n_mem, "num_nonmembers": n_non,
              "skipped": "slice lacks members or non-members"}
    return evaluate(scores[mask], is_member[mask], fprs)

  correct = labels == predictions
  return {
      "class": {str(int(c)): one(labels == c) for c in np.unique(labels)},
      "correct": one(correct),
      "incorrect": one(~correct),
  }
