"""The shared mapping: one input batch per step, the union of the M models' batches, with
per-model example masks (the loss and BatchNorm statistics are masked). The step is vmapped over
the states only, so a CNN's first layer is one convolution with M * channels outputs. Every
model computes on the whole union (about M times the work of its own batch): it pays only
where the models' batches overlap heavily. Dropout and augmentation draw per batch position, so
under this layout they draw differently: it equals the other mappings exactly only without
them."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mia_jax.mapping import base
from mia_jax.mapping.base import Batch


def union_batches(idx: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-model batches idx, mask [M, S, B] -> one shared batch per step: the union [S, U] of the
  models' batch entries (padded with its first entry) and masks [M, S, 2, U]: [:, :, 0] marks
  model m's real examples (its loss), [:, :, 1] all B entries of its batch, padding included
  (its BatchNorm statistics, as under vmap; exact when every model keeps >= B examples, so that
  no entry repeats within a model's batch)."""
  num_models, num_steps, _ = idx.shape
  unions = [np.unique(idx[:, s]) for s in range(num_steps)]
  width = max(len(u) for u in unions)
  union_idx = np.zeros((num_steps, width), np.int32)
  union_mask = np.zeros((num_models, num_steps, 2, width), np.float32)
  for s, u in enumerate(unions):
    union_idx[s, :len(u)] = u
    union_idx[s, len(u):] = u[0]
    for m in range(num_models):
      union_mask[m, s, 0, :len(u)] = np.isin(u, idx[m, s][mask[m, s] > 0])
      union_mask[m, s, 1, :len(u)] = np.isin(u, idx[m, s])
  return union_idx, union_mask


def batch_norm_mask_interceptor(mask: jax.Array) -> Callable:
  """A flax interceptor: BatchNorm statistics over the examples with mask [B] > 0 only."""
  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      x = args[0]
      m = jnp.broadcast_to(mask.reshape((-1,) + (1,) * (x.ndim - 1)) > 0, x.shape)
      return next_fun(*args, **{**kwargs, "mask": m})
    return next_fun(*args, **kwargs)
  return interceptor


def shared_batch(step: Callable) -> Callable:
  """step over stacked models on one shared batch: idx [M, U] (rows equal), mask
  [M, 2, U] (loss masks, BatchNorm masks: see union_batches)."""
  def masked(state, x, y, masks, key):
    with nn.intercept_methods(batch_norm_mask_interceptor(masks[1])):
      return step(state, Batch(x=x, y=y, mask=masks[0]), key)
  stepped = jax.vmap(masked, in_axes=(0, None, None, 0, 0))
  return lambda state, pool_x, pool_y, idx, mask, keys: stepped(
      state, pool_x[idx[0]], pool_y[idx[0]], mask, keys)


class Shared(base.HostPlacement):
  """Every model's step on the union of the models' batches."""
  name = "shared"

  def __init__(self):
    self._jitted = base.StepCache(lambda step: base.step_driver(shared_batch(step)))

  def epoch(self, step, state, pool_x, pool_y, idx, mask, keys, active):
    """One epoch (signature in mia_jax.mapping.base); every step runs."""
    union_idx, union_mask = union_batches(np.asarray(idx), np.asarray(mask))
    num_models = idx.shape[0]
    tiled = np.broadcast_to(union_idx, (num_models,) + union_idx.shape)
    return base.run_steps(self._jitted(step), state, pool_x, pool_y, self.put(tiled),
                          self.put(union_mask), keys, self.put(active))
