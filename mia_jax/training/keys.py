"""The key derivations of training: ONE place, so every mapping, chunking and resumed run
draws the same numbers.

  model_keys(seed, ids)       [M]     initialisation of model id:  fold_in(key(seed), id)
  step_keys(seed, ids, steps) [M, S]  model id's step t:  fold_in(fold_in(fold_in(key(seed), id), 1), t)

A step splits its key with fold_in for its own uses (augmentation, dropout, DP noise). Keys are
functions of (seed, model id, global step) only, never of which other models train beside.
"""

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _model_keys(seed, model_ids):
  base = jax.random.key(seed)
  return jax.vmap(lambda m: jax.random.fold_in(base, m))(model_ids)


@jax.jit
def _step_keys(seed, model_ids, steps):
  base = jax.random.key(seed)
  def model(m):
    own = jax.random.fold_in(jax.random.fold_in(base, m), 1)
    return jax.vmap(lambda t: jax.random.fold_in(own, t))(steps)
  return jax.vmap(model)(model_ids)


def model_keys(seed: int, model_ids) -> jax.Array:
  """Initialisation keys [M] of the models `model_ids` (int [M])."""
  return _model_keys(np.uint32(seed), jnp.asarray(model_ids, jnp.int32))


def step_keys(seed: int, model_ids, steps) -> jax.Array:
  """Step keys [M, S] of the models `model_ids` (int [M]) at the global steps `steps` (int [S])."""
  return _step_keys(np.uint32(seed), jnp.asarray(model_ids, jnp.int32),
                    jnp.asarray(steps, jnp.int32))
