"""RMIA (Zarifzadeh et al., ICML 2024), online and offline.

Array level (../shared/REFERENCE.md has the paper's formulas):

  score(target_prob [N], reference_prob [K, N], reference_in [K, N], z_target_prob [Z],
        z_reference_prob [K, Z]) -> [N]   (or z from the pool: z_pool bool [N])
  prior(reference_prob, reference_in) -> Pr(x) [N];  population_prior(z_reference_prob) ->
  Pr(z) [Z];  score_ratios(target_prob, prior_x, z_target_prob, prior_z) -> [N]

The registry's rmia_online / rmia_offline loop over the targets: references.for_target picks
each one's references, Pr(x) comes from once-summed group totals (every other model) or the
gathered references, and score_ratios scores them.

Pr(x | theta) is the softmax probability of the true label averaged over the Q queries
(computed as sigmoid of the cached scaled logit, which is the same number).
For target t the references of example x are the other models that references.py picks for
x (IN and OUT in counts that do not depend on the target's membership of x):

  online   Pr(x) = (mean over IN references + mean over OUT references) / 2
  offline  Pr(x) = 0.5 * ((1 + a) * mean over OUT references + (1 - a))

Online is Privacy Meter's definition: the prior of a balanced population of models, so that
it does not depend on how many references hold x. (It was the plain mean over all the other
models, which in an exact design gives a member of the target one IN reference fewer than a
non-member: a lower prior, a higher ratio, and an AUC above 0.5 on a target whose outputs
carry no membership; experiments/results/null_table.md.) An example with no IN (or no OUT)
reference takes the mean of the other group online; offline, an example with no OUT
reference takes its IN mean.

z samples: population_logits when the data has them, else the pool examples that are OUT for
the target (known non-members of the target, as in the paper's setup). A population example
is OUT for every model: its references are every other model (or K of them, drawn per
example, with data.num_references = K), Pr(z) their mean online and the formula above
offline; a pool z keeps its own Pr(x). LR(x, z) = (Pr(x | theta_t) / Pr(x)) / (Pr(z |
theta_t) / Pr(z)) and score(x) = fraction of z with LR(x, z) >= gamma, counted with a sort
and a searchsorted on log ratios (O((N + Z) log Z), no [N, Z] matrix).
Probabilities are floored at 1e-300 before taking logs, so 0 / 0 never occurs.
"""

from typing import Optional, Sequence

import numpy as np
from scipy import special

from mia_jax import metrics
from mia_jax.attacks import references, signals
from mia_jax.attacks.base import AttackData, check_targets
from mia_jax.errors import ConfigError

_FLOOR = 1e-300


def _probs(data: AttackData, population: bool) -> np.ndarray:
  """Pr(x | theta_m) for every model: [M, N] (or [M, P]), cached.

  p_y = sigmoid(scaled logit), so the scaled logit LiRA caches serves RMIA too and the
  logits are read once.
  """
  return data.cached(("design", "rmia", "p", population),
                     lambda: _from_scaled_logit(data.signal("scaled_logit", population)))


def _from_scaled_logit(phi: np.ndarray) -> np.ndarray:
  """Pr(x | theta) [...] from the scaled logit [..., Q]: p_y = sigmoid(phi), mean over Q."""
  return special.expit(phi).mean(axis=-1)


def _totals(p: np.ndarray, keep: np.ndarray) -> dict:
  """Sums of p [M, N] over each example's IN and OUT models, float64 [N], and their counts."""
  total_in = np.zeros(p.shape[1], np.float64)
  total_out = np.zeros(p.shape[1], np.float64)
  for m in range(p.shape[0]):
    total_in += np.where(keep[m], p[m], 0.0)
    total_out += np.where(keep[m], 0.0, p[m])
  count_in = keep.sum(axis=0, dtype=np.int64)
  return {"in": total_in, "out": total_out, "k_in": count_in,
          "k_out": keep.shape[0] - count_in}


