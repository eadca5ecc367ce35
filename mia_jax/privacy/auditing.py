"""Empirical privacy auditing: lower bounds on epsilon from canary membership scores.

The one-run audit of Steinke, Nasr and Jagielski 2023 ("Privacy Auditing with One (1) Training
Run", arXiv 2305.08846): m canaries are each included in training independently with
probability 1/2; from the trained model the auditor guesses IN for k+ canaries, OUT for k-
others and abstains on the rest; too many correct guesses among the k = k+ + k- reject
(epsilon, delta)-DP. The bound is the largest epsilon rejected at the stated confidence.

Two analyses of the same counts (jax_privacy.auditing computes both):
  one_run      Steinke et al.'s binomial tail plus a delta term that grows as 2 m delta. Valid
               for ANY (epsilon, delta)-DP training: the default and the headline. Its delta
               term caps it even when every guess is right, so audit a claim at a delta well
               below 1 / (2 m) (experiments/results/dp_audit_fashion_mnist.md tabulates the cap).
  one_run_fdp  the f-DP analysis of Mahloujifar et al. 2024 (arXiv 2410.22235), far tighter.
               It rejects the Gaussian trade-off curve that is (epsilon, delta)-DP, so it bounds
               epsilon only for training whose trade-off curve is at least that Gaussian's.
               DP-SGD's is close to one (many composed subsampled Gaussians), but not every
               (epsilon, delta)-DP mechanism's is: canaries released by randomized response
               (pure epsilon-DP) are audited above their epsilon by it, never by one_run
               (tests/test_audit.py). Report it beside one_run (audit_targets' `beside`), named
               with its assumption.

Guesses. Both analyses hold for any guess vector in {-1, 0, +1}^m that is a function of the
trained model (Steinke et al. Theorem 3.1). jax_privacy's CanaryScoreAuditor exposes them for
one-sided guesses only (k- = 0, a threshold on the scores), so this module forms the guesses
itself and passes the counts (m, k, correct) to jax_privacy.auditing's counts-level functions
(`_epsilon_one_run`, `_epsilon_one_run_fdp`; tested equal to the public API where both apply):
  two_sided  IN for the ceil(k/2) highest scores, OUT for the floor(k/2) lowest. A model that
             memorises mislabelled canaries fits the members' wrong labels (high score) and
             predicts the non-members' true class (low score): both tails are evidence, and up
             to all m canaries can be guessed instead of about m/2.
  one_sided  IN for the k highest scores (jax_privacy's own rule).
Ties in the scores are broken by canary order, which the inclusion coins do not depend on.

Validity. The number of guesses is searched over a grid fixed in advance (`fractions` of m),
and each candidate is tested at (1 - confidence) / len(grid) (Bonferroni), so the best
candidate's bound holds at `confidence`. (jax_privacy's own Bonferroni strategy divides by the
number of thresholds on the ROC's Pareto frontier, a count that depends on the inclusion
labels, and so rejects a true null more often than it says: see the results file above.)
Across T targets (T training runs),
`audit_targets` reports each target's bound at `confidence` (valid for that target alone: the
largest of T such bounds holds only at about confidence^T, 81% for four at 95%) and the run's
headline, valid at `confidence` for the run as a whole: either the largest of the targets'
bounds each computed at 1 - (1 - confidence) / T (Bonferroni across targets, the default), or
the bound of target 0 alone (pre-registered).

Guarantee (one_run): if training is (epsilon, delta)-DP and canaries were included by
independent fair coins, the headline exceeds epsilon with probability at most 1 - confidence.
A bound above the accountant's epsilon therefore points to a bug (in clipping, noise, sampling
or accounting); mia_jax.training.dp's fault injection (dp.fault) checks that the audit sees one.

`clopper_pearson` is the classic many-run audit (TPR/FPR intervals over thresholds, with
jax_privacy's threshold correction), valid only when each score comes from an independent
training run; it ignores `fractions`.
"""

import math

import numpy as np
from jax_privacy import auditing as jp_auditing

