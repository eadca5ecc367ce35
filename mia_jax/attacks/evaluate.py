"""Per-target evaluation of attacks: each target model in turn, the others its shadows.

Scores are never pooled across targets before computing metrics (pooling hides the spread
between targets); metrics are computed per target and summarised by mean and std (ddof 1
across targets; 0 for a single target).

Bootstrap intervals: each target's members and non-members are resampled separately
(seed = seed + target's position in `targets`), giving its own "auc_ci95" and
"tpr_at_fpr_ci95" in "per_target". The pooled intervals are those of the MEAN over targets:
replicate b of the mean is the mean over targets of each target's replicate b, and the
interval is the 2.5th and 97.5th percentiles of those means. They hold the targets fixed
and measure the uncertainty from the finite pool of examples.
"""

from typing import Mapping, Optional, Sequence

import numpy as np

from mia_jax import metrics
from mia_jax.attacks import registry
from mia_jax.attacks.base import AttackData, check_targets

_SCALARS = ("auc", "advantage", "balanced_accuracy")


def _spread(values: Sequence[float], per_target: bool = True) -> dict:
  values = [float(v) for v in values]
  out = {"mean": float(np.mean(values)),
         "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
  if per_target:
    out["per_target"] = values
  return out


def evaluate_attack(name: str, data: AttackData, targets: Sequence[int], *,
                    params: Optional[Mapping] = None, bootstrap: int = 0, seed: int = 0,
                    fprs: Sequence[float] = metrics.DEFAULT_FPRS) -> tuple[dict, list]:
  """Runs attack `name` on every target and evaluates each against keep[t].

  Args:
    name: a registered attack.
    data: the attack data.
    targets: target model indices [T].
    params: keyword parameters of the attack.
    bootstrap: bootstrap replicates for 95% intervals (0: none).
    seed: bootstrap seed.
    fprs: alphas for TPR at FPR.

  Returns:
    (summary, curves). summary = {"attack", "params", "targets",
      "per_target": [{"target": t, **metrics.evaluate(...)}],
      "auc" | "advantage" | "balanced_accuracy": {"mean", "std", "per_target"},
      "tpr_at_fpr" | "nonmembers_at_fpr": {str(alpha): {"mean", "std", "per_target"}}}
    plus, with bootstrap, "auc_ci95": [lo, hi] and "tpr_at_fpr_ci95": {str(alpha): [lo, hi]}
    for the mean over targets. curves = [(fpr [G_t + 1], tpr [G_t + 1]) per target].
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
  per_target, curves, reps = [], [], []
  for row, t in enumerate(targets):
    result = {"target": t, **metrics.evaluate(scores[row], keep[t], fprs)}
    fpr, tpr, _ = metrics.roc_curve(scores[row], keep[t])
    curves.append((fpr, tpr))
    if bootstrap:
      rep = metrics.bootstrap_replicates(scores[row], keep[t], fprs, bootstrap, seed + row)
      result["auc_ci95"] = metrics.ci95(rep["auc"])
      result["tpr_at_fpr_ci95"] = {k: metrics.ci95(v) for k, v in rep["tpr_at_fpr"].items()}
      reps.append(rep)
    per_target.append(result)
  keys = list(per_target[0]["tpr_at_fpr"])
  summary = {"attack": name, "params": params, "targets": targets, "per_target": per_target}
  for metric in _SCALARS:
    summary[metric] = _spread([r[metric] for r in per_target])
  for metric in ("tpr_at_fpr", "nonmembers_at_fpr"):
    summary[metric] = {k: _spread([r[metric][k] for r in per_target]) for k in keys}
  if bootstrap:
    summary["auc_ci95"] = metrics.ci95(np.mean([r["auc"] for r in reps], axis=0))
    summary["tpr_at_fpr_ci95"] = {
        k: metrics.ci95(np.mean([r["tpr_at_fpr"][k] for r in reps], axis=0)) for k in keys}
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
  """Mean and std over targets of metrics.evaluate dicts (skipped ones only counted)."""
  ok = [s for s in items if "skipped" not in s]
  out = {"num_targets": len(ok),
         "num_members": float(np.mean([s["num_members"] for s in items])),
         "num_nonmembers": float(np.mean([s["num_nonmembers"] for s in items]))}
  if not ok:
    out["skipped"] = next((s["skipped"] for s in items), "no targets")
    return out
  for key in ("auc", "advantage", "balanced_accuracy"):
    out[key] = _spread([s[key] for s in ok], per_target)
  out["tpr_at_fpr"] = {a: _spread([s["tpr_at_fpr"][a] for s in ok], per_target)
                       for a in ok[0]["tpr_at_fpr"]}
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
    targets), "auc", "advantage", "balanced_accuracy": {"mean", "std"},
    "tpr_at_fpr": {alpha: {"mean", "std"}}}.
  """
  per = [metrics.evaluate_slices(scores[r], keep_rows[r], labels, predictions[r])
         for r in range(len(scores))]
  classes = sorted({c for s in per for c in s["class"]}, key=int)
  return {"class": {c: combine([s["class"][c] for s in per if c in s["class"]], False)
                    for c in classes},
          "correct": combine([s["correct"] for s in per], False),
          "incorrect": combine([s["incorrect"] for s in per], False)}
