"""Membership inference attacks: a registry of name -> attack function.

Every attack has the signature

  attack_fn(data: AttackData, targets: Sequence[int], **params) -> np.ndarray [T, N]

and returns membership scores (higher = member) of every pool example for each target model,
using only the other models as shadows/references (see base.py).

  from mia_jax import attacks
  scores = attacks.run("lira_online", attacks.AttackData(logits=..., labels=..., keep=...),
                       targets=[0, 1])
"""

from mia_jax.attacks import references, signals
from mia_jax.attacks.base import AttackData, AttackFn, others
from mia_jax.attacks.evaluate import evaluate_attack, evaluate_attacks, target_predictions
from mia_jax.attacks.registry import (ATTACKS, get, names, params_of, reads_shadows, register,
                                     run)
from mia_jax.attacks.rmia import tune_rmia_a

__all__ = ["ATTACKS", "AttackData", "AttackFn", "evaluate_attack", "evaluate_attacks", "get",
           "names", "others", "params_of", "reads_shadows", "references", "register", "run",
           "signals", "target_predictions", "tune_rmia_a"]
