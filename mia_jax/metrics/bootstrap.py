"""The percentile bootstrap of AUC and TPR at FPR, kept for comparison with older results only.

It resamples members and non-members separately, vectorised over replicates (every replicate
a vector of counts over the distinct scores: O(n) integer work, no sort). Its interval of TPR
at low FPR can exclude the estimate (a resample lacks the top non-member about 37% of the
time, which lowers the threshold), so nothing reports it: intervals.py has the intervals the
reports use.
"""

from typing import Sequence

import numpy as np

from mia_jax.errors import ConfigError
from mia_jax.metrics import roc

_BOOTSTRAP_CELLS = 1 << 22  # replicates x distinct scores per chunk (int64 counts: 32 MiB)


def _groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sorts descending; returns (order [n], group id of each sorted position [n], group ends)."""
  order = np.argsort(-scores, kind="stable")
  new_group, ends = roc.group_breaks(scores[order])
  return order, np.cumsum(new_group), ends


def bootstrap_replicates(scores, is_member, fprs: Sequence[float] = roc.DEFAULT_FPRS,
                         num: int = 1000, seed: int = 0) -> dict:
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
  scores, is_member = roc.check_scores(scores, is_member)
  if num < 1:
    raise ConfigError(f"bootstrap={num} replicates; use a positive number (e.g. 1000)")
  order, group, ends = _groups(scores)
  num_groups = ends.size
  m_sorted = is_member[order]
  g_mem, g_non = group[m_sorted], group[~m_sorted]
  n_mem, n_non = g_mem.size, g_non.size
  limits = {roc.fpr_key(a): roc.max_false_positives(a, n_non) for a in fprs}
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


def bootstrap_ci95(scores, is_member, fprs: Sequence[float] = roc.DEFAULT_FPRS,
                   num: int = 1000, seed: int = 0) -> dict:
  """The percentile bootstrap's intervals (for comparison only: module docstring).

  Returns:
    {"auc": [lo, hi], "tpr_at_fpr": {key: [lo, hi]}}.
  """
  reps = bootstrap_replicates(scores, is_member, fprs, num, seed)
  return {"auc": ci95(reps["auc"]),
          "tpr_at_fpr": {k: ci95(v) for k, v in reps["tpr_at_fpr"].items()}}
