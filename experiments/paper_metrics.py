"""The paper table's measurements of one row: accuracies, the global loss-threshold attack
with its no-leak permutation test, LiRA (an attacker aware of a post-hoc defense or not), and
the overhead of logit reweighting; every number the mean over the row's targets with its 95%
t interval over them (the targets' training seeds are the unit that varies).
"""

import time

import jax
import numpy as np

from mia_jax import attacks, inference, metrics, stats
from mia_jax.analysis import embeddings, significance
from mia_jax.defenses import logit_reweighting, post_hoc
from mia_jax.training import steps


LIRA_ALPHA = 1e-3       # LiRA's headline: TPR at 0.1% FPR


def spread(name: str, values, lo: float = -np.inf, hi: float = np.inf) -> dict:
  """{name: mean, name_ci: 95% t interval over the units (models), name_per_target: values}.

  The interval is clipped to [lo, hi] (a percentage cannot leave [0, 100]); [nan, nan] for
  one unit.
  """
  v = [float(x) for x in values]
  a, b = stats.t_interval(v)
  return {name: float(np.mean(v)), f"{name}_ci": [float(np.clip(a, lo, hi)),
                                                 float(np.clip(b, lo, hi))],
          f"{name}_per_target": v}


def roc_per_target(scores, keep, alpha: float = LIRA_ALPHA) -> dict:
  """Per target t (scores[t] against keep[t], every example): AUC, advantage (max TPR - FPR)
  and TPR at FPR alpha as fractions [T], and the non-members and false positives allowed."""
  out = {"auc": [], "advantage": [], "tpr": [], "nonmembers": [], "false_positives": []}
  for s, k in zip(np.asarray(scores), np.asarray(keep, bool)):
    fpr, tpr, _ = metrics.roc_curve(s, k)
    out["auc"].append(metrics.auc(fpr, tpr))
    out["advantage"].append(metrics.advantage(fpr, tpr))
    out["tpr"].append(metrics.tpr_at_fpr(fpr, tpr, alpha))
    out["nonmembers"].append(int((~k).sum()))
    out["false_positives"].append(int(np.floor(alpha * (~k).sum() + 1e-9)))
  return {k: np.asarray(v) for k, v in out.items()}


def loss_scores(logits, y, keep) -> np.ndarray:
  """The loss-threshold attack's scores [M, N] of every model as target."""
  if keep.shape[0] == 1:   # AttackData needs a second model; the threshold attack reads none
    return attacks.run("loss", attacks.AttackData(
        logits=np.concatenate([logits, logits]), labels=y,
        keep=np.concatenate([keep, keep])), [0])
  return attacks.run("loss", attacks.AttackData(logits=logits, labels=y, keep=keep),
                     list(range(keep.shape[0])))


_LEAK_PERCENT = ("auc", "advantage", "null_auc_mean", "null_auc_sd", "null_auc_q95",
                 "null_advantage_mean", "null_advantage_q95")


def threshold_attack(logits, y, keep, *, permutations: int = 4999, seed: int = 0) -> dict:
  """The loss-threshold attack on every model as target: AUC and advantage in percent, each
  the mean over targets with its t interval over them, and the no-leak permutation test of
  both (significance.leak_test, one permutation of the examples for every target)."""
  scores = loss_scores(logits, y, keep)
  r = roc_per_target(scores, keep)
  leak = significance.leak_test(scores, keep, num_permutations=permutations, seed=seed)
  return {**spread("auc", 100 * r["auc"], 0, 100),
          **spread("advantage", 100 * r["advantage"], 0, 100),
          "leak": {k: (100 * v if k in _LEAK_PERCENT else v) for k, v in leak.items()}}


def accuracies(logits, y, keep) -> dict:
  """Train and test accuracy in percent: mean over models with its t interval over them."""
  return {**spread("train_acc", 100 * inference.accuracy(logits, y, keep), 0, 100),
          **spread("test_acc", 100 * inference.accuracy(logits, y, ~keep), 0, 100)}


def _lira_summary(per: dict) -> dict:
  return {**spread("tpr_at_0.1%", 100 * per["tpr"], 0, 100),
          **spread("auc", 100 * per["auc"], 0, 100),
          "nonmembers": float(np.mean(per["nonmembers"])),
          "false_positives_at_0.1%": float(np.mean(per["false_positives"])),
          "num_models": int(len(per["tpr"]))}


def lira(logits, y, keep) -> dict:
  """LiRA online on every model as target: TPR at 0.1% FPR and AUC in percent (mean over
  targets, t interval over them, per target), with the non-members per target and the false
  positives that 0.1% of them allows (what the TPR rests on)."""
  targets = list(range(keep.shape[0]))
  scores = attacks.run("lira_online", attacks.AttackData(logits=logits, labels=y, keep=keep),
                       targets)
  return _lira_summary(roc_per_target(scores, keep))


def lira_unaware(logits, defended, y, keep) -> dict:
  """LiRA by an attacker who does not know the defense: each target's outputs defended, its
  shadows' raw. Same fields as `lira`."""
  scores = [attacks.run("lira_online", attacks.AttackData(
      logits=post_hoc.unaware_logits(logits, defended, t), labels=y, keep=keep), [t])[0]
            for t in range(keep.shape[0])]
  return _lira_summary(roc_per_target(np.stack(scores), keep))


def reweight_overhead(model, state, x, keep, y, logits, w, batch_size) -> dict:
  """Seconds of eval-mode inference of each model on x vs of reweighting its outputs
  (centroids precomputed, as a deployed defense holds them); both compiled before timing.
  overhead_pct: the mean over models of each model's ratio, with its t interval (the
  repetitions the overhead claim is tested over)."""
  predict = jax.jit(lambda v, inp: steps.predict(model, v, inp, batch_size))
  mu = logit_reweighting.class_centroids(logits[:, :, 0].astype(np.float32), y, keep)
  variables = [embeddings.model_variables(state, m) for m in range(keep.shape[0])]
  predict(variables[0], x).block_until_ready()
  logit_reweighting.reweight_ensemble(logits[:1], mu[:1], w)
  t_query, t_rw = [], []
  for m, v in enumerate(variables):
    t0 = time.perf_counter()
    predict(v, x).block_until_ready()
    t_query.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    logit_reweighting.reweight_ensemble(logits[m:m + 1], mu[m:m + 1], w)
    t_rw.append(time.perf_counter() - t0)
  t_query, t_rw = np.asarray(t_query), np.asarray(t_rw)
  return {"inference_s": float(t_query.sum()), "reweight_s": float(t_rw.sum()),
          **spread("overhead_pct", 100 * t_rw / t_query, 0),
          "reweight_us_per_output": float(1e6 * t_rw.sum() / (logits.size // logits.shape[-1]))}
