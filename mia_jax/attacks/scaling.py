"""The shadow-scaling curve: shadow-based attacks rerun with fewer shadow models."""

from typing import Mapping, Sequence

import numpy as np

from mia_jax import metrics
from mia_jax.attacks import evaluate, registry
from mia_jax.attacks.base import AttackData, others
from mia_jax.errors import ConfigError

# Attacks that read shadow / reference models: the ones the shadow-scaling curve reruns.
SHADOW_ATTACK_PREFIXES = ("lira_", "rmia_", "shokri")


def scaling_sizes(num_models: int) -> list[int]:
  """Shadow counts for the scaling curve: 2, 4, 8, ... below M - 1, then M - 1 (all)."""
  full = num_models - 1
  return [2 ** k for k in range(1, full.bit_length()) if 2 ** k < full] + [full]


def shadow_subset(d: AttackData, target: int, shadows: Sequence[int]
                  ) -> tuple[AttackData, int]:
  """AttackData over model `target` and the given shadows, kept in index order.

  Returns:
    (data over the M' = len(shadows) + 1 models, the target's row in it). With every other
    model as shadows it is `d` itself (copied) and the row is `target`, so attacks give the
    same scores as on `d`.
  """
  chosen = np.union1d([int(target)], np.asarray(shadows, int))
  pick = lambda a: None if a is None else np.asarray(a)[chosen]
  sub = AttackData(logits=pick(d.logits), labels=d.labels, keep=pick(d.keep),
                           population_logits=pick(d.population_logits),
                           population_labels=d.population_labels)
  return sub, int(np.searchsorted(chosen, target))


def shadow_scaling(d: AttackData, names: Sequence[str], targets: Sequence[int],
                   params_by_name: Mapping[str, Mapping] | None = None, seed: int = 0,
                   sizes: Sequence[int] | None = None) -> dict:
  """Shadow-based attacks rerun on random subsets of each target's shadows.

  For each target t and size k, k of the other models are drawn (numpy default_rng of
  [seed, t, k]; all of them at k = M - 1) and every attack in `names` that reads shadows
  (SHADOW_ATTACK_PREFIXES) is run on AttackData of t and those shadows, then evaluated
  against keep[t].

  Returns:
    {"sizes": [K], "targets": [T], "attacks": {name: [point per size]}}, a point being
    {"num_shadows": k, "auc": {"mean", "std", "per_target"}, "tpr_at_fpr": {alpha: ...}} or
    {"num_shadows": k, "skipped": reason} where the attack cannot run with k shadows.
  """
  params_by_name = dict(params_by_name or {})
  names = [n for n in names if n.startswith(SHADOW_ATTACK_PREFIXES)]
  sizes = list(sizes or scaling_sizes(d.num_models))
  keep = np.asarray(d.keep)
  per = {n: {k: [] for k in sizes} for n in names}
  for t in targets:
    pool = others(d.num_models, t)
    for k in sizes:
      rng = np.random.default_rng([seed, int(t), k])
      shadows = pool if k >= pool.size else rng.choice(pool, size=k, replace=False)
      sub, row = shadow_subset(d, t, shadows)
      for name in names:
        try:
          scores = registry.run(name, sub, [row], **dict(params_by_name.get(name, {})))[0]
          per[name][k].append(metrics.evaluate(scores, keep[t]))
        except ConfigError as e:
          per[name][k].append({"num_members": int(keep[t].sum()),
                               "num_nonmembers": int((~keep[t]).sum()), "skipped": str(e)})
  points = {n: [{"num_shadows": k, **evaluate.combine(per[n][k], True)} for k in sizes] for n in names}
  return {"sizes": sizes, "targets": [int(t) for t in targets], "attacks": points}
