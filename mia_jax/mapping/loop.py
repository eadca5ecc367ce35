"""The loop mapping: one model after another, each only on its steps with real examples.

By default a group of models' whole epoch is one jitted program (a loop over the models, each a
loop over its steps; the batch gathered inside; the state donated and updated in place),
compiled with XLA:CPU options that let the parameter and optimizer-moment updates write in
place. A step holding a primitive XLA:CPU runs slowly inside a loop (autodiff's convolution
gradients, pooling windows: `slow_in_loops`) runs instead as one jitted single-model step at a
time. With lanes > 1 the models are split into that many groups, each group's epoch in its own
thread (mia_jax.mapping.lanes). Both paths train the same models as vmap: bit-identical for the
MLPs measured, up to the last bit of a float where XLA fuses differently inside the loop.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mia_jax.mapping import base, lanes as lanes_lib, xla_cpu


def real_steps(mask: np.ndarray, active: np.ndarray, every_step: bool
               ) -> tuple[np.ndarray, np.ndarray]:
  """The steps each model runs: order int32 [M, S] (its first counts[m] entries) and counts [M].

  A step with no real example (mask * active all 0) is skipped unless `every_step` (a step
  that runs empty batches, DP-SGD's): then every step of every model.
  """
  num_models, num_steps = mask.shape[:2]
  if every_step:
    return (np.tile(np.arange(num_steps, dtype=np.int32), (num_models, 1)),
            np.full(num_models, num_steps, np.int32))
  real = (mask * active.reshape(-1, 1, 1)).sum(axis=-1) > 0            # [M, S]
  order = np.zeros((num_models, num_steps), np.int32)
  counts = real.sum(axis=1).astype(np.int32)
  for m in range(num_models):
    order[m, :counts[m]] = np.flatnonzero(real[m])
  return order, counts


def _model_steps(step: Callable) -> Callable:
  """One model's steps order[:count] in a loop: (state, pool, idx_m / mask_m [S, B], keys_m [S],
  order, count, active) -> (state, summed metrics)."""
  def run(state, pool_x, pool_y, idx_m, mask_m, keys_m, order, count, active):
    def body(t, carry):
      state, sums = carry
      s = order[t]
      batch = base.gathered(pool_x, pool_y, idx_m[s], mask_m[s] * active)
      state, metrics = step(state, batch, keys_m[s])
      return state, jax.tree.map(jnp.add, sums, metrics)
    return jax.lax.fori_loop(0, count, body, (state, base.zero_metrics()))
  return run


def epoch_program(step: Callable) -> Callable:
  """A group of models' epoch as one jitted program on their stacked state (donated): each
  model's state sliced out, its steps run in a loop, written back in place. One program per
  epoch, not one per model: XLA:CPU allocates a program's temporary buffers afresh at each
  call, and first writes to them fault pages in."""
  run = _model_steps(step)

  def epoch(state, pool_x, pool_y, idx, mask, keys, active, order, counts):
    def one_model(m, carry):
      state, sums = carry
      take = lambda a: jax.lax.dynamic_index_in_dim(a, m, 0, keepdims=False)
      model_state, metrics = run(jax.tree.map(take, state), pool_x, pool_y, take(idx),
                                 take(mask), take(keys), order[m], counts[m], active[m])
      state = jax.tree.map(lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v, m, 0),
                           state, model_state)
      return state, jax.tree.map(lambda a, v: a.at[m].set(v), sums, metrics)
    return jax.lax.fori_loop(0, counts.shape[0], one_model,
                             (state, base.zero_metrics(counts.shape[0])))
  return jax.jit(epoch, donate_argnums=(0,), compiler_options=xla_cpu.loop_options())


def _single(step: Callable) -> Callable:
  """A step of one model, on inputs with a leading model axis of size 1."""
  def one(state, pool_x, pool_y, idx, mask, keys):
    model_state, metrics = step(jax.tree.map(lambda a: a[0], state),
                                base.gathered(pool_x, pool_y, idx[0], mask[0]), keys[0])
    return jax.tree.map(lambda a: a[None], (model_state, metrics))
  return one


def _shapes_key(tree) -> tuple:
  """A hashable key of a tree's structure and its leaves' shapes and dtypes."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves)