def _ref_means(p: np.ndarray, t: int, target_keep: np.ndarray, refs: references.References,
               totals: Optional[dict]) -> tuple[np.ndarray, ...]:
  """(mean_in, k_in, mean_out, k_out) [N] of p [M, N] over each example's references.

  Every other model as references: the group totals less the target and the surplus shadow
  (O(N) per target); drawn references: the chosen models' values gathered ([W, N])."""
  cols = np.arange(p.shape[1])
  out = []
  for inside, member, dropped in ((True, target_keep, refs.dropped_in),
                                  (False, ~target_keep, refs.dropped_out)):
    if refs.drawn:
      idx, valid = refs.models(inside)
      total = np.where(valid, p[idx, cols[None, :]], 0.0).sum(axis=0, dtype=np.float64)
      count = valid.sum(axis=0)
    else:
      name = "in" if inside else "out"
      has = dropped >= 0
      total = (totals[name] - np.where(member, p[t], 0.0)
               - np.where(has, p[np.maximum(dropped, 0), cols], 0.0))
      count = totals["k_" + name] - member - has
    out += [total / np.maximum(count, 1), count]
  return tuple(out)


def _check_params(a: float, gamma: float) -> None:
  if not 0.0 <= a <= 1.0:
    raise ConfigError(f"RMIA a={a} must lie in [0, 1] (0.3 is typical)")
  if not gamma > 0.0:
    raise ConfigError(f"RMIA gamma={gamma} must be positive (1 or 2 are typical)")


def _prior(means: tuple[np.ndarray, ...], offline: bool, a: float) -> np.ndarray:
  """Pr(x) [N] of pool examples from _ref_means (module docstring)."""
  mean_in, k_in, mean_out, k_out = means
  if offline:
    mean_out = np.where(k_out > 0, mean_out, mean_in)
    return 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
  both = 0.5 * (mean_in + mean_out)
  return np.where(k_in > 0, np.where(k_out > 0, both, mean_in), mean_out)


def _population_prior(population_prob: np.ndarray, mask: np.ndarray, offline: bool,
                      a: float) -> np.ndarray:
  """Pr(z) [P] of population examples (OUT for every reference in mask [M, P]) from their
  Pr(z | theta) population_prob [M, P]."""
  count = mask.sum(axis=0)
  total = np.where(mask, population_prob, 0.0).sum(axis=0, dtype=np.float64)
  mean = total / np.maximum(count, 1)
  return 0.5 * ((1.0 + a) * mean + (1.0 - a)) if offline else mean


def _log(x: np.ndarray) -> np.ndarray:
  return np.log(np.maximum(x, _FLOOR))


def _score(log_rx: np.ndarray, log_rz: np.ndarray, gamma: float) -> np.ndarray:
  """Fraction of z with LR(x, z) >= gamma: [N] from log ratios [N] and [Z]."""
  if log_rz.size == 0:
    raise ConfigError("RMIA has no z samples: give population_logits or keep some pool "
                      "examples out of the target's training set")
  count = np.searchsorted(np.sort(log_rz), log_rx - np.log(gamma), side="right")
  return count / log_rz.size


def _flags(name: str, flags, shape) -> np.ndarray:
  flags = np.ones(shape, bool) if flags is None else np.asarray(flags)
  if flags.shape != tuple(shape) or flags.dtype != np.bool_:
    raise ConfigError(f"RMIA {name} must be bool {list(shape)}, got {flags.dtype} "
                      f"{flags.shape}")
  return flags


def probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Pr(x | theta): the true label's softmax probability averaged over the queries.

  logits float [..., N, Q, C], labels int [N] -> float [..., N] (float32 at least), computed
  as sigmoid of signals.scaled_logit (the same number, stable for extreme logits).
  """
  return _from_scaled_logit(signals.scaled_logit(logits, np.asarray(labels)[:, None]))


def prior(reference_prob: np.ndarray, reference_in: np.ndarray, *, offline: bool = False,
          a: float = 0.3, mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Pr(x) [N] float64 from the references' Pr(x | theta_k) [K, N] (module docstring).

  reference_in: bool [K, N], reference k trained on example i; mask: bool [K, N], which
  references score example i (default all). Online: the mean of the IN references' mean and
  the OUT references' mean; offline: 0.5 ((1 + a) mean_OUT + (1 - a)).
  """
  p = np.asarray(reference_prob)
  if p.ndim != 2 or p.shape[0] == 0:
    raise ConfigError(f"RMIA reference_prob must be [K, N] with K >= 1 references, got "
                      f"{p.shape}")
  inside = _flags("reference_in", reference_in, p.shape)
  mask = _flags("mask", mask, p.shape)
  means = []
  for group in (inside & mask, ~inside & mask):
    count = group.sum(axis=0)
    total = np.where(group, p, 0.0).sum(axis=0, dtype=np.float64)
    means += [total / np.maximum(count, 1), count]
  return _prior(tuple(means), offline, a)


