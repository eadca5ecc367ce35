"""How the model axis of an ensemble is mapped: each mapping runs ONE model's
`step(state, batch, key)` for every model of the stacked state [M, ...], the same batches with
the same keys, so every mapping trains the same models.

  vmap      jax.vmap of the step, one jitted step of all models at a time  (vmap.Vmap)
  loop      one model after another, its epoch one jitted program          (loop.Loop)
  shared    one shared batch per step, the union of the models' batches    (shared.Shared)
  sharded   vmap with the model axis over the devices of every process     (sharded.Sharded)
  lanes     the loop's groups of models run at once, in threads            (lanes)

The protocol (`epoch`, `put`, `replicate`, `get`, `model_multiple`) is in mapping.base;
`resolve` picks a mapping and the CPU kernels' convolution rewrite by backend and model.

  from mia_jax import mapping
  strategy = mapping.resolve("auto", module, x[:1])     # e.g. loop+forward on a CPU
  state, metrics = strategy.mapping.epoch(step, state, pool_x, pool_y, idx, mask, keys, active)
"""

from mia_jax.mapping import auto, base, lanes, loop, shared, sharded, vmap, xla_cpu
from mia_jax.mapping.auto import MAPPINGS, STRATEGIES, Strategy, make_mapping, resolve
from mia_jax.mapping.loop import Loop
from mia_jax.mapping.shared import Shared
from mia_jax.mapping.sharded import Sharded
from mia_jax.mapping.vmap import Vmap

__all__ = ["auto", "base", "lanes", "loop", "shared", "sharded", "vmap", "xla_cpu", "MAPPINGS",
           "STRATEGIES", "Strategy", "make_mapping", "resolve", "Loop", "Shared", "Sharded",
           "Vmap"]
