"""The data every attack reads, and the attack function protocol.

An attack is a pure function

  attack_fn(data: AttackData, targets: Sequence[int], **params) -> np.ndarray [T, N]

returning membership scores (higher = member) of all N pool examples for each target model t
in `targets`, computed from model t's outputs and the OTHER models only: no attack reads
keep[t] (except RMIA without population data, which takes the target's known non-members as
its z samples, as the paper does) and no attack uses model t as its own shadow/reference.
Shadow-based attacks take their per-example IN and OUT references from references.py, whose
rule keeps their IN/OUT composition independent of keep[t, i]; `num_references` (None: every
other model; K: K per example, as the shadow-scaling curve asks) and `reference_seed` choose
it, and `with_references` gives a view of the same outputs with another choice.

`AttackData` caches derived arrays (signals over all models, sorted shadow statistics) in a
private dict, so several attacks on the same object compute them once. The cache lives as
long as the object; call `clear_cache()` to free it.
"""

import dataclasses
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from mia_jax.attacks import signals
from mia_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class AttackData:
  """Outputs of M models on a pool of N examples, and who trained on what.

  Attributes:
    logits: float [M, N, Q, C]: model m's logits on query q (e.g. the image, its mirror) of
      pool example i. float16 or float32 keeps memory down; signals are computed in float32.
    labels: int [N] true classes.
    keep: bool [M, N]; keep[m, i] = model m trained on example i.
    population_logits: optional float [M, P, Q, C] on examples in no model's training set.
    population_labels: optional int [P].
    features: optional float [N, D] per pool example (e.g. flattened pixels or an embedding
      of the input), for attacks that regress on the example (quantile_regression).
    population_features: optional float [P, D], the same features of the population examples.
    num_references: references per example for the shadow-based attacks: None for every other
      model (counts truncated in exact designs), K for K // 2 IN and K // 2 OUT drawn per
      example (references.py).
    reference_seed: seed of those draws.
  """
  logits: np.ndarray
  labels: np.ndarray
  keep: np.ndarray
  population_logits: Optional[np.ndarray] = None
  population_labels: Optional[np.ndarray] = None
  features: Optional[np.ndarray] = None
  population_features: Optional[np.ndarray] = None
  num_references: Optional[int] = None
  reference_seed: int = 0
  _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

  def __post_init__(self):
    logits, labels, keep = self.logits, self.labels, self.keep
    if getattr(logits, "ndim", 0) != 4:
      raise ConfigError(f"logits must be [M, N, Q, C], got shape {np.shape(logits)}; "
                        "add a query axis with logits[:, :, None] for one query")
    m, n, _, c = logits.shape
    if np.shape(labels) != (n,):
      raise ConfigError(f"labels must be [N]=[{n}], got {np.shape(labels)}")
    if np.shape(keep) != (m, n) or np.asarray(keep).dtype != np.bool_:
      raise ConfigError(f"keep must be bool [M, N]=[{m}, {n}], got "
                        f"{np.asarray(keep).dtype} {np.shape(keep)}")
    if m < 2:
      raise ConfigError(f"need at least 2 models (a target and a shadow), got M={m}")
    if self.num_references is not None and not (
        isinstance(self.num_references, (int, np.integer)) and self.num_references >= 1):
      raise ConfigError(f"num_references={self.num_references!r} must be None (every other "
                        "model) or an integer >= 1")
    if (self.population_logits is None) != (self.population_labels is None):
      raise ConfigError("give both population_logits and population_labels, or neither")
    if self.population_logits is not None:
      pshape = np.shape(self.population_logits)
      if len(pshape) != 4 or pshape[0] != m or pshape[2:] != logits.shape[2:]:
        raise ConfigError(f"population_logits must be [M, P, Q, C]=[{m}, P, "
                          f"{logits.shape[2]}, {c}], got {pshape}")
      if np.shape(self.population_labels) != (pshape[1],):
        raise ConfigError(f"population_labels must be [P]=[{pshape[1]}], got "
                          f"{np.shape(self.population_labels)}")
    self._check_features()

  def _check_features(self):
    """features [N, D] and population_features [P, D]: both or neither, finite, with the
    population's examples (the regression trains on them) and the same D."""
    if self.features is None and self.population_features is None:
      return
    if self.features is None or self.population_features is None:
      raise ConfigError("give both features [N, D] and population_features [P, D], or neither")
    if self.population_logits is None:
      raise ConfigError("population_features need population_logits and population_labels "
                        "(the target's outputs on those examples)")
    n, p = self.logits.shape[1], self.population_logits.shape[1]
    fshape, pshape = np.shape(self.features), np.shape(self.population_features)
    if len(fshape) != 2 or fshape[0] != n:
      raise ConfigError(f"features must be [N, D]=[{n}, D], got {fshape}; flatten each "
                        "example's features with x.reshape(len(x), -1)")
    if len(pshape) != 2 or pshape != (p, fshape[1]):
      raise ConfigError(f"population_features must be [P, D]=[{p}, {fshape[1]}], got {pshape}")
    for name in ("features", "population_features"):
      value = np.asarray(getattr(self, name))
      if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
        raise ConfigError(f"{name} must be finite numbers; replace NaN/inf before the attack")

  @property
  def num_models(self) -> int:
    return self.logits.shape[0]

  @property
  def num_examples(self) -> int:
    return self.logits.shape[1]

  @property
  def num_classes(self) -> int:
    return self.logits.shape[3]

  def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
    """Returns self's cached value under `key`, computing it with fn() the first time."""
    if key not in self._cache:
      self._cache[key] = fn()
    return self._cache[key]

  def cached_last(self, key: Any, tag: Any, fn: Callable[[], Any]) -> Any:
    """Like `cached`, but holds one value under `key`: the one for the latest `tag` (e.g. a
    target), recomputed with fn() when the tag changes."""
    hit = self._cache.get(key)
    if hit is None or hit[0] != tag:
      hit = self._cache[key] = (tag, fn())
    return hit[1]

  def clear_cache(self) -> None:
    self._cache.clear()

  def with_references(self, num_references: Optional[int], seed: int = 0) -> "AttackData":
    """The same outputs with another choice of references (see `num_references`). What is
    already cached and does not depend on that choice (keys starting with "signal" or
    "design") is shared, not recomputed."""
    view = dataclasses.replace(self, num_references=num_references, reference_seed=seed)
    for key, value in self._cache.items():
      if key[0] in ("signal", "design"):
        view._cache[key] = value
    return view

  def signal(self, name: str, population: bool = False) -> np.ndarray:
    """Signal `name` (see signals.SIGNALS) of every model: [M, N, Q] (or [M, P, Q]), cached."""
    if name not in signals.SIGNALS:
      raise ConfigError(f"unknown signal {name!r}; choose one of {sorted(signals.SIGNALS)}")
    if population and self.population_logits is None:
      raise ConfigError("this attack needs population_logits and population_labels")

    def compute():
      logits = self.population_logits if population else self.logits
      labels = self.population_labels if population else self.labels
      out = signals.SIGNALS[name](logits, np.asarray(labels)[:, None])
      if np.isnan(out).any():
        raise DataError(f"signal {name} has NaN for some examples; the logits hold NaN/inf")
      return out

    return self.cached(("signal", name, population), compute)

  def target_signal(self, name: str, targets: Sequence[int]) -> np.ndarray:
    """Signal `name` of the given models only: [T, N, Q]; reuses the full cache if present."""
    key = ("signal", name, False)
    if key in self._cache:
      return self._cache[key][list(targets)]
    if name not in signals.SIGNALS:
      raise ConfigError(f"unknown signal {name!r}; choose one of {sorted(signals.SIGNALS)}")
    out = signals.SIGNALS[name](self.logits[list(targets)], np.asarray(self.labels)[:, None])
    if np.isnan(out).any():
      raise DataError(f"signal {name} has NaN for some examples; the logits hold NaN/inf")
    return out


class AttackFn(Protocol):

  def __call__(self, data: AttackData, targets: Sequence[int], **params) -> np.ndarray:
    ...


def check_targets(data: AttackData, targets: Sequence[int]) -> list[int]:
  """Validates target model indices; returns them as a list of ints."""
  targets = [int(t) for t in np.atleast_1d(np.asarray(targets))]
  bad = [t for t in targets if not 0 <= t < data.num_models]
  if bad or not targets:
    raise ConfigError(f"targets {bad or targets} must be non-empty model indices in "
                      f"[0, {data.num_models})")
  return targets


def others(num_models: int, target: int) -> np.ndarray:
  """Indices of all models but `target`: int [M - 1]."""
  return np.delete(np.arange(num_models), target)
