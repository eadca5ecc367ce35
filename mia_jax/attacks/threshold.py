"""Global-threshold attacks: the score is one signal of the target model, higher = member.

No shadow models: the ROC sweeps one threshold shared by all examples (the paper's attack is
`loss`). Signals are averaged over the Q queries.

  loss:             -cross-entropy
  confidence:       p_y
  entropy:          -H(p)
  modified_entropy: -Mentr (Song & Mittal 2021)
"""

from typing import Sequence

import numpy as np

from mia_jax.attacks.base import AttackData, check_targets

_SIGN = {"loss": -1.0, "confidence": 1.0, "entropy": -1.0, "modified_entropy": -1.0}


def _threshold(signal: str, data: AttackData, targets: Sequence[int]) -> np.ndarray:
  targets = check_targets(data, targets)
  values = data.target_signal(signal, targets)  # [T, N, Q]
  return _SIGN[signal] * values.mean(axis=-1, dtype=np.float64)


def loss(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(cross-entropy averaged over queries)."""
  return _threshold("loss", data, targets)


def confidence(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = true-label probability averaged over queries.

  p_y is taken as exp(-loss) in float64 from the (precise) loss signal: a float32 p_y rounds to
  exactly 1.0 for every confidently right example, which ties them all at the top of the ranking
  and leaves no threshold below 1% FPR on a well-fit model.
  """
  targets = check_targets(data, targets)
  losses = data.target_signal("loss", targets).astype(np.float64)  # [T, N, Q]
  return np.exp(-losses).mean(axis=-1)


def entropy(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(prediction entropy averaged over queries)."""
  return _threshold("entropy", data, targets)


def modified_entropy(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(modified entropy averaged over queries)."""
  return _threshold("modified_entropy", data, targets)