from mia_jax.errors import ConfigError

METHODS = ("one_run_fdp", "one_run", "clopper_pearson")
GUESSES = ("two_sided", "one_sided")
HEADLINES = ("bonferroni", "first_target")
ASSUMES = {
    "one_run": "any (epsilon, delta)-DP training",
    "one_run_fdp": ("training whose trade-off curve is at least the Gaussian one with the same "
                    "(epsilon, delta); DP-SGD's is close to it, a pure epsilon-DP mechanism's "
                    "is not"),
    "clopper_pearson": "scores from independent training runs (not one run's canaries)",
}
# Numbers of guesses searched, as fractions of the canaries (pre-registered: fixed before any
# score is seen). Few candidates keep the Bonferroni factor small.
FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


def check_config(audit_cfg) -> None:
  """Raises ConfigError for an unknown audit.method, guesses or headline, or bad fractions."""
  if audit_cfg.method not in METHODS:
    raise ConfigError(f"unknown audit.method {audit_cfg.method!r}; choose one of "
                      f"{list(METHODS)}")
  if audit_cfg.get("guesses", "two_sided") not in GUESSES:
    raise ConfigError(f"unknown audit.guesses {audit_cfg.guesses!r}; choose one of "
                      f"{list(GUESSES)}")
  if audit_cfg.get("headline", "bonferroni") not in HEADLINES:
    raise ConfigError(f"unknown audit.headline {audit_cfg.headline!r}; choose one of "
                      f"{list(HEADLINES)}")
  fractions = tuple(audit_cfg.get("fractions", FRACTIONS))
  if not fractions or not all(0 < float(f) <= 1 for f in fractions):
    raise ConfigError(f"audit.fractions={fractions} must be a non-empty tuple of numbers in "
                      f"(0, 1]; e.g. --config.audit.fractions=\"{FRACTIONS}\"")
  for other in audit_cfg.get("beside", ()):
    if other not in METHODS:
      raise ConfigError(f"unknown method {other!r} in audit.beside; choose from {list(METHODS)}")
  if not 0 < float(audit_cfg.confidence) < 1:
    raise ConfigError(f"audit.confidence={audit_cfg.confidence} must lie in (0, 1); e.g. 0.95")


