"""Which other models score each example against a target: the rule every shadow attack reads.

For target model t and pool example i, a shadow-based attack's references are other models:
IN references trained on i, OUT references did not. The invariant this module guarantees, for
every shadow-based attack (LiRA, RMIA, Shokri, and any attack added to the registry):

  the IN/OUT composition of example i's references does not depend on keep[t, i],

so an attack scores the target only through the target's own outputs. The rule reads the
other models' keep rows (and a seed), never the target's.

Why a rule is needed. In LiRA's exact design (every example IN for exactly half of the M
models) the other models hold a member of the target IN M/2 - 1 times and a non-member M/2
times. Any statistic over references that feels the counts (a plain mean over all references,
as RMIA online had; per-example Gaussian fits from unequal groups; a random subset of the
models, as the shadow-scaling curve had) then separates members from non-members when the
target's outputs carry no membership at all.

`select(keep, target, num_references, seed)`:

  num_references None (or >= M - 1): every other model, except that where a group's counts
    over the examples differ by at most one and the smallest is >= 1 (an exact design), every
    example keeps that smallest count of the group: the surplus shadow, the last by model
    index, is left out, as LiRA's reference code truncates. Other designs (keep rows drawn
    independently) keep every shadow: there the counts carry no membership of the target.
  num_references K < M - 1 (the shadow-scaling curve): per example, K // 2 IN and K // 2 OUT
    references drawn uniformly without replacement from the other models (odd K: the extra
    one is IN or OUT by a fair coin per example), from numpy's default_rng([seed, t, K]). On
    an exact design every example has enough of both (K <= M - 2 gives K / 2 <= M / 2 - 1);
    an example of another design with fewer keeps what it has. A fixed random subset of K
    models would not do: its per-example IN count is hypergeometric with a mean that
    depends on keep[t, i].

Population examples (in no model's training set, e.g. RMIA's z samples) are OUT for every
model: `population` gives them every other model, or K per example drawn the same way.
"""

import dataclasses
from typing import Optional

import numpy as np

from mia_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class References:
  """One target's references for every pool example.

  Attributes:
    inside: bool [M, N]; inside[m, i]: model m is an IN reference of example i (keep[m, i]).
    outside: bool [M, N]; the OUT references (not keep[m, i]). The target's row is False in
      both.
    dropped_in, dropped_out: int [N] for the all-models rule: the group's surplus shadow left
      out of example i (-1: none), so that inside = keep without the target's row and without
      dropped_in (LiRA's sorted-table path reads these); None for drawn references.
  """
  inside: np.ndarray
  outside: np.ndarray
  dropped_in: Optional[np.ndarray] = None
  dropped_out: Optional[np.ndarray] = None

  @property
  def drawn(self) -> bool:
    """True for references drawn per example (num_references < M - 1)."""
    return self.dropped_in is None


def surplus(group: np.ndarray, target: int) -> np.ndarray:
  """The shadow to leave out per example so that every example keeps the same number of the
  group's shadows: int [N], the last model (by index) of the group other than the target, or
  -1 where none is left out (see the module docstring). group: bool [M, N] (keep or ~keep)."""
  shadows = np.delete(group, target, axis=0)
  n = shadows.sum(axis=0)
  if n.size == 0 or n.max() - n.min() > 1 or n.min() < 1:
    return np.full(group.shape[1], -1)
  last = shadows.shape[0] - 1 - np.argmax(shadows[::-1], axis=0)
  last = last + (last >= target)              # index among all models
  return np.where(n > n.min(), last, -1)


def _all_models(keep: np.ndarray, target: int) -> References:
  masks, dropped = [], []
  for group in (keep, ~keep):
    j = surplus(group, target)
    mask = group.copy()
    mask[target] = False
    cols = np.nonzero(j >= 0)[0]
    mask[j[cols], cols] = False
    masks.append(mask)
    dropped.append(j)
  return References(inside=masks[0], outside=masks[1], dropped_in=dropped[0],
                    dropped_out=dropped[1])


