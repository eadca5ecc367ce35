"""Training as primitives: one model's state and step, the ensemble trainer, the config layer.

  state       TrainState (params, batch_stats, opt_state, step; apply_fn and tx static), Batch
  losses      per-example losses: softmax_cross_entropy
  steps       train_step(state, batch, key), make_train_step, init_state / init_ensemble, predict
  keys        the key derivations: model_keys, step_keys
  samplers    the sampler protocol: UniformSampler, CurriculumSampler
  ensemble    train_ensemble(step, init_state, sampler, mapping, ...), EarlyStopping,
              CheckpointPolicy
  from_config train_from_config(model, cfg, pool_x, pool_y, keep, ...): the config layer
  optim, curriculum, checkpoint, progress, dp, launch

Train an ensemble of your own flax module with your own optax chain:

  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  init = training.init_ensemble(module, tx, training.keys.model_keys(0, range(4)), x[:1])
  result = training.train_ensemble(training.train_step, init,
                                   training.UniformSampler(keep, 32, seed=0), mapping.Vmap(),
                                   pool_x=x, pool_y=y, epochs=3, seed=0)
"""

from mia_jax.training import (checkpoint, curriculum, ensemble, from_config, keys, losses, optim,
                              progress, samplers, state, steps)
from mia_jax.training.ensemble import (CheckpointPolicy, EarlyStopping, TrainResult,
                                       train_ensemble)
from mia_jax.training.from_config import train_from_config
from mia_jax.training.losses import softmax_cross_entropy
from mia_jax.training.samplers import CurriculumSampler, Sampler, UniformSampler
from mia_jax.training.state import Batch, TrainState
from mia_jax.training.steps import (init_ensemble, init_state, make_train_step, predict,
                                    train_step)

__all__ = ["checkpoint", "curriculum", "ensemble", "from_config", "keys", "losses", "optim",
           "progress", "samplers", "state", "steps", "CheckpointPolicy", "EarlyStopping",
           "TrainResult", "train_ensemble", "train_from_config", "softmax_cross_entropy",
           "CurriculumSampler", "Sampler", "UniformSampler", "Batch", "TrainState",
           "init_ensemble", "init_state", "make_train_step", "predict", "train_step"]
