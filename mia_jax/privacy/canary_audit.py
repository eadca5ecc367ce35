"""The canary audit stage: each target's one-run empirical lower bound on epsilon, from the
scores of an attack that reads only the target model, beside the accountant's epsilon."""

from typing import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from mia_jax.attacks import registry
from mia_jax.attacks.base import AttackData
from mia_jax.privacy import auditing


def run(attack_data: AttackData, config: ml_collections.ConfigDict, header: Mapping,
        targets: Sequence[int], scores_by_name: Mapping, log: Callable[[str], None]) -> dict:
  """results["privacy"]: the accountant's figures (DP runs) and, with canaries, the one-run
  empirical lower bound on epsilon of each target beside them."""
  privacy = dict(header.get("privacy", {}))
  canaries = np.asarray(header.get("canaries", []), np.int64)
  if len(canaries) == 0:
    return privacy
  name = config.audit.attack
  scores = scores_by_name.get(name)
  if scores is None:
    scores = registry.run(name, attack_data, targets)
  keep = np.asarray(attack_data.keep)[targets]
  delta = privacy.get("delta") or 1.0 / float(keep.sum(axis=1).min())
  audit = auditing.audit_targets(scores, keep, canaries, delta,
                                 float(config.audit.confidence), method=config.audit.method)
  audit["attack"] = name
  privacy["audit"] = audit
  privacy["epsilon_lower_bound"] = audit["max"]
  privacy.setdefault("delta", delta)
  log(f"canary audit ({len(canaries)} canaries, {name} scores): epsilon lower bound "
      f"{audit['mean']:.3f} mean, {audit['max']:.3f} max over {len(targets)} targets"
      + (f"; accountant's epsilon {privacy['epsilon']:.3f}" if "epsilon" in privacy else ""))
  return privacy