def guess_vector(scores, num_guesses: int, two_sided: bool = True) -> np.ndarray:
  """int8 [m] in {-1, 0, +1}: +1 (IN) for the highest scores, -1 (OUT) for the lowest.

  two_sided: ceil(k/2) IN guesses and floor(k/2) OUT guesses; else k IN guesses. Ties are
  broken by position (a stable sort), never by inclusion.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  m = len(scores)
  k = min(max(int(num_guesses), 0), m)
  k_plus = (k + 1) // 2 if two_sided else k
  order = np.argsort(-scores, kind="stable")               # highest first
  g = np.zeros(m, np.int8)
  g[order[:k_plus]] = 1
  if k - k_plus:
    g[order[m - (k - k_plus):]] = -1
  return g


def _counts_bound(m: int, n_guess: int, n_correct: int, significance: float, delta: float,
                  method: str, eps_lo: float = 0.0) -> float:
  """The epsilon bound of n_correct right guesses among n_guess, m canaries, or eps_lo when it
  does not reach eps_lo."""
  if n_guess == 0 or 2 * n_correct <= n_guess:
    return eps_lo                               # no better than a coin: nothing is rejected
  # pylint: disable-next=protected-access
  fn = jp_auditing._epsilon_one_run_fdp if method == "one_run_fdp" else jp_auditing._epsilon_one_run
  return float(fn(eps_lo, m, int(n_guess), int(n_correct), significance, delta))


def _check(scores, included, delta, confidence, method, guesses, fractions):
  scores = np.asarray(scores, np.float64).reshape(-1)
  included = np.asarray(included, bool).reshape(-1)
  if scores.shape != included.shape:
    raise ConfigError(f"scores {scores.shape} and included {included.shape} must have one "
                      "entry per canary")
  if included.all() or not included.any():
    raise ConfigError("auditing needs both included and excluded canaries; plant more with "
                      "--config.audit.num_canaries")
  if not np.isfinite(scores).all():
    raise ConfigError("canary scores must be finite; drop or clip non-finite scores first")
  if not 0 < confidence < 1:
    raise ConfigError(f"confidence must be in (0, 1), got {confidence}; e.g. 0.95")
  if not 0 < delta < 1:
    raise ConfigError(f"delta must be in (0, 1), got {delta}; e.g. 1 / (training examples)")
  if method not in METHODS:
    raise ConfigError(f"unknown audit method {method!r}; choose one of {list(METHODS)}")
  if guesses not in GUESSES:
    raise ConfigError(f"unknown audit guesses {guesses!r}; choose one of {list(GUESSES)}")
  fractions = tuple(float(f) for f in fractions)
  if not fractions or not all(0 < f <= 1 for f in fractions):
    raise ConfigError(f"audit fractions {fractions} must be a non-empty list in (0, 1]; "
                      f"e.g. {FRACTIONS}")
  return scores, included, fractions


def audit(scores, included, delta: float, confidence: float = 0.95, *,
          method: str = "one_run", guesses: str = "two_sided",
          fractions=FRACTIONS) -> dict:
  """The epsilon lower bound at `confidence` from one run's canary scores, with its guesses.

  Args:
    scores: [m] attack scores, higher = more likely included.
    included: [m] bool, whether each canary was in the training set (fair coins).
    delta: the delta of the (epsilon, delta) claim being audited, e.g. 1 / n.
    confidence: e.g. 0.95; each of the len(fractions) candidates is tested at
      (1 - confidence) / len(fractions).
    method: one of METHODS. guesses: one of GUESSES.
    fractions: the numbers of guesses searched, as fractions of m (pre-registered).

  Returns:
    {"epsilon": the bound (>= 0), "num_guesses", "num_correct", "in_guesses",
     "out_guesses" of the best candidate (0 when no candidate rejects anything),
     "candidates": len(fractions)}.
  """
  scores, included, fractions = _check(scores, included, delta, confidence, method, guesses,
                                       fractions)
  m = len(scores)
  significance = 1.0 - confidence
  if method == "clopper_pearson":
    auditor = jp_auditing.CanaryScoreAuditor(scores[included], scores[~included])
    eps = auditor.epsilon_clopper_pearson(min(significance, 0.499), delta,
                                          one_sided=guesses == "one_sided")
    return {"epsilon": float(eps), "num_guesses": 0, "num_correct": 0, "in_guesses": 0,
            "out_guesses": 0, "candidates": 0}
  best = {"epsilon": 0.0, "num_guesses": 0, "num_correct": 0, "in_guesses": 0,
          "out_guesses": 0, "candidates": len(fractions)}
  tests = []
  for k in sorted({max(1, math.ceil(f * m)) for f in fractions}):
    g = guess_vector(scores, k, guesses == "two_sided")
    correct = int(np.sum((g == 1) & included) + np.sum((g == -1) & ~included))
    tests.append((correct / k, k, correct, g))
  # The most precise candidates first: a candidate whose precision is at most
  # e^eps / (1 + e^eps) of the best bound so far cannot pass it (jax_privacy's own shortcut).
  for precision, k, correct, g in sorted(tests, key=lambda t: -t[0]):
    if precision <= 1.0 / (1.0 + math.exp(-best["epsilon"])):
      continue
    eps = _counts_bound(m, k, correct, significance / len(fractions), delta, method,
                        eps_lo=best["epsilon"])
    if eps > best["epsilon"]:
      best.update(epsilon=eps, num_guesses=k, num_correct=correct,
                  in_guesses=int(np.sum(g == 1)), out_guesses=int(np.sum(g == -1)))
  return best


def epsilon_lower_bound(scores, included, delta: float, confidence: float = 0.95, *,
                        method: str = "one_run", guesses: str = "two_sided",
                        fractions=FRACTIONS) -> float:
  """audit(...)["epsilon"]: the bound alone (a float >= 0); arguments as `audit`."""
  return audit(scores, included, delta, confidence, method=method, guesses=guesses,
               fractions=fractions)["epsilon"]


def _targets(scores, keep, canaries, delta, confidence, method, guesses, fractions, headline):
  """One method's bounds over the targets, and its run-level headline (see audit_targets)."""
  num_targets = scores.shape[0]
  kw = dict(method=method, guesses=guesses, fractions=fractions)
  each = [audit(scores[t, canaries], keep[t, canaries], delta, confidence, **kw)
          for t in range(num_targets)]
  corrected_conf = 1.0 - (1.0 - confidence) / num_targets
  corrected = (each if num_targets == 1 else
               [audit(scores[t, canaries], keep[t, canaries], delta, corrected_conf, **kw)
                for t in range(num_targets)])
  per_target = [a["epsilon"] for a in each]
  per_target_corrected = [a["epsilon"] for a in corrected]
  if headline == "bonferroni":
    value = max(per_target_corrected)
    holds_at = (f"{100 * confidence:g}% for the run: the largest of {num_targets} targets' "
                f"bounds, each at {100 * corrected_conf:.4g}%")
  else:
    value = per_target[0]
    holds_at = f"{100 * confidence:g}% for the run: target 0's bound, pre-registered"
  return {"epsilon_lower_bound": value, "holds_at": holds_at, "assumes": ASSUMES[method],
          "per_target": per_target, "per_target_corrected": per_target_corrected,
          "per_target_detail": corrected, "mean": float(np.mean(per_target)),
          "corrected_confidence": corrected_conf}