def population_prior(z_reference_prob: np.ndarray, *, offline: bool = False, a: float = 0.3,
                     mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Pr(z) [Z] float64 of z samples in no reference's training set, from the references'
  Pr(z | theta_k) [K, Z] (mask bool [K, Z]: which references score z; default all)."""
  z_reference_prob = np.asarray(z_reference_prob)
  if z_reference_prob.ndim != 2:
    raise ConfigError(f"RMIA z_reference_prob must be [K, Z], got {z_reference_prob.shape}")
  mask = _flags("z mask", mask, z_reference_prob.shape)
  return _population_prior(z_reference_prob, mask, offline, a)


def score_ratios(target_prob: np.ndarray, prior_x: np.ndarray, z_target_prob: np.ndarray,
                 prior_z: np.ndarray, gamma: float = 2.0) -> np.ndarray:
  """RMIA scores [N]: the fraction of z with LR(x, z) = (Pr(x | theta_t) / Pr(x)) /
  (Pr(z | theta_t) / Pr(z)) >= gamma, from target_prob, prior_x [N] and z_target_prob,
  prior_z [Z] (O((N + Z) log Z): a sort and a searchsorted on log ratios)."""
  log_rx = _log(np.asarray(target_prob, np.float64)) - _log(prior_x)
  log_rz = _log(np.asarray(z_target_prob, np.float64)) - _log(prior_z)
  return _score(log_rx, log_rz, gamma)


def score(target_prob: np.ndarray, reference_prob: np.ndarray, reference_in: np.ndarray, *,
          z_target_prob: Optional[np.ndarray] = None,
          z_reference_prob: Optional[np.ndarray] = None, z_pool: Optional[np.ndarray] = None,
          offline: bool = False, a: float = 0.3, gamma: float = 2.0,
          mask: Optional[np.ndarray] = None) -> np.ndarray:
  """RMIA on arrays: scores [N] in [0, 1] of one target from its references (higher = member).

  Args:
    target_prob: float [N], the target's Pr(x | theta_t) (`probability`).
    reference_prob: float [K, N], the same for K reference models.
    reference_in: bool [K, N], reference k trained on example i.
    z_target_prob, z_reference_prob: float [Z] and [K, Z] on z samples in no model's training
      set (population data); or instead
    z_pool: bool [N], pool examples used as z (e.g. the target's known non-members), each
      keeping its own Pr(x).
    offline: OUT references only, prior corrected by `a`; else online (IN and OUT).
    a, gamma: RMIA's offline correction and likelihood-ratio threshold.
    mask: bool [K, N], which references score example i (default all).

  Returns:
    float64 [N].

  Example:
    >>> rng = np.random.default_rng(0)
    >>> reference_in = rng.random((8, 100)) < 0.5                            # [K, N]
    >>> reference_prob = rng.uniform(0.2, 0.6, (8, 100)) + 0.3 * reference_in
    >>> target_prob = rng.uniform(0.2, 0.9, 100)
    >>> score(target_prob, reference_prob, reference_in, z_pool=np.arange(100) < 50).shape
    (100,)
  """
  _check_params(a, gamma)
  prior_x = prior(reference_prob, reference_in, offline=offline, a=a, mask=mask)
  target_prob = np.asarray(target_prob)
  if target_prob.shape != prior_x.shape:
    raise ConfigError(f"RMIA target_prob must be [N]={list(prior_x.shape)}, got "
                      f"{target_prob.shape}")
  if (z_pool is None) == (z_target_prob is None or z_reference_prob is None):
    raise ConfigError("RMIA needs z samples: give z_target_prob and z_reference_prob, or "
                      "z_pool (bool [N]), not both")
  if z_pool is not None:
    z_pool = _flags("z_pool", z_pool, prior_x.shape)
    return score_ratios(target_prob, prior_x, target_prob[z_pool], prior_x[z_pool], gamma)
  prior_z = population_prior(z_reference_prob, offline=offline, a=a)
  return score_ratios(target_prob, prior_x, z_target_prob, prior_z, gamma)


def _target_scores(p: np.ndarray, keep: np.ndarray, t: int, refs: references.References,
                   totals: Optional[dict], population_prob: Optional[np.ndarray],
                   population_refs: Optional[np.ndarray], offline: bool, a: float, gamma: float
                   ) -> np.ndarray:
  """RMIA scores [N] of target row t from Pr(x | theta) p [M, N] (population examples:
  population_prob [M, P]); totals = _totals(p, keep) (read for every-other-model references
  only)."""
  prior_x = _prior(_ref_means(p, t, keep[t], refs, totals), offline, a)
  if population_prob is None:
    z = ~keep[t]
    return score_ratios(p[t], prior_x, p[t][z], prior_x[z], gamma)
  prior_z = _population_prior(population_prob, population_refs, offline, a)
  return score_ratios(p[t], prior_x, population_prob[t], prior_z, gamma)


def _rmia(data: AttackData, targets: Sequence[int], offline: bool, a: float,
          gamma: float) -> np.ndarray:
  _check_params(a, gamma)
  targets = check_targets(data, targets)
  keep = np.asarray(data.keep)
  p = _probs(data, False)
  totals = data.cached(("design", "rmia", "totals"), lambda: _totals(p, keep))
  has_population = data.population_logits is not None
  population_prob = _probs(data, True) if has_population else None
  scores = []
  for t in targets:
    population_refs = references.population_for_target(data, t) if has_population else None
    scores.append(_target_scores(p, keep, t, references.for_target(data, t), totals,
                                 population_prob, population_refs, offline, a, gamma))
  return np.stack(scores)


def rmia_online(data: AttackData, targets: Sequence[int], gamma: float = 2.0) -> np.ndarray:
  """Online RMIA (IN and OUT references, Pr(x) the average of their means); scores [T, N]
  in [0, 1]."""
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
  has_population = data.population_logits is not None
  population_prob = _probs(data, True)[refs] if has_population else None
  totals = _totals(p, keep)
  chosen = [references.select(keep, t) for t in range(num_pseudo_targets)]
  population_refs = [references.population(len(refs), population_prob.shape[1], t)
                     if has_population else None for t in range(num_pseudo_targets)]
  mean_auc = []
  for a in grid:
    _check_params(a, gamma)
    aucs = []
    for t in range(num_pseudo_targets):
      scores = _target_scores(p, keep, t, chosen[t], totals, population_prob,
                              population_refs[t], True, a, gamma)
      fpr, tpr, _ = metrics.roc_curve(scores, keep[t])
      aucs.append(metrics.auc(fpr, tpr))
    mean_auc.append(np.mean(aucs))
  return float(grid[int(np.argmax(mean_auc))])
