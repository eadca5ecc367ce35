"""The canary audit stage: the run's one-run empirical lower bound on epsilon, valid at the
configured confidence for the run as a whole, with each target's bound beside it, from the
scores of an attack that reads only the target model, beside the accountant's epsilon.

The canaries are scored on the query views the logits hold; with data.queries='train' (the
default) those are the views the models trained on, which is what gives the audit its power
(a mirror the models never saw dilutes the canaries' signal).
"""

from typing import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from mia_jax.attacks import registry
from mia_jax.attacks.base import AttackData
from mia_jax.privacy import auditing


def run(attack_data: AttackData, config: ml_collections.ConfigDict, header: Mapping,
        targets: Sequence[int], scores_by_name: Mapping, log: Callable[[str], None]) -> dict:
  """results["privacy"]: the accountant's figures (DP runs; `private` is False for a run with
  an injected fault) and, with canaries, `audit` (auditing.audit_targets over the targets)
  and `epsilon_lower_bound`, the audit's headline."""
  privacy = dict(header.get("privacy", {}))
  if privacy.get("fault"):
    log(f"dp.fault={privacy['fault']}: DP-SGD was broken on purpose (an audit power check); "
        f"the run is NOT private, whatever epsilon it claims")
  canaries = np.asarray(header.get("canaries", []), np.int64)
  if len(canaries) == 0:
    return privacy
  acfg = config.audit
  name = acfg.attack
  scores = scores_by_name.get(name)
  if scores is None:
    scores = registry.run(name, attack_data, targets)
  keep = np.asarray(attack_data.keep)[targets]
  delta = (privacy.get("delta") or float(config.get("dp", {}).get("delta", 0.0))
           or 1.0 / float(keep.sum(axis=1).min()))   # a no-DP run: the claim dp.delta names
  audit = auditing.audit_targets(
      scores, keep, canaries, delta, float(acfg.confidence), method=acfg.method,
      guesses=acfg.get("guesses", "two_sided"),
      fractions=tuple(acfg.get("fractions", auditing.FRACTIONS)),
      headline=acfg.get("headline", "bonferroni"), beside=tuple(acfg.get("beside", ())))
  audit["attack"] = name
  audit["canaries"] = canaries.tolist()       # their pool indices
  audit["queries"] = (header.get("dataset", {}).get("queries") or {}).get("views")
  privacy["audit"] = audit
  privacy["epsilon_lower_bound"] = audit["epsilon_lower_bound"]
  privacy.setdefault("delta", delta)
  per_target = ", ".join(f"{e:.3f}" for e in audit["per_target"])
  log(f"canary audit ({len(canaries)} canaries, {name} scores): epsilon lower bound "
      f"{audit['epsilon_lower_bound']:.3f} (holds at {audit['holds_at']}); per target "
      f"{per_target} (each at {100 * audit['confidence']:g}% for its own target)"
      + "".join(f"; {m} {b['epsilon_lower_bound']:.3f}" for m, b in audit["beside"].items())
      + (f"; accountant's epsilon {privacy['epsilon']:.3f}" if "epsilon" in privacy else ""))
  return privacy
