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
  """Scores [T, N] = true-label probability averaged over queries."""
  return _threshold("confidence", data, targets)


def entropy(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(prediction entropy averaged over queries)."""
  return _threshold("entropy", data, targets)


def modified_entropy(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(modified entropy averaged over queries)."""
  return _threshold("modified_entropy", data, targets)
