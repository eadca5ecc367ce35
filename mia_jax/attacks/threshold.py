"""Global-threshold attacks: the score is one signal of the target model, higher = member.

No shadow models: the ROC sweeps one threshold shared by all examples (the paper's attack is
`loss`). Signals are averaged over the Q queries.

  loss:             -cross-entropy
  confidence:       p_y
  entropy:          -H(p)
  modified_entropy: -Mentr (Song & Mittal 2021)

`score(logits [N, Q, C], labels [N], signal)` is the array-level form; the registry's
attacks (loss, confidence, ...) apply it to each target's logits.
"""

from typing import Sequence

import numpy as np

from mia_jax.attacks import signals
from mia_jax.attacks.base import AttackData, check_targets
from mia_jax.errors import ConfigError

_SIGN = {"loss": -1.0, "confidence": 1.0, "entropy": -1.0, "modified_entropy": -1.0}


def _from_signal(signal: str, values: np.ndarray) -> np.ndarray:
  """Scores [...] float64 from a signal's values [..., Q] (confidence: from the loss)."""
  if signal == "confidence":
    return np.exp(-values.astype(np.float64)).mean(axis=-1)
  return _SIGN[signal] * values.mean(axis=-1, dtype=np.float64)


def score(logits: np.ndarray, labels: np.ndarray, signal: str = "loss") -> np.ndarray:
  """Threshold-attack scores on arrays: float64 [N], higher = member.

  Args:
    logits: float [N, Q, C], the target's logits per query (add a query axis with
      logits[:, None] for one query).
    labels: int [N] true classes.
    signal: "loss" (-cross-entropy), "confidence" (p_y, as exp(-loss) in float64),
      "entropy" or "modified_entropy" (both negated), averaged over the queries.

  Example:
    >>> logits = np.array([[[4.0, 0.0]], [[0.0, 1.0]]])   # [N=2, Q=1, C=2]
    >>> score(logits, np.array([0, 0]), "confidence").round(3)
    array([0.982, 0.269])
  """
  if signal not in _SIGN:
    raise ConfigError(f"unknown threshold signal {signal!r}; choose one of {sorted(_SIGN)}")
  logits = np.asarray(logits)
  if logits.ndim != 3:
    raise ConfigError(f"logits must be [N, Q, C], got {logits.shape}; add a query axis with "
                      "logits[:, None]")
  source = "loss" if signal == "confidence" else signal
  values = signals.SIGNALS[source](logits, np.asarray(labels)[:, None])
  return _from_signal(signal, values)


def _threshold(signal: str, data: AttackData, targets: Sequence[int]) -> np.ndarray:
  targets = check_targets(data, targets)
  source = "loss" if signal == "confidence" else signal
  return _from_signal(signal, data.target_signal(source, targets))  # from [T, N, Q]


def loss(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(cross-entropy averaged over queries)."""
  return _threshold("loss", data, targets)


def confidence(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = true-label probability averaged over queries.

  p_y is taken as exp(-loss) in float64 from the (precise) loss signal: a float32 p_y rounds to
  exactly 1.0 for every confidently right example, which ties them all at the top of the ranking
  and leaves no threshold below 1% FPR on a well-fit model.
  """
  return _threshold("confidence", data, targets)


def entropy(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(prediction entropy averaged over queries)."""
  return _threshold("entropy", data, targets)


def modified_entropy(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Scores [T, N] = -(modified entropy averaged over queries)."""
  return _threshold("modified_entropy", data, targets)
