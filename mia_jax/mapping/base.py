"""What every mapping of the model axis shares: the epoch's inputs, the metrics, the placement
of arrays, and the driver that runs one jitted step of the stacked models at a time.

A mapping's `epoch(step, state, pool_x, pool_y, idx, mask, keys, active)` runs one epoch of
`step(state, batch, key) -> (state, metrics)` (ONE model's step, mia_jax.training.steps) for
every model of the stacked state [M, ...]:
  pool_x [N, ...], pool_y [N]     the pool, placed once (`replicate`)
  idx int32 [M, S, B]             model m's batch s as pool indices
  mask float32 [M, S, B]          1 real example, 0 padding
  keys key [M, S]                 the per-(model, step) keys the trainer derived
  active float32 [M]              0 for a model that stopped early (its batches masked out)
and returns the state and metrics {loss_sum, correct, count} float32 [M] summed over the
epoch. A step that leaves the state untouched on a batch without any real example may be
skipped; a step with `runs_empty_batches = True` (DP-SGD) never is.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Batch(NamedTuple):
  """One padded batch: x [B, ...], y int32 [B], mask float32 [B] (1 real example, 0 padding).
  (Re-exported as mia_jax.training.state.Batch.)"""
  x: jax.Array
  y: jax.Array
  mask: jax.Array


METRICS = ("loss_sum", "correct", "count")


def zero_metrics(num_models: int | None = None) -> dict:
  """{loss_sum, correct, count} zeros [M] (or scalars when num_models is None)."""
  shape = () if num_models is None else (num_models,)
  return {k: jnp.zeros(shape, jnp.float32) for k in METRICS}


def runs_empty_batches(step: Callable) -> bool:
  """Whether `step` must run on batches without a real example (the step's own flag)."""
  return bool(getattr(step, "runs_empty_batches", False))


def steps_with_examples(mask: np.ndarray, active: np.ndarray) -> np.ndarray:
  """The steps [S'] in which any active model has a real example (mask [M, S, B])."""
  real = (np.asarray(mask) * np.asarray(active).reshape(-1, 1, 1)).sum(axis=(0, 2))
  return np.flatnonzero(real > 0)


def gathered(pool_x, pool_y, batch_idx, batch_mask) -> Batch:
  """The batch of pool indices batch_idx [..., B] with mask [..., B]."""
  return Batch(x=pool_x[batch_idx], y=pool_y[batch_idx], mask=batch_mask)


class HostPlacement:
  """Arrays on the default device; `get` returns numpy copies."""
  model_multiple = 1

  def put(self, tree: Any, axis: int = 0) -> Any:     # pylint: disable=unused-argument
    """Places host arrays whose `axis` is the model axis."""
    return jax.tree.map(jnp.asarray, tree)

  def replicate(self, tree: Any) -> Any:
    """Places arrays every model reads (the pool, the validation split)."""
    return jax.tree.map(jnp.asarray, tree)

  def get(self, tree: Any) -> Any:
    """Host (numpy) copies of device arrays."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


def step_driver(mapped_step: Callable) -> Callable:
  """mapped_step(state, pool_x, pool_y, idx [.., B], mask [.., B], keys [M]) -> (state,
  metrics [M]) -> one jitted step s of an epoch adding its metrics to the running sums; the
  state and the sums are donated."""
  def one(state, sums, pool_x, pool_y, idx, mask, keys, s, active):
    step_mask = mask[:, s] * active.reshape((-1,) + (1,) * (mask.ndim - 2))
    state, metrics = mapped_step(state, pool_x, pool_y, idx[:, s], step_mask, keys[:, s])
    return state, jax.tree.map(jnp.add, sums, metrics)
  return jax.jit(one, donate_argnums=(0, 1))


def run_steps(jitted: Callable, state, pool_x, pool_y, idx, mask, keys, active,
              steps_to_run=None):
  """Runs the epoch's steps `steps_to_run` (default: all S) through `step_driver`'s jitted
  step; a step left out must be one that would leave every state untouched."""
  sums = zero_metrics(mask.shape[0])
  for s in (range(idx.shape[1]) if steps_to_run is None else steps_to_run):
    state, sums = jitted(state, sums, pool_x, pool_y, idx, mask, keys, np.int32(s), active)
  return state, sums


class StepCache:
  """The jitted functions a mapping built for each step it was given (keyed by the step)."""

  def __init__(self, build: Callable):
    self._build, self._built = build, {}

  def __call__(self, step: Callable) -> Any:
    if step not in self._built:
      self._built[step] = self._build(step)
    return self._built[step]