def audit_targets(scores, keep, canaries, delta: float, confidence: float = 0.95, *,
                  method: str = "one_run", guesses: str = "two_sided",
                  fractions=FRACTIONS, headline: str = "bonferroni",
                  beside: tuple[str, ...] = ()) -> dict:
  """The one-run bound of each of T target models, and the run's headline bound.

  Args:
    scores: [T, N] attack scores of every pool example for T target models (higher = member).
    keep: bool [T, N], the targets' rows of the keep matrix (each row's canary entries are
      independent fair coins).
    canaries: int [K], the canaries' pool indices.
    delta, confidence, method, guesses, fractions: as `audit`.
    headline: "bonferroni" (the largest over targets of bounds each at
      1 - (1 - confidence) / T) or "first_target" (target 0's bound at `confidence`,
      pre-registered); either holds at `confidence` for the run as a whole.
    beside: other methods whose results are reported beside the headline's (e.g.
      ("one_run_fdp",)), each with the same guesses, correction and headline rule.

  Returns:
    {"epsilon_lower_bound": the headline, "holds_at" (what it holds at, in words), "assumes"
     (the mechanisms it is valid for), "per_target" [T] (each at `confidence`, valid for its
     own target alone), "per_target_corrected" [T] (each at 1 - (1 - confidence) / T),
     "per_target_detail" [T] (the best guesses of each, corrected), "mean" (of per_target,
     descriptive), "corrected_confidence", "beside": {method: the same entries},
     "headline", "num_canaries", "num_targets", "confidence", "delta", "method", "guesses",
     "fractions"}.
  """
  if headline not in HEADLINES:
    raise ConfigError(f"unknown audit headline {headline!r}; choose one of {list(HEADLINES)}")
  scores = np.asarray(scores, np.float64)
  keep = np.asarray(keep, bool)
  canaries = np.asarray(canaries, np.int64)
  fractions = tuple(float(f) for f in fractions)
  args = (scores, keep, canaries, delta, confidence)
  out = _targets(*args, method, guesses, fractions, headline)
  out["beside"] = {other: _targets(*args, other, guesses, fractions, headline)
                   for other in beside if other != method}
  out.update(headline=headline, num_canaries=int(len(canaries)),
             num_targets=int(scores.shape[0]), confidence=confidence, delta=delta,
             method=method, guesses=guesses, fractions=list(fractions))
  return out
