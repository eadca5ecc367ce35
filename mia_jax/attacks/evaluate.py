"""Per-target evaluation of attacks: each target model in turn, the others its shadows.

Scores are never pooled across targets before computing metrics (pooling hides the spread
between targets); metrics are computed per target and summarised by mean and std (ddof 1
across targets; 0 for a single target).

Intervals (95%). Each target's own intervals (metrics.evaluate: the examples are the unit,
the model held fixed) are in "per_target". The summary's "*_ci95" are intervals of the MEAN
over targets, and for it the target models are the unit that varies (with the training seed
and the random half of the pool each trained on): a Student t interval over the T targets'
values (stats.t_interval), clipped to [0, 1]. Each target's value carries its own example-
level noise, so the t interval's spread holds both the model-to-model and the example-level
variance. For TPR at FPR alpha the estimate is biased upward (its threshold's expected FPR is
(k + 1) / (n + 1) > alpha, k = floor(alpha n); by about a tenth of the TPR at k = 5), so the
interval is the t interval over each target's metrics.tpr_at_fpr_lower (the TPR at expected
FPR alpha: nearly unbiased, at most the estimate), its upper end raised to the mean of the
estimates where it falls below it, so that it holds the reported mean.

What it covers: the expected metric of a model trained by this recipe on this pool, over
seeds and random halves. The targets share one pool and serve as each other's shadows, so
they are not fully independent: the interval leaves out the pool-to-pool variance, and the
shared shadows can correlate the targets' values (making it somewhat narrow). With two or
three targets it is wide on average and narrow whenever their values happen to agree (its
coverage holds over repetitions, not in each case). Where every target has the same value (a
discrete metric: every target at TPR 0), the t interval has no width, and the examples' noise
alone takes its place (the targets' own intervals, combined as for a mean of independent
values). With a single target there is no spread to measure: the summary's intervals are then
that target's own, over examples only ("interval_unit": "examples").

The percentile bootstrap (`bootstrap` > 0) is recorded per target under "bootstrap_ci95",
for comparison with older results only (metrics/bootstrap.py says why nothing reports it).
"""

from typing import Mapping, Optional, Sequence

import numpy as np

from mia_jax import metrics, stats
from mia_jax.attacks import registry
from mia_jax.attacks.base import AttackData, check_targets

_SCALARS = ("auc", "advantage", "advantage_abs", "balanced_accuracy")
INTERVALS = {
    "unit": "targets: Student t over the target models' values (their example-level noise "
            "inside); per_target: the examples",
    "auc": "per target: DeLong's variance on the logit scale",
    "tpr_at_fpr": "per target: order statistics of the non-members and Clopper-Pearson, "
                  "joined in quadrature; over targets: t over the TPRs at expected FPR alpha, "
                  "raised to hold the mean estimate; not resolved where floor(alpha * "
                  "non-members) = 0",
    "advantage": "per target: the DKW band (valid for every threshold at once); over targets: "
                 "t over the estimates, whose expectation exceeds the true advantage",
}


