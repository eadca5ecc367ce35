"""Empirical privacy auditing: lower bounds on epsilon from canary membership scores.

A thin wrapper over jax_privacy.auditing.CanaryScoreAuditor (used as is), which implements the
one-run audit of Steinke, Nasr and Jagielski 2023 ("Privacy Auditing with One (1) Training Run",
arXiv 2305.08846): m canaries are each included in training independently with probability 1/2;
an attack scores every canary (higher = more likely a member); guessing "member" for the
canaries scoring above a threshold, too many correct guesses reject (epsilon, delta)-DP. The
threshold is searched over all scores with a Bonferroni correction, so the bound holds at the
stated confidence.

Guarantee: if training is (epsilon, delta)-DP and canaries were included by independent fair
coins, the returned value exceeds epsilon with probability at most 1 - confidence. A bound above
the accountant's epsilon therefore points to a bug (in clipping, noise, sampling or accounting).
"""

import numpy as np
from jax_privacy import auditing as jp_auditing

from mia_jax.errors import ConfigError

METHODS = ("one_run", "one_run_fdp", "clopper_pearson")


def epsilon_lower_bound(scores, included, delta: float, confidence: float = 0.95, *,
                        method: str = "one_run") -> float:
  """Epsilon lower bound at `confidence` from canary scores.

  Args:
    scores: [m] attack scores, higher = more likely included.
    included: [m] bool, whether each canary was in the training set.
    delta: the delta of the (epsilon, delta) claim being audited, e.g. 1 / n.
    confidence: e.g. 0.95.
    method: "one_run" (Steinke et al. 2023; one training run, needs independent fair-coin
      inclusion), "one_run_fdp" (Mahloujifar et al. 2024, tighter, same setting) or
      "clopper_pearson" (TPR/FPR intervals; the classic many-run audit where each score comes
      from an independent training run).

  Returns:
    A float >= 0.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  included = np.asarray(included, bool).reshape(-1)
  if scores.shape != included.shape:
    raise ConfigError(f"scores {scores.shape} and included {included.shape} must have one "
                      "entry per canary")
  if included.all() or not included.any():
    raise ConfigError("auditing needs both included and excluded canaries")
  if not np.isfinite(scores).all():
    raise ConfigError("canary scores must be finite; drop or clip non-finite scores first")
  if not 0 < confidence < 1:
    raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
  if not 0 < delta < 1:
    raise ConfigError(f"delta must be in (0, 1), got {delta}")
  auditor = jp_auditing.CanaryScoreAuditor(scores[included], scores[~included])
  significance = 1.0 - confidence
  if method == "one_run":
    return float(auditor.epsilon_one_run(significance, delta))
  if method == "one_run_fdp":
    return float(auditor.epsilon_one_run_fdp(significance, delta))
  if method == "clopper_pearson":
    return float(auditor.epsilon_clopper_pearson(min(significance, 0.499), delta))
  raise ConfigError(f"unknown audit method {method!r}; choose one of {list(METHODS)}")


def audit_targets(scores, keep, canaries, delta: float, confidence: float = 0.95, *,
                  method: str = "one_run") -> dict:
  """The one-run epsilon lower bound of each target model from its canaries' scores.

  Args:
    scores: [T, N] attack scores of every pool example for T target models (higher = member).
    keep: bool [T, N], the targets' rows of the keep matrix.
    canaries: int [K], the canaries' pool indices.
    delta, confidence, method: as epsilon_lower_bound.

  Returns:
    {"per_target": [T floats], "mean", "max", "num_canaries", "confidence", "delta", "method"}.
  """
  scores = np.asarray(scores, np.float64)
  keep = np.asarray(keep, bool)
  canaries = np.asarray(canaries, np.int64)
  bounds = [epsilon_lower_bound(scores[t, canaries], keep[t, canaries], delta, confidence,
                                method=method) for t in range(scores.shape[0])]
  return {"per_target": bounds, "mean": float(np.mean(bounds)), "max": float(np.max(bounds)),
          "num_canaries": int(len(canaries)), "confidence": confidence, "delta": delta,
          "method": method}
