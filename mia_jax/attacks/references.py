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

Cost. `design(keep)` (per group: counts and the last two models of every example) is computed
once per data; with it a target's every-other-model References are two [M, N] mask copies,
and they record the dropped shadow per example, so attacks that hold once-sorted or
once-summed groups (LiRA, RMIA) subtract the target and that shadow in O(N) instead of
reading the masks. Drawn References keep their model lists [K/2, N] beside the masks.
`sample_pairs` draws (model, example) pairs from References for Shokri's training rows.
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
      dropped_in (the attacks' fast paths over once-sorted or once-summed groups read these);
      None for drawn references.
    models_in, models_out: for drawn references, (idx int [W, N], valid bool [W, N]): the
      chosen models of each example (valid ones), in no particular order; None otherwise.
  """
  inside: np.ndarray
  outside: np.ndarray
  dropped_in: Optional[np.ndarray] = None
  dropped_out: Optional[np.ndarray] = None
  models_in: Optional[tuple[np.ndarray, np.ndarray]] = None
  models_out: Optional[tuple[np.ndarray, np.ndarray]] = None

  @property
  def drawn(self) -> bool:
    """True for references drawn per example (num_references < M - 1)."""
    return self.dropped_in is None

  def models(self, inside: bool) -> tuple[np.ndarray, np.ndarray]:
    """(idx int [W, N], valid bool [W, N]): the IN (inside=True) or OUT references of each
    example, as `compact` gives them (or as drawn)."""
    stored = self.models_in if inside else self.models_out
    return stored if stored is not None else compact(self.inside if inside else self.outside)


def design(keep: np.ndarray) -> dict:
  """What the rule needs of keep [M, N] beyond one target's row, computed once per data:
  per group ("in": keep, "out": ~keep) the count [N] and the last two models (by index) of
  each example's group ([N], -1 where none), and keep transposed, contiguous [N, M]."""
  keep = np.asarray(keep, bool)
  m = keep.shape[0]
  out = {"keep_by_example": np.ascontiguousarray(keep.T)}
  for name, group in (("in", keep), ("out", ~keep)):
    count = group.sum(axis=0, dtype=np.int32)
    last = np.where(count > 0, m - 1 - np.argmax(group[::-1], axis=0), -1)
    rest = group.copy()
    cols = np.nonzero(last >= 0)[0]
    rest[last[cols], cols] = False
    second = np.where(count > 1, m - 1 - np.argmax(rest[::-1], axis=0), -1)
    out[name] = {"count": count, "last": last, "second": second}
  return out


def _surplus(group_design: dict, member: np.ndarray, target: int) -> np.ndarray:
  """surplus() from a group's design and the target's row of that group (member [N])."""
  n = group_design["count"] - member            # the shadows' counts: the target's row cancels
  if n.size == 0 or n.max() - n.min() > 1 or n.min() < 1:
    return np.full(n.shape, -1)
  last = group_design["last"]
  last = np.where(last == target, group_design["second"], last)
  return np.where(n > n.min(), last, -1)


def surplus(group: np.ndarray, target: int) -> np.ndarray:
  """The shadow to leave out per example so that every example keeps the same number of the
  group's shadows: int [N], the last model (by index) of the group other than the target, or
  -1 where none is left out (see the module docstring). group: bool [M, N] (keep or ~keep)."""
  group = np.asarray(group, bool)
  return _surplus(design(group)["in"], group[target], target)


def _all_models(keep: np.ndarray, target: int, info: dict) -> References:
  masks, dropped = [], []
  for name, group in (("in", keep), ("out", ~keep)):
    j = _surplus(info[name], group[target], target)
    mask = group.copy()
    mask[target] = False
    cols = np.nonzero(j >= 0)[0]
    mask[j[cols], cols] = False
    masks.append(mask)
    dropped.append(j)
  return References(inside=masks[0], outside=masks[1], dropped_in=dropped[0],
                    dropped_out=dropped[1])


def _smallest(keys: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per row of keys [N, M], its k[n] smallest finite entries: (idx [N, W], valid [N, W])."""
  n, m = keys.shape
  kmax = int(min(k.max(initial=0), m))
  if kmax == 0:
    return np.zeros((n, 0), np.intp), np.zeros((n, 0), bool)
  if kmax < m:
    idx = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax]
  else:
    idx = np.broadcast_to(np.arange(m), (n, m))
  vals = np.take_along_axis(keys, idx, axis=1)
  if (k == kmax).all():
    return idx, np.isfinite(vals)
  order = np.argsort(vals, axis=1)
  idx = np.take_along_axis(idx, order, axis=1)
  vals = np.take_along_axis(vals, order, axis=1)
  return idx, (np.arange(kmax)[None, :] < k[:, None]) & np.isfinite(vals)


def _keys(num_models: int, num_examples: int, target: int, rng) -> np.ndarray:
  """Random keys float32 [N, M], +inf in the target's column: the draw's order of models."""
  keys = rng.random((num_examples, num_models), dtype=np.float32)
  keys[:, target] = np.inf
  return keys


def _mask(idx: np.ndarray, valid: np.ndarray, num_models: int) -> np.ndarray:
  """bool [M, N] from per-example models idx, valid [N, W]."""
  mask = np.zeros((num_models, idx.shape[0]), bool)
  rows = np.broadcast_to(np.arange(idx.shape[0])[:, None], idx.shape)
  mask[idx[valid], rows[valid]] = True
  return mask


def _drawn(keep_by_example: np.ndarray, target: int, k: int, seed: int) -> References:
  n, m = keep_by_example.shape
  rng = np.random.default_rng([seed, target, k])
  keys = _keys(m, n, target, rng)
  k_in = k // 2 + ((rng.random(n) < 0.5) if k % 2 else np.zeros(n, bool))  # [N]
  inf = np.float32(np.inf)
  idx_in, ok_in = _smallest(np.where(keep_by_example, keys, inf), k_in)
  idx_out, ok_out = _smallest(np.where(keep_by_example, inf, keys), k - k_in)
  return References(inside=_mask(idx_in, ok_in, m), outside=_mask(idx_out, ok_out, m),
                    models_in=(idx_in.T, ok_in.T), models_out=(idx_out.T, ok_out.T))


def _check(num_models: int, target: int, num_references: Optional[int]) -> None:
  if not 0 <= target < num_models:
    raise ConfigError(f"target {target} must be a model index in [0, {num_models})")
  if num_references is not None and int(num_references) < 1:
    raise ConfigError(f"num_references={num_references} must be None (every other model) "
                      "or at least 1")


def select(keep: np.ndarray, target: int, num_references: Optional[int] = None,
           seed: int = 0, info: Optional[dict] = None) -> References:
  """The IN and OUT references of every example for `target` (see the module docstring).

  Args:
    keep: bool [M, N], keep[m, i] = model m trained on example i. Of the target's row only
      the cancelling count is read (its own membership never changes the result).
    target: the target model's row.
    num_references: None (or >= M - 1) for every other model; K for K references per example.
    seed: seed of the per-example draws.
    info: design(keep), if already computed (attacks cache it per data).

  Returns:
    References with inside, outside bool [M, N].
  """
  keep = np.asarray(keep, bool)
  _check(keep.shape[0], target, num_references)
  info = design(keep) if info is None else info
  if num_references is None or num_references >= keep.shape[0] - 1:
    return _all_models(keep, int(target), info)
  return _drawn(info["keep_by_example"], int(target), int(num_references), int(seed))


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
  return _mask(*_smallest(keys, np.full(num_examples, k)), num_models)


def compact(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The models of each column of mask [M, N], in index order: (idx int [W, N], valid bool
  [W, N]) with W the largest column count; idx[w, i] is a model where valid[w, i]."""
  mask = np.asarray(mask, bool)
  count = mask.sum(axis=0)
  width = int(count.max(initial=0))
  idx = np.argsort(~mask, axis=0, kind="stable")[:width]
  return idx, np.arange(width)[:, None] < count[None, :]


def _skip_sorted(r: np.ndarray, excluded: list[np.ndarray]) -> np.ndarray:
  """The r-th integer (0-based) not in `excluded` (per entry, each an int array like r, -1 for
  none): r shifted past each excluded value at or below it, smallest first."""
  ex = np.sort(np.stack(excluded), axis=0)
  for e in ex:                             # ascending, so each shift sees the earlier ones
    r = r + ((e >= 0) & (e <= r))
  return r


def sample_pairs(refs: References, target: int, examples: np.ndarray, size: int, rng
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(model, example) pairs drawn uniformly without replacement from the references of the
  given examples (IN and OUT alike): (models int [S], examples int [S]), S = min(size, pairs).

  Every other model as references: the pairs of example i are the models other than the
  target and i's dropped shadows, so a flat draw over their counts is mapped to a model by
  index arithmetic (O(S), no [M, N] scan); drawn references: their model lists.
  """
  examples = np.asarray(examples, np.intp)
  if refs.drawn:
    idx = np.concatenate([refs.models(True)[0], refs.models(False)[0]])[:, examples]
    valid = np.concatenate([refs.models(True)[1], refs.models(False)[1]])[:, examples]
    w, col = np.nonzero(valid)
    pick = rng.choice(w.size, size=min(size, w.size), replace=False)
    return idx[w[pick], col[pick]], examples[col[pick]]
  d_in, d_out = refs.dropped_in[examples], refs.dropped_out[examples]
  num_models = refs.inside.shape[0]
  count = num_models - 1 - (d_in >= 0) - (d_out >= 0)       # [E]
  ends = np.cumsum(count)
  total = int(ends[-1]) if ends.size else 0
  flat = rng.choice(total, size=min(size, total), replace=False)
  pos = np.searchsorted(ends, flat, side="right")
  rank = flat - (ends[pos] - count[pos])
  model = _skip_sorted(rank, [np.full(pos.shape, target), d_in[pos], d_out[pos]])
  return model, examples[pos]


def for_target(data, target: int) -> References:
  """`select` on data.keep with data's num_references and reference_seed; design(keep) is
  cached on data, and so are the latest target's References (attacks loop over targets,
  several attacks per target in the scaling curve), so memory stays at one target's masks."""
  info = data.cached(("design", "references"), lambda: design(data.keep))
  return data.cached_last(("references", "pool"), int(target), lambda: select(
      data.keep, target, data.num_references, data.reference_seed, info))


def population_for_target(data, target: int) -> np.ndarray:
  """`population` for data's population examples: bool [M, P] (latest target cached)."""
  num = data.population_logits.shape[1]
  return data.cached_last(("references", "population"), int(target), lambda: population(
      data.num_models, num, target, data.num_references, data.reference_seed))
