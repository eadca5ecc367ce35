"""Membership-inference metrics and their 95% intervals, from scores where higher = "member".

One target at a time: every function takes `scores` float [n] and `is_member` bool [n] (or a
`Tally` of them). By concern:

  roc.py        tally, roc_curve, auc, tpr_at_fpr, advantage, balanced_accuracy: the point
                metrics, and the conventions (ties, TPR at FPR <= alpha, resolved FPRs)
  intervals.py  auc_interval (DeLong, logit scale), tpr_interval (order statistics and
                Clopper-Pearson), tpr_at_fpr_lower, advantage_interval (DKW): the examples
                are the unit that varies, the target model held fixed
  summary.py    evaluate, evaluate_tally, evaluate_slices: every metric with its interval
  bootstrap.py  the percentile bootstrap, for comparison with older results only

The mean over target models gets its interval in attacks/evaluate.py (models are the unit).

Example:
  >>> import numpy as np
  >>> from mia_jax import metrics
  >>> scores, is_member = np.array([0.9, 0.8, 0.3, 0.1]), np.array([True, False, True, False])
  >>> fpr, tpr, _ = metrics.roc_curve(scores, is_member)
  >>> metrics.auc(fpr, tpr)
  0.75
  >>> sorted(metrics.evaluate(scores, is_member))[:3]
  ['advantage', 'advantage_abs', 'advantage_abs_ci95']
"""

from mia_jax.metrics import bootstrap, intervals, roc, summary
from mia_jax.metrics.bootstrap import bootstrap_ci95, bootstrap_replicates, ci95
from mia_jax.metrics.intervals import (CONFIDENCE, TPR_METHODS, advantage_interval,
                                       auc_interval, tpr_at_fpr_lower, tpr_interval)
from mia_jax.metrics.roc import (DEFAULT_FPRS, Tally, advantage, auc, balanced_accuracy,
                                 roc_curve, roc_from_tally, tally, tpr_at_fpr)
from mia_jax.metrics.summary import evaluate, evaluate_slices, evaluate_tally

__all__ = [
    # modules
    "bootstrap", "intervals", "roc", "summary",
    # data types and constants
    "CONFIDENCE", "DEFAULT_FPRS", "TPR_METHODS", "Tally",
    # point metrics
    "advantage", "auc", "balanced_accuracy", "roc_curve", "roc_from_tally", "tally",
    "tpr_at_fpr",
    # their intervals over examples
    "advantage_interval", "auc_interval", "tpr_at_fpr_lower", "tpr_interval",
    # everything for one target
    "evaluate", "evaluate_slices", "evaluate_tally",
    # the legacy bootstrap
    "bootstrap_ci95", "bootstrap_replicates", "ci95",
]
