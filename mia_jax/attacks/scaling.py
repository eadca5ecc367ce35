"""The shadow-scaling curve: shadow-based attacks rerun with fewer references per example.

Size K of the curve is K references per example, K // 2 IN and K // 2 OUT, drawn per example
from the other models (references.py; seeded by the run's seed, the target and K), so the
IN/OUT composition never depends on the target's membership. A random subset of K models, as
the curve used before, breaks an exact design: a member of the target then has fewer IN
shadows than a non-member on average, and an attack on a target without membership signal
scores away from 0.5 (experiments/results/null_table.md has the figures, before and after).

What size K means. Each example's statistics (LiRA's Gaussians, RMIA's Pr(x)) come from K
models, as with K shadow models of the same design; what pools over examples (LiRA's global
sigmas, Shokri's classifier, RMIA's z samples) sees more distinct models than K real shadows
would give, so at small K those attacks may read a little higher than with K trained shadows.
"""

from typing import Mapping, Sequence

import numpy as np

from mia_jax import metrics
from mia_jax.attacks import evaluate, registry
from mia_jax.attacks.base import AttackData
from mia_jax.errors import ConfigError


def scaling_sizes(num_models: int) -> list[int]:
  """Shadow counts for the scaling curve: 2, 4, 8, ... below M - 1, then M - 1 (all)."""
  full = num_models - 1
  return [2 ** k for k in range(1, full.bit_length()) if 2 ** k < full] + [full]


def view(d: AttackData, size: int, seed: int = 0) -> AttackData:
  """The data the curve attacks at `size` references per example: d itself at size >= M - 1
  (so the last point equals the attacks on d), else d.with_references(size, seed)."""
  return d if size >= d.num_models - 1 else d.with_references(int(size), seed)


def shadow_subset(d: AttackData, target: int, shadows: Sequence[int]
                  ) -> tuple[AttackData, int]:
  """AttackData over model `target` and the given shadows, kept in index order.

  Not what the scaling curve uses: a subset of an exact design is no longer exact, so the
  attacks keep every shadow of it and a member of the target has fewer IN shadows than a
  non-member on average (see the module docstring). Use `view` for fewer references.

  Returns:
    (data over the M' = len(shadows) + 1 models, the target's row in it). With every other
    model as shadows it is `d` itself (copied) and the row is `target`, so attacks give the
    same scores as on `d`.
  """
  chosen = np.union1d([int(target)], np.asarray(shadows, int))
  pick = lambda a: None if a is None else np.asarray(a)[chosen]
  sub = AttackData(logits=pick(d.logits), labels=d.labels, keep=pick(d.keep),
                   population_logits=pick(d.population_logits),
                   population_labels=d.population_labels, features=d.features,
                   population_features=d.population_features)
  return sub, int(np.searchsorted(chosen, target))


def shadow_scaling(d: AttackData, names: Sequence[str], targets: Sequence[int],
                   params_by_name: Mapping[str, Mapping] | None = None, seed: int = 0,
                   sizes: Sequence[int] | None = None) -> dict:
  """Shadow-based attacks rerun with K references per example, for each K in `sizes`.

  Every attack in `names` that reads shadows (registry.reads_shadows) is run on view(d, K,
  seed) for each target t and evaluated against keep[t]; at K = M - 1 the view is d itself.

  Returns:
    {"sizes": [K], "targets": [T], "attacks": {name: [point per size]}}, a point being
    {"num_shadows": k, "auc": {"mean", "std", "per_target"}, "tpr_at_fpr": {alpha: ...}} or
    {"num_shadows": k, "skipped": reason} where the attack cannot run with k shadows.
  """
  params_by_name = dict(params_by_name or {})
  names = [n for n in names if registry.reads_shadows(n)]
  sizes = list(sizes or scaling_sizes(d.num_models))
  keep = np.asarray(d.keep)
  per = {n: {k: [] for k in sizes} for n in names}
  for k in sizes:
    data = view(d, k, seed)
    for t in targets:
      for name in names:
        try:
          scores = registry.run(name, data, [t], **dict(params_by_name.get(name, {})))[0]
          per[name][k].append(metrics.evaluate(scores, keep[t]))
        except ConfigError as e:
          per[name][k].append({"num_members": int(keep[t].sum()),
                               "num_nonmembers": int((~keep[t]).sum()), "skipped": str(e)})
  points = {n: [{"num_shadows": k, **evaluate.combine(per[n][k], True)} for k in sizes]
            for n in names}
  return {"sizes": sizes, "targets": [int(t) for t in targets], "attacks": points}
