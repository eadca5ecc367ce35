"""RMIA (Zarifzadeh et al., ICML 2024), online and offline.

Pr(x | theta) is the softmax probability of the true label averaged over the Q queries
(computed as sigmoid of the cached scaled logit, which is the same number).
For target t the references are the other models:

  online   Pr(x) = mean over all references of Pr(x | theta_ref)
  offline  Pr(x) = 0.5 * ((1 + a) * mean over OUT references + (1 - a))

and the same formula gives Pr(z) for the z samples (population examples are OUT for every
reference). LR(x, z) = (Pr(x | theta_t) / Pr(x)) / (Pr(z | theta_t) / Pr(z)) and
score(x) = fraction of z with LR(x, z) >= gamma, counted with a sort and a searchsorted on
log ratios (O((N + Z) log Z), no [N, Z] matrix).

z samples: population_logits when the data has them, else the pool examples that are OUT for
the target (known non-members of the target, as in the paper's setup). Offline, an example
with no OUT reference falls back to the mean over all references.
Probabilities are floored at 1e-300 before taking logs, so 0 / 0 never occurs.
"""

from typing import Sequence

import numpy as np
from scipy import special

from mia_jax import metrics
from mia_jax.attacks.base import AttackData, check_targets
from mia_jax.errors import ConfigError

_FLOOR = 1e-300


def _probs(data: AttackData, population: bool) -> np.ndarray:
  """Pr(x | theta_m) for every model: [M, N] (or [M, P]), cached.

  p_y = sigmoid(scaled logit), so the scaled logit LiRA caches serves RMIA too and the
  logits are read once.
  """
  return data.cached(
      ("rmia", "p", population),
      lambda: special.expit(data.signal("scaled_logit", population)).mean(axis=-1))


def _sums(p: np.ndarray, keep: np.ndarray | None) -> dict:
  """Sums over models of p [M, N] (all models, and OUT models where keep [M, N] is given)."""
  out = {"all": p.sum(axis=0, dtype=np.float64)}
  if keep is not None:
    out["out"] = np.where(keep, 0.0, p).sum(axis=0, dtype=np.float64)
    out["k_out"] = (~keep).sum(axis=0)
  return out


def _check_params(a: float, gamma: float) -> None:
  if not 0.0 <= a <= 1.0:
    raise ConfigError(f"RMIA a={a} must lie in [0, 1] (0.3 is typical)")
  if not gamma > 0.0:
    raise ConfigError(f"RMIA gamma={gamma} must be positive (1 or 2 are typical)")


def _log_ratio(p, sums, t, keep_t, offline, a) -> np.ndarray:
  """log Pr(x | theta_t) - log Pr(x) for every column of p [M, N]; float64 [N]."""
  p_t = p[t].astype(np.float64)
  num_refs = p.shape[0] - 1
  mean_all = (sums["all"] - p_t) / num_refs
  if offline:
    if keep_t is None:  # population: OUT for every reference
      mean_out, k_out = mean_all, np.full(p_t.shape, num_refs)
    else:
      drop = ~keep_t
      k_out = sums["k_out"] - drop
      mean_out = (sums["out"] - np.where(drop, p_t, 0.0)) / np.maximum(k_out, 1)
    mean_out = np.where(k_out > 0, mean_out, mean_all)
    prior = 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
  else:
    prior = mean_all
  return np.log(np.maximum(p_t, _FLOOR)) - np.log(np.maximum(prior, _FLOOR))


def _score(log_rx: np.ndarray, log_rz: np.ndarray, gamma: float) -> np.ndarray:
  """Fraction of z with LR(x, z) >= gamma: [N] from log ratios [N] and [Z]."""
  if log_rz.size == 0:
    raise ConfigError("RMIA has no z samples: give population_logits or keep some pool "
                      "examples out of the target's training set")
  count = np.searchsorted(np.sort(log_rz), log_rx - np.log(gamma), side="right")
  return count / log_rz.size


def _rmia(data: AttackData, targets: Sequence[int], offline: bool, a: float,
          gamma: float) -> np.ndarray:
  _check_params(a, gamma)
  targets = check_targets(data, targets)
  keep = np.asarray(data.keep)
  p = _probs(data, False)
  sums = data.cached(("rmia", "sums", False), lambda: _sums(p, keep))
  has_pop = data.population_logits is not None
  if has_pop:
    pp = _probs(data, True)
    pop_sums = data.cached(("rmia", "sums", True), lambda: _sums(pp, None))
  scores = []
  for t in targets:
    log_rx = _log_ratio(p, sums, t, keep[t], offline, a)
    if has_pop:
      log_rz = _log_ratio(pp, pop_sums, t, None, offline, a)
    else:
      log_rz = log_rx[~keep[t]]
    scores.append(_score(log_rx, log_rz, gamma))
  return np.stack(scores)


def rmia_online(data: AttackData, targets: Sequence[int], gamma: float = 2.0) -> np.ndarray:
  """Online RMIA (all other models as references); scores [T, N] in [0, 1]."""
  return _rmia(data, targets, offline=False, a=0.0, gamma=gamma)


def rmia_offline(data: AttackData, targets: Sequence[int], a: float = 0.3,
                 gamma: float = 2.0) -> np.ndarray:
  """Offline RMIA (only OUT references, prior corrected by a); scores [T, N] in [0, 1]."""
  return _rmia(data, targets, offline=True, a=a, gamma=gamma)


def tune_rmia_a(data: AttackData, reference_models: Sequence[int],
                grid: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2)),
                gamma: float = 2.0, num_pseudo_targets: int = 1) -> float:
  """Picks RMIA's offline `a` on reference models only.

  Each of the first `num_pseudo_targets` models in `reference_models` in turn plays the
  target, with the remaining reference models as its references (its own keep row gives
  the labels); the a in `grid` with the highest mean AUC wins. Pass models disjoint from the
  targets you will attack, e.g. `base.others(M, t)` for target t.

  Returns:
    The chosen a (a float from grid).
  """
  refs = [int(r) for r in reference_models]
  if len(refs) < 2 or not 1 <= num_pseudo_targets <= len(refs):
    raise ConfigError("tune_rmia_a needs >= 2 reference models and 1 <= num_pseudo_targets "
                      f"<= their number; got {len(refs)} and {num_pseudo_targets}")
  keep = np.asarray(data.keep)[refs]
  p = _probs(data, False)[refs]
  sums = _sums(p, keep)
  has_pop = data.population_logits is not None
  if has_pop:
    pp = _probs(data, True)[refs]
    pop_sums = _sums(pp, None)
  mean_auc = []
  for a in grid:
    _check_params(a, gamma)
    aucs = []
    for t in range(num_pseudo_targets):
      log_rx = _log_ratio(p, sums, t, keep[t], True, a)
      log_rz = _log_ratio(pp, pop_sums, t, None, True, a) if has_pop else log_rx[~keep[t]]
      fpr, tpr, _ = metrics.roc_curve(_score(log_rx, log_rz, gamma), keep[t])
      aucs.append(metrics.auc(fpr, tpr))
    mean_auc.append(np.mean(aucs))
  return float(grid[int(np.argmax(mean_auc))])

