"""All metrics of one target's scores with their 95% intervals over examples, in one dict.

`evaluate` is what the attacks' per-target evaluation and the reports read; `evaluate_slices`
gives the same per true class and for correctly vs incorrectly classified examples.
"""

from typing import Sequence

import numpy as np

from mia_jax.errors import ConfigError
from mia_jax.metrics import bootstrap as bootstrap_lib
from mia_jax.metrics import intervals as intervals_lib
from mia_jax.metrics import roc


def evaluate(scores, is_member, fprs: Sequence[float] = roc.DEFAULT_FPRS, bootstrap: int = 0,
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
  out = evaluate_tally(roc.tally(scores, is_member), fprs, intervals=intervals)
  if bootstrap:
    out["bootstrap_ci95"] = bootstrap_lib.bootstrap_ci95(scores, is_member, fprs, bootstrap,
                                                         seed)
  return out


def evaluate_tally(t: roc.Tally, fprs: Sequence[float] = roc.DEFAULT_FPRS,
                   intervals: bool = True) -> dict:
  """evaluate's dict, without the bootstrap, from a tally (one sort serves the ROC too).

  The AUC is auc(roc_curve(...)), bit for bit; its interval is centred on the Mann-Whitney
  statistic, which equals it up to rounding.
  """
  n_mem, n_non = t.num_members, t.num_nonmembers
  keys = [roc.fpr_key(a) for a in fprs]
  tp = roc.members_within(t, fprs)
  d = t.tps / n_mem - t.fps / n_non                 # TPR - FPR at every threshold but +inf
  adv = max(0.0, float(d.max()))                    # +inf gives (0, 0): 0
  adv_abs = max(adv, float(-d.min()))
  fpr, tpr = (np.concatenate(([0.0], c)) for c in (t.fps / n_non, t.tps / n_mem))
  out = {
      "auc": roc.auc(fpr, tpr),
      "advantage": adv,
      "advantage_abs": adv_abs,
      "balanced_accuracy": (1.0 + adv) / 2,
      "tpr_at_fpr": dict(zip(keys, (tp / n_mem).tolist())),
      "num_nonmembers": n_non,
      "num_members": n_mem,
      "nonmembers_at_fpr": {k: roc.max_false_positives(x, n_non) for k, x in zip(keys, fprs)},
      "tpr_at_fpr_lower": dict(zip(keys,
                                   intervals_lib.tpr_at_fpr_lowers(t, fprs, tp).tolist())),
  }
  if intervals:
    adv_ci = intervals_lib.advantage_interval(adv, n_mem, n_non)
    lo, hi = intervals_lib.tpr_intervals(t, fprs, tp=tp)
    out.update({
        "auc_ci95": list(intervals_lib.auc_interval(t)),
        "advantage_ci95": list(adv_ci),
        "advantage_abs_ci95": list(intervals_lib.advantage_interval(adv_abs, n_mem, n_non)),
        "balanced_accuracy_ci95": [(1 + adv_ci[0]) / 2, (1 + adv_ci[1]) / 2],
        "tpr_at_fpr_ci95": {k: [float(l), float(h)] for k, l, h in zip(keys, lo, hi)},
    })
  return out


def evaluate_slices(scores, is_member, labels, predictions,
                    fprs: Sequence[float] = roc.DEFAULT_FPRS, intervals: bool = True) -> dict:
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
  scores, is_member = roc.check_scores(scores, is_member, need_both=False)  # a slice may lack
  order = np.argsort(-scores)        # one sort (a tally needs no stable one); slices keep it
  s, m, labels = scores[order], is_member[order], labels[order]
  correct = labels == predictions[order]

  def one(mask):
    n_mem = int(np.count_nonzero(m[mask]))
    n_non = int(np.count_nonzero(mask)) - n_mem
    if n_mem == 0 or n_non == 0:
      return {"num_members": n_mem, "num_nonmembers": n_non,
              "skipped": "slice lacks members or non-members"}
    return evaluate_tally(roc.tally_sorted(s[mask], m[mask]), fprs, intervals=intervals)

  return {
      "class": {str(int(c)): one(labels == c) for c in np.unique(labels)},
      "correct": one(correct),
      "incorrect": one(~correct),
  }