def _slice(tree, lo: int, hi: int):
  return jax.tree.map(lambda a: a[lo:hi], tree)


@jax.jit
def _concat(*trees):
  return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


class Loop(base.HostPlacement):
  """One model after another (in `lanes` groups at once); see the module docstring."""

  def __init__(self, lanes: int = 1):
    self.lanes = lanes
    self.name = "loop" + ("" if lanes == 1 else f"+{lanes}lanes")
    self._programs = base.StepCache(epoch_program)
    self._per_step = base.StepCache(lambda step: base.step_driver(_single(step)))
    self._fits: dict = {}          # (step, input shapes) -> whether it may run in a loop
    self._compiled: set = set()    # (step, group shapes) compiled in the calling thread

  def in_one_program(self, step, state, pool_x, pool_y, idx, mask) -> bool:
    """Whether `step` on these inputs runs in the epoch program (no primitive of
    xla_cpu.slow_in_loops in its jaxpr)."""
    key = (step, _shapes_key((state, pool_x, pool_y, idx, mask)))
    if key not in self._fits:
      one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), state)
      width = idx.shape[2]
      batch = base.Batch(x=jax.ShapeDtypeStruct((width,) + pool_x.shape[1:], pool_x.dtype),
                         y=jax.ShapeDtypeStruct((width,) + pool_y.shape[1:], pool_y.dtype),
                         mask=jax.ShapeDtypeStruct((width,), mask.dtype))
      jaxpr = jax.make_jaxpr(step)(one, batch, jax.random.key(0))
      self._fits[key] = not xla_cpu.slow_in_loops(jaxpr.jaxpr)
    return self._fits[key]

  def _group_task(self, step, whole, group, pool_x, pool_y, idx, mask, keys, active, order,
                  counts) -> Callable:
    """The work of one group of models (their stacked state `group`) as a callable."""
    if whole:
      program = self._programs(step)
      return lambda: jax.block_until_ready(program(
          group, pool_x, pool_y, jnp.asarray(idx), jnp.asarray(mask), keys, jnp.asarray(active),
          jnp.asarray(order), jnp.asarray(counts)))
    per_step = self._per_step(step)

    def models_one_by_one():
      outs = [base.run_steps(per_step, _slice(group, m, m + 1), pool_x, pool_y,
                             jnp.asarray(idx[m:m + 1]), jnp.asarray(mask[m:m + 1]),
                             keys[m:m + 1], jnp.asarray(active[m:m + 1]),
                             order[m, :counts[m]])
              for m in range(counts.shape[0])]
      return jax.block_until_ready(jax.tree.map(lambda *a: jnp.concatenate(a), *outs))
    return models_one_by_one

  def epoch(self, step, state, pool_x, pool_y, idx, mask, keys, active):
    """One epoch (signature in mia_jax.mapping.base)."""
    idx, mask, active = np.asarray(idx), np.asarray(mask), np.asarray(active)
    order, counts = real_steps(mask, active, base.runs_empty_batches(step))
    whole = self.in_one_program(step, state, pool_x, pool_y, idx, mask)
    bounds = lanes_lib.lane_bounds(counts.shape[0], self.lanes)
    tasks = []
    for lo, hi in bounds:
      group = state if len(bounds) == 1 else _slice(state, lo, hi)
      tasks.append(self._group_task(step, whole, group, pool_x, pool_y, idx[lo:hi],
                                    mask[lo:hi], keys[lo:hi], active[lo:hi], order[lo:hi],
                                    counts[lo:hi]))
    del state
    # Each group size's program is compiled by one task in the calling thread, the first time.
    for g, (lo, hi) in enumerate(bounds):
      key = (step, whole, hi - lo, _shapes_key((pool_x, pool_y, idx[:1], mask[:1])))
      if len(tasks) > 1 and key not in self._compiled:
        tasks[g] = functools.partial(lambda done: done, tasks[g]())
        self._compiled.add(key)
    outs = lanes_lib.in_lanes(tasks, self.lanes)
    new_state = outs[0][0] if len(outs) == 1 else _concat(*[o[0] for o in outs])
    metrics = {k: jnp.concatenate([o[1][k] for o in outs]) for k in base.METRICS}
    return new_state, metrics
