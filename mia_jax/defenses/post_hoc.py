"""The pipeline's post-hoc defense stage: `config.defense.post_hoc` applied to the released
outputs before any attack reads them.

  config.defense.post_hoc = "logit_reweighting"   # '' (default): no defense, outputs as queried
  config.defense.params.w = 0.1                   # keyword arguments of the defense

Decisions:
- Every model's outputs are defended, the target's and the shadows' alike: the attacker knows
  the defense and its parameters and applies it to its own shadow models (the adaptive
  attacker, the stronger of the two the study's Table 4 compares). `unaware_logits` gives the
  other one (each target defended, its shadows raw) for experiments that want both.
- The population (test) outputs are defended with the same model's state: a deployed model
  answers every query through the defense. The pool and population are joined for one call of
  the registered function, the population marked as no model's training data (keep False), so
  a defense's statistics (logit reweighting's class centroids) read only model m's members.
- `apply` returns a record of what was attacked (results.json "defense"; report.md says it).
"""

import inspect
import time
from typing import Callable

import ml_collections
import numpy as np

from mia_jax.attacks.base import AttackData
from mia_jax.defenses import logit_reweighting
from mia_jax.errors import ConfigError

# name -> fn(logits [M, N, Q, C], labels [N], keep [M, N], **params) -> logits' [M, N, Q, C];
# each model's defense may read only that model's own training data (keep[m]).
POST_HOC: dict[str, Callable] = {
    "logit_reweighting": logit_reweighting.defend,
}


def names() -> list[str]:
  return sorted(POST_HOC)


def get(name: str) -> Callable:
  """The registered post-hoc defense `name` (ConfigError naming the choices otherwise)."""
  if name not in POST_HOC:
    raise ConfigError(f"unknown post-hoc defense {name!r}; choose one of {names()} with "
                      "--config.defense.post_hoc=NAME")
  return POST_HOC[name]


def register(name: str, fn: Callable) -> None:
  POST_HOC[name] = fn


def _params(defense: ml_collections.ConfigDict) -> dict:
  return dict(defense.get("params", None) or {})


def check_config(defense: ml_collections.ConfigDict | None) -> None:
  """ConfigError for an unknown defense name or a parameter the defense does not take."""
  if defense is None or not defense.get("post_hoc", ""):
    return
  fn = get(defense.post_hoc)
  takes = list(inspect.signature(fn).parameters)[3:]
  unknown = sorted(set(_params(defense)) - set(takes))
  if unknown:
    raise ConfigError(f"defense {defense.post_hoc!r} takes no parameter(s) {unknown}; it takes "
                      f"{takes or 'none'} (--config.defense.params.NAME=VALUE)")


def enabled(defense: ml_collections.ConfigDict | None) -> bool:
  return defense is not None and bool(defense.get("post_hoc", ""))


def defend_all(data: AttackData, name: str, params: dict) -> AttackData:
  """The defense `name` applied to every model's pool and population outputs.

  Args:
    data: logits [M, N, Q, C] (and population_logits [M, P, Q, C]) as queried.
    name: a registered post-hoc defense (`names()`).
    params: its keyword arguments.

  Returns:
    AttackData of the same shapes, keep and labels, with the defended outputs.
  """
  fn = get(name)
  pool_n = data.logits.shape[1]
  if data.population_logits is None:
    logits = fn(data.logits, data.labels, data.keep, **params)
    return AttackData(logits=logits, labels=data.labels, keep=data.keep)
  joined = np.concatenate([data.logits, data.population_logits], axis=1)
  labels = np.concatenate([data.labels, data.population_labels])
  keep = np.concatenate([data.keep, np.zeros((data.num_models, len(data.population_labels)),
                                             bool)], axis=1)
  out = fn(joined, labels, keep, **params)
  return AttackData(logits=out[:, :pool_n], labels=data.labels, keep=data.keep,
                    population_logits=out[:, pool_n:], population_labels=data.population_labels)


def unaware_logits(raw: np.ndarray, defended: np.ndarray, target: int) -> np.ndarray:
  """logits [M, N, Q, C] an attacker unaware of the defense reads for `target`: the target's
  defended outputs beside its shadows' raw ones."""
  mixed = np.array(raw, copy=True)
  mixed[target] = defended[target]
  return mixed


def apply(data: AttackData, defense: ml_collections.ConfigDict | None
          ) -> tuple[AttackData, dict | None]:
  """(the outputs the attacks read, the record of the defense or None when it is off)."""
  if not enabled(defense):
    return data, None
  t0 = time.perf_counter()
  params = _params(defense)
  defended = defend_all(data, defense.post_hoc, params)
  changed = np.mean(np.argmax(defended.logits, -1) != np.argmax(data.logits, -1))
  record = {
      "post_hoc": defense.post_hoc, "params": params,
      "attacked": "defended outputs of every model (target and shadows, pool and population): "
                  "an attacker who knows the defense",
      "argmax_changed": float(changed), "seconds": time.perf_counter() - t0}
  return defended, record
