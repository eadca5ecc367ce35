"""The sharded mapping: the vmap step with the model axis laid over a jax.sharding.Mesh of every
device (of every process under jax.distributed); no communication inside a step. The per-model
arrays are placed sharded on the model axis (`put`), the pool replicated; jit propagates the
shardings to the step's outputs. A chunk's models are padded to a multiple of the devices."""

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mia_jax.mapping import base, vmap

AXIS = "models"


class Sharded(base.HostPlacement):
  """vmap within each device, the models split over the mesh's devices."""
  name = "sharded"

  def __init__(self, devices=None):
    self.mesh = Mesh(np.array(jax.devices() if devices is None else devices), (AXIS,))
    self.model_multiple = self.mesh.size
    self._jitted = base.StepCache(lambda step: base.step_driver(vmap.vmapped(step)))

  def _place(self, tree: Any, spec: PartitionSpec) -> Any:
    sharding = NamedSharding(self.mesh, spec)
    def place(a):
      a = np.asarray(a)
      return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])
    return jax.tree.map(place, tree)

  def put(self, tree: Any, axis: int = 0) -> Any:
    """Places host arrays (or PRNG key arrays) sharded on their model axis `axis`."""
    spec = PartitionSpec(*([None] * axis + [AXIS]))
    def place(a):
      if jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
        return jax.random.wrap_key_data(self._place(np.asarray(jax.random.key_data(a)), spec))
      return self._place(a, spec)
    return jax.tree.map(place, tree)

  def replicate(self, tree: Any) -> Any:
    return self._place(tree, PartitionSpec())

  def get(self, tree: Any) -> Any:
    """Host copies, gathered from every process."""
    if jax.process_count() > 1:
      return multihost_utils.process_allgather(tree, tiled=True)
    return super().get(tree)

  def epoch(self, step, state, pool_x, pool_y, idx, mask, keys, active):
    """One epoch (signature in mia_jax.mapping.base); every step runs."""
    return base.run_steps(self._jitted(step), state, pool_x, pool_y, self.put(idx),
                          self.put(mask), self.put(keys), self.put(active))
