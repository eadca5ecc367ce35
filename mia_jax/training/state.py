"""The training state of one model (or of M stacked models) and the batch a step trains on.

`TrainState` carries, beside the arrays, the two functions that give them meaning: `apply_fn`
(a flax `module.apply`, possibly rewritten by mia_jax.kernels) and `tx` (an optax
transformation). Both are static fields (pytree_node=False): they are part of the pytree's
structure, so jit and vmap see only the arrays, and an ensemble's state is the same type with
every array leaf stacked on a leading model axis [M, ...].

  state = TrainState.create(apply_fn=module.apply, params=variables["params"], tx=optax.adam(1e-3))
  batch = Batch(x=x, y=y, mask=np.ones(len(y), np.float32))
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from mia_jax.mapping.base import Batch   # defined beside the mappings, which build batches

__all__ = ["Batch", "TrainState", "variables_of"]


@flax.struct.dataclass
class TrainState:
  """One model's training state; an ensemble's has every array leaf stacked [M, ...].

  step: int32 [] (stacked: [M]), the number of optimizer updates applied.
  params, batch_stats ({} without BatchNorm), opt_state: pytrees of arrays.
  apply_fn: static; called as apply_fn(variables, x, train=..., rngs=..., mutable=...).
  tx: static; an optax GradientTransformation (or GradientTransformationExtraArgs).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, apply_fn: Callable, params: Any, tx: optax.GradientTransformation,
             batch_stats: Any = None) -> "TrainState":
    """A state at step 0 with tx's initial optimizer state for `params`."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats={} if batch_stats is None else batch_stats,
               opt_state=tx.init(params), apply_fn=apply_fn, tx=tx)

  @property
  def variables(self) -> dict:
    """The flax variables {'params', 'batch_stats' (only when non-empty)} apply_fn takes."""
    return variables_of(self.params, self.batch_stats)

  def apply_gradients(self, grads: Any, *, batch_stats: Any = None,
                      **extra_args) -> "TrainState":
    """The state after one update of tx with `grads` (shaped like params); `extra_args` (e.g.
    a DP privatiser's noise_key) go to tx.update, which must then accept them."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params, **extra_args)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)


def variables_of(params: Any, batch_stats: Any) -> dict:
  """flax variables from params and batch_stats (left out when empty: models without BN)."""
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