def _spread(values: Sequence[float], per_target: bool = True) -> dict:
  values = [float(v) for v in values]
  out = {"mean": float(np.mean(values)),
         "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
  if per_target:
    out["per_target"] = values
  return out


def _t(values: Sequence[float]) -> tuple[float, float]:
  lo, hi = stats.t_interval(values)
  return max(0.0, lo), min(1.0, hi)


def over_targets(items: Sequence[dict]) -> dict:
  """95% intervals of the mean over targets of metrics.evaluate dicts (module docstring).

  Args:
    items: one metrics.evaluate dict per target [T], T >= 1.

  Returns:
    {"auc_ci95", "advantage_ci95", "advantage_abs_ci95", "balanced_accuracy_ci95": [lo, hi],
     "tpr_at_fpr_ci95": {alpha: [lo, hi]} (each the t interval, or the examples' noise
     alone where every target has the same value: _hull),
     "tpr_at_fpr_resolved": {alpha: every target's floor(alpha * non-members) >= 1},
     "interval_unit": "targets" (T >= 2) or "examples" (T = 1: that target's intervals)}.
  """
  keys = list(items[0]["tpr_at_fpr"])
  out = {}
  for m in _SCALARS:
    values = [r[m] for r in items]
    t = _t(values) if len(items) > 1 else None
    out[f"{m}_ci95"] = _hull(t, values, [r[f"{m}_ci95"] for r in items])
  out["tpr_at_fpr_ci95"] = {}
  for k in keys:
    values = [r["tpr_at_fpr"][k] for r in items]
    t = None
    if len(items) > 1:        # t over the nearly unbiased values, extended to hold the mean
      lo, hi = _t([r["tpr_at_fpr_lower"][k] for r in items])
      t = (lo, max(hi, float(np.mean(values))))
    out["tpr_at_fpr_ci95"][k] = _hull(t, values, [r["tpr_at_fpr_ci95"][k] for r in items])
  out["tpr_at_fpr_resolved"] = {k: all(r["nonmembers_at_fpr"][k] >= 1 for r in items)
                                for k in keys}
  out["interval_unit"] = "targets" if len(items) > 1 else "examples"
  return out


def _hull(t: Optional[tuple[float, float]], values: Sequence[float],
          own: Sequence[Sequence[float]]) -> list[float]:
  """The t interval; where every target has the same value, the examples' noise alone.

  The examples' noise of the mean of T values [T] with own intervals [T, 2]: each side's
  distances from the values to their ends, added in quadrature and divided by T (independent
  targets); with one target it is that target's interval. The t interval of equal values
  has width 0 (every target at TPR 0 says nothing about a model that is not).
  """
  v, own = np.asarray(values, np.float64), np.asarray(own, np.float64)
  if t is not None and np.ptp(v) > 0:
    return [t[0], t[1]]
  mean = float(v.mean())
  lo = max(0.0, mean - float(np.sqrt(np.sum((v - own[:, 0]) ** 2))) / v.size)
  hi = min(1.0, mean + float(np.sqrt(np.sum((own[:, 1] - v) ** 2))) / v.size)
  if t is not None:
    lo, hi = min(lo, t[0]), max(hi, t[1])
  return [lo, hi]


def evaluate_attack(name: str, data: AttackData, targets: Sequence[int], *,
                    params: Optional[Mapping] = None, bootstrap: int = 0, seed: int = 0,
                    fprs: Sequence[float] = metrics.DEFAULT_FPRS) -> tuple[dict, list]:
  """Runs attack `name` on every target and evaluates each against keep[t].

  Args:
    name: a registered attack.
    data: the attack data.
    targets: target model indices [T].
    params: keyword parameters of the attack.
    bootstrap: percentile-bootstrap replicates recorded per target for comparison (0: none).
    seed: bootstrap seed (target r uses seed + r).
    fprs: alphas for TPR at FPR.

  Returns:
    (summary, curves). summary = {"attack", "params", "targets", "intervals" (INTERVALS),
      "per_target": [{"target": t, **metrics.evaluate(...)}] (each with its own intervals),
      "auc" | "advantage" | "advantage_abs" | "balanced_accuracy":
        {"mean", "std", "per_target"},
      "tpr_at_fpr" | "nonmembers_at_fpr": {str(alpha): {"mean", "std", "per_target"}},
      **over_targets(per_target)} (the intervals of the means).
    curves = [(fpr [G_t + 1], tpr [G_t + 1]) per target].
  """
  params = dict(params or {})
  targets = check_targets(data, targets)
  scores = registry.run(name, data, targets, **params)
  return evaluate_scores(name, scores, data.keep, targets, params=params, bootstrap=bootstrap,
                         seed=seed, fprs=fprs)


def evaluate_scores(name: str, scores: np.ndarray, keep: np.ndarray, targets: Sequence[int], *,
                    params: Optional[Mapping] = None, bootstrap: int = 0, seed: int = 0,
                    fprs: Sequence[float] = metrics.DEFAULT_FPRS) -> tuple[dict, list]:
  """evaluate_attack's summary and curves from scores already computed.

  Args:
    name: the attack's name (recorded in the summary).
    scores: float [T, N], row r the scores against target model targets[r].
    keep: bool [M, N]; row targets[r] gives the membership labels of scores[r].
    targets: target model indices [T].
    params, bootstrap, seed, fprs: as evaluate_attack.

  Returns:
    (summary, curves) as evaluate_attack.
  """
  params = dict(params or {})
  targets = [int(t) for t in targets]
  keep = np.asarray(keep)
  per_target, curves = [], []
  for row, t in enumerate(targets):
    tally = metrics.tally(scores[row], keep[t])
    result = {"target": t, **metrics.evaluate_tally(tally, fprs)}
    if bootstrap:
      result["bootstrap_ci95"] = metrics.bootstrap_ci95(scores[row], keep[t], fprs, bootstrap,
                                                        seed + row)
    curves.append(metrics.roc_from_tally(tally)[:2])
    per_target.append(result)
  keys = list(per_target[0]["tpr_at_fpr"])
  summary = {"attack": name, "params": params, "targets": targets, "per_target": per_target}
  for metric in _SCALARS:
    summary[metric] = _spread([r[metric] for r in per_target])
  for metric in ("tpr_at_fpr", "nonmembers_at_fpr"):
    summary[metric] = {k: _spread([r[metric][k] for r in per_target]) for k in keys}
  summary.update(over_targets(per_target))
  summary["intervals"] = INTERVALS
  return summary, curves


def target_predictions(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Predicted classes of each target: argmax of the query-averaged logits, int [T, N].

  For metrics.evaluate_slices(scores[r], keep[t], labels, target_predictions(...)[r]).
  """
  targets = check_targets(data, targets)
  return np.stack([np.argmax(data.logits[t].mean(axis=1, dtype=np.float32), axis=-1)
                   for t in targets])


def evaluate_attacks(names: Sequence[str], data: AttackData, targets: Sequence[int],
                     params_by_name: Optional[Mapping[str, Mapping]] = None, *,
                     bootstrap: int = 0, seed: int = 0,
                     fprs: Sequence[float] = metrics.DEFAULT_FPRS) -> tuple[dict, dict]:
  """evaluate_attack for each name; returns ({name: summary}, {name: curves}).

  The attacks share `data`'s cache, so signals and shadow statistics are computed once.
  """
  params_by_name = dict(params_by_name or {})
  for name in params_by_name:
    registry.get(name)  # unknown names fail before any work
  summaries, curves = {}, {}
  for name in names:
    summaries[name], curves[name] = evaluate_attack(
        name, data, targets, params=params_by_name.get(name), bootstrap=bootstrap, seed=seed,
        fprs=fprs)
  return summaries, curves


def combine(items: Sequence[dict], per_target: bool) -> dict:
  """Mean, std and the intervals over targets (over_targets) of metrics.evaluate dicts.

  Skipped items (a slice without members or non-members) are only counted.
  """
  ok = [s for s in items if "skipped" not in s]
  out = {"num_targets": len(ok),
         "num_members": float(np.mean([s["num_members"] for s in items])),
         "num_nonmembers": float(np.mean([s["num_nonmembers"] for s in items]))}
  if not ok:
    out["skipped"] = next((s["skipped"] for s in items), "no targets")
    return out
  for key in _SCALARS:
    out[key] = _spread([s[key] for s in ok], per_target)
  out["tpr_at_fpr"] = {a: _spread([s["tpr_at_fpr"][a] for s in ok], per_target)
                       for a in ok[0]["tpr_at_fpr"]}
  out.update(over_targets(ok))
  return out


def slice_summary(scores: np.ndarray, keep_rows: np.ndarray, labels: np.ndarray,
                  predictions: np.ndarray) -> dict:
  """metrics.evaluate_slices for each target, as mean and std over targets.

  Args:
    scores: float [T, N]; keep_rows: bool [T, N], the targets' keep rows; labels: int [N];
      predictions: int [T, N], each target's predicted classes.

  Returns:
    {"class": {str(c): s}, "correct": s, "incorrect": s}, s = {"num_targets" (those whose
    slice has members and non-members), "num_members", "num_nonmembers" (means over all
    targets), "auc", "advantage", "advantage_abs", "balanced_accuracy": {"mean", "std"},
    "tpr_at_fpr": {alpha: {"mean", "std"}}, **over_targets(...)}.
  """
  per = [metrics.evaluate_slices(scores[r], keep_rows[r], labels, predictions[r])
         for r in range(len(scores))]
  classes = sorted({c for s in per for c in s["class"]}, key=int)
  return {"class": {c: combine([s["class"][c] for s in per if c in s["class"]], False)
                    for c in classes},
          "correct": combine([s["correct"] for s in per], False),
          "incorrect": combine([s["incorrect"] for s in per], False)}
