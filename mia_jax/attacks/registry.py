"""The attack registry: name -> attack function, which attacks read shadow models, and `run`.

Each registered attack is a loop over the targets around an array-level score function
(lira.score_fit, rmia.score_ratios, the signal-to-score step of threshold.score,
shokri.classify, quantile.fit and quantile.score). A shadow-based attack takes its
per-example references from references.for_target (so the IN/OUT composition it sees does
not depend on the target's membership, and the shadow-scaling curve can rerun it with K
references per example); tests/test_null.py runs every registered attack on a target
without membership signal, so an attack cannot be added without passing.
"""

import inspect
from typing import Sequence

import numpy as np

from mia_jax.attacks import lira, quantile, rmia, shokri, threshold
from mia_jax.attacks.base import AttackData, AttackFn, check_targets
from mia_jax.errors import ConfigError

ATTACKS: dict[str, AttackFn] = {
    "loss": threshold.loss,
    "confidence": threshold.confidence,
    "entropy": threshold.entropy,
    "modified_entropy": threshold.modified_entropy,
    "shokri": shokri.shokri,
    "lira_online": lira.lira_online,
    "lira_online_fixed_var": lira.lira_online_fixed_var,
    "lira_offline": lira.lira_offline,
    "lira_offline_fixed_var": lira.lira_offline_fixed_var,
    "lira_offline_logpdf": lira.lira_offline_logpdf,
    "rmia_online": rmia.rmia_online,
    "rmia_offline": rmia.rmia_offline,
    "quantile_regression": quantile.quantile_regression,
}


# The attacks that read shadow / reference models: the ones the shadow-scaling curve reruns.
SHADOW_BASED: set[str] = {"shokri", "lira_online", "lira_online_fixed_var", "lira_offline",
                          "lira_offline_fixed_var", "lira_offline_logpdf", "rmia_online",
                          "rmia_offline"}


def names() -> list[str]:
  return sorted(ATTACKS)


def register(name: str, fn: AttackFn, *, reads_shadows: bool) -> None:
  """Registers `fn(data, targets, **params) -> scores [T, N]` under `name`.

  reads_shadows: whether fn reads other models (then it must take them from
  references.for_target); the shadow-scaling curve reruns exactly these.
  """
  ATTACKS[name] = fn
  if reads_shadows:
    SHADOW_BASED.add(name)
  else:
    SHADOW_BASED.discard(name)


def reads_shadows(name: str) -> bool:
  """Whether attack `name` reads shadow / reference models."""
  get(name)
  return name in SHADOW_BASED


def get(name: str) -> AttackFn:
  """The attack function registered under `name`."""
  if name not in ATTACKS:
    raise ConfigError(f"unknown attack {name!r}; choose one of {names()}")
  return ATTACKS[name]


def params_of(name: str) -> dict:
  """The keyword parameters of attack `name` and their defaults."""
  sig = inspect.signature(get(name))
  return {k: v.default for k, v in list(sig.parameters.items())[2:]}


def run(name: str, data: AttackData, targets: Sequence[int], **params) -> np.ndarray:
  """Runs attack `name` on `targets`; returns float scores [T, N], higher = member."""
  fn = get(name)
  unknown = sorted(set(params) - set(params_of(name)))
  if unknown:
    raise ConfigError(f"attack {name!r} takes no parameter(s) {unknown}; it takes "
                      f"{sorted(params_of(name)) or 'none'}")
  targets = check_targets(data, targets)
  scores = np.asarray(fn(data, targets, **params))
  if scores.shape != (len(targets), data.num_examples):
    raise AssertionError(f"{name} returned {scores.shape}, expected "
                         f"{(len(targets), data.num_examples)}")
  return scores

