"""The vmap mapping: jax.vmap of the single-model step over the stacked state, one jitted step
of every model at a time. Steps in which no model has a real example (a curriculum's padding,
the tail of the longest model's epoch) are skipped unless the step runs empty batches."""

from typing import Callable

import jax

from mia_jax.mapping import base


def vmapped(step: Callable) -> Callable:
  """step(state, batch, key) over stacked models, taking pool indices idx [M, B]."""
  stepped = jax.vmap(step)
  return lambda state, pool_x, pool_y, idx, mask, keys: stepped(
      state, base.gathered(pool_x, pool_y, idx, mask), keys)


class Vmap(base.HostPlacement):
  """Every model's step at once, vectorised (`vmapped`)."""
  name = "vmap"

  def __init__(self):
    self._jitted = base.StepCache(lambda step: base.step_driver(vmapped(step)))

  def epoch(self, step, state, pool_x, pool_y, idx, mask, keys, active):
    """One epoch (signature in mia_jax.mapping.base)."""
    todo = None if base.runs_empty_batches(step) else base.steps_with_examples(mask, active)
    return base.run_steps(self._jitted(step), state, pool_x, pool_y, self.put(idx),
                          self.put(mask), keys, self.put(active), todo)