def _smallest(keys: np.ndarray, k: np.ndarray) -> np.ndarray:
  """bool [N, M]: per row of keys [N, M], its k[n] smallest finite entries."""
  n, m = keys.shape
  out = np.zeros((n, m), bool)
  kmax = int(min(k.max(initial=0), m))
  if kmax == 0:
    return out
  idx = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax] if kmax < m else \
      np.broadcast_to(np.arange(m), (n, m))
  vals = np.take_along_axis(keys, idx, axis=1)
  order = np.argsort(vals, axis=1)
  idx = np.take_along_axis(idx, order, axis=1)
  vals = np.take_along_axis(vals, order, axis=1)
  ok = (np.arange(kmax)[None, :] < k[:, None]) & np.isfinite(vals)
  rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
  out[rows[ok], idx[ok]] = True
  return out


def _keys(num_models: int, num_examples: int, target: int, rng) -> np.ndarray:
  """Random keys float32 [N, M], +inf in the target's column: the draw's order of models."""
  keys = rng.random((num_examples, num_models), dtype=np.float32)
  keys[:, target] = np.inf
  return keys


def _drawn(keep: np.ndarray, target: int, k: int, seed: int) -> References:
  m, n = keep.shape
  rng = np.random.default_rng([seed, target, k])
  keys = _keys(m, n, target, rng)
  k_in = k // 2 + ((rng.random(n) < 0.5) if k % 2 else np.zeros(n, bool))  # [N]
  keep_t = keep.T
  inside = _smallest(np.where(keep_t, keys, np.inf), k_in)
  outside = _smallest(np.where(keep_t, np.inf, keys), k - k_in)
  return References(inside=np.ascontiguousarray(inside.T),
                    outside=np.ascontiguousarray(outside.T))


def _check(num_models: int, target: int, num_references: Optional[int]) -> None:
  if not 0 <= target < num_models:
    raise ConfigError(f"target {target} must be a model index in [0, {num_models})")
  if num_references is not None and int(num_references) < 1:
    raise ConfigError(f"num_references={num_references} must be None (every other model) "
                      "or at least 1")


def select(keep: np.ndarray, target: int, num_references: Optional[int] = None,
           seed: int = 0) -> References:
  """The IN and OUT references of every example for `target` (see the module docstring).

  Args:
    keep: bool [M, N], keep[m, i] = model m trained on example i. Only rows other than the
      target's are read.
    target: the target model's row.
    num_references: None (or >= M - 1) for every other model; K for K references per example.
    seed: seed of the per-example draws.

  Returns:
    References with inside, outside bool [M, N].
  """
  keep = np.asarray(keep, bool)
  _check(keep.shape[0], target, num_references)
  if num_references is None or num_references >= keep.shape[0] - 1:
    return _all_models(keep, int(target))
  return _drawn(keep, int(target), int(num_references), int(seed))


def population(num_models: int, num_examples: int, target: int,
               num_references: Optional[int] = None, seed: int = 0) -> np.ndarray:
  """References of examples in no model's training set: bool [M, P].

  Every other model, or (num_references K < M - 1) K of them per example, drawn uniformly
  from numpy's default_rng([seed, target, K, 1]).
  """
  _check(num_models, target, num_references)
  if num_references is None or num_references >= num_models - 1:
    mask = np.ones((num_models, num_examples), bool)
    mask[target] = False
    return mask
  k = int(num_references)
  rng = np.random.default_rng([int(seed), int(target), k, 1])
  keys = _keys(num_models, num_examples, int(target), rng)
  return np.ascontiguousarray(_smallest(keys, np.full(num_examples, k)).T)


def compact(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The models of each column of mask [M, N], in index order: (idx int [W, N], valid bool
  [W, N]) with W the largest column count; idx[w, i] is a model where valid[w, i]."""
  mask = np.asarray(mask, bool)
  count = mask.sum(axis=0)
  width = int(count.max(initial=0))
  idx = np.argsort(~mask, axis=0, kind="stable")[:width]
  return idx, np.arange(width)[:, None] < count[None, :]


def for_target(data, target: int) -> References:
  """`select` on data.keep with data's num_references and reference_seed; the latest target's
  References are cached on data (attacks loop over targets, several attacks per target in
  the scaling curve), so memory stays at one target's masks."""
  return data.cached_last(("references", "pool"), int(target), lambda: select(
      data.keep, target, data.num_references, data.reference_seed))


def population_for_target(data, target: int) -> np.ndarray:
  """`population` for data's population examples: bool [M, P] (latest target cached)."""
  num = data.population_logits.shape[1]
  return data.cached_last(("references", "population"), int(target), lambda: population(
      data.num_models, num, target, data.num_references, data.reference_seed))
