"""Membership inference attacks: array-level score functions, and a registry that runs them.

Array level (one target, numpy arrays; each module's docstring has the formulas):

  lira.score(target_signal [N, Q], shadow_signal [K, N, Q], shadow_in [K, N], variant=...)
  rmia.score(target_prob [N], reference_prob [K, N], reference_in [K, N], z_...=...)
  threshold.score(logits [N, Q, C], labels [N], signal="loss")
  quantile.score(quantile.fit(population_features [P, D], population_signal [P], alpha),
                 features [N, D], signal [N])                     (no shadow models)
  signals.scaled_logit(logits [..., C], labels [...])      (and loss, confidence, ...)

each returning scores [N], higher = member. The registry runs an attack by name on the
outputs of M models, each target in turn scored against references chosen among the others
(references.py: their IN/OUT composition does not depend on the target's membership):

  from mia_jax import attacks
  data = attacks.AttackData(logits=logits, labels=labels, keep=keep)   # [M, N, Q, C], [N], [M, N]
  scores = attacks.run("lira_online", data, targets=[0, 1])             # [T, N]
  summary, curves = attacks.evaluate_attack("lira_online", data, targets=[0, 1])

Every registered attack has the signature attack_fn(data, targets, **params) -> [T, N].
Per-example risk over many targets: risk.per_example(scores [T, N], keep [T, N]).
"""

from mia_jax.attacks import (evaluate, lira, quantile, references, registry, risk, rmia,
                             scaling, shokri, signals, synthetic, threshold)
from mia_jax.attacks.base import AttackData, AttackFn, others
from mia_jax.attacks.evaluate import (evaluate_attack, evaluate_attacks, evaluate_scores,
                                      target_predictions)
from mia_jax.attacks.registry import (ATTACKS, get, names, params_of, reads_shadows, register,
                                      run)
from mia_jax.attacks.rmia import tune_rmia_a

__all__ = [
    # modules
    "evaluate", "lira", "quantile", "references", "registry", "risk", "rmia", "scaling",
    "shokri", "signals", "synthetic", "threshold",
    # data types
    "AttackData", "AttackFn",
    # running and evaluating attacks by name
    "ATTACKS", "evaluate_attack", "evaluate_attacks", "evaluate_scores", "get", "names",
    "others", "params_of", "reads_shadows", "register", "run", "target_predictions",
    "tune_rmia_a",
]
