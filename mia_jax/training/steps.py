"""The pure single-model train step and eval-mode prediction.

`train_step(state, x, y, mask, key)` -> (state, metrics) trains ONE model on one padded batch;
the ensemble trainer maps it over the leading model axis (jax.vmap) without changing it.
Padded examples carry mask 0; a batch with no real example leaves the state untouched, so a
model whose data ran out early in an epoch is not moved by momentum or weight decay.
"""

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mia_jax.data import augment
from mia_jax.errors import ConfigError


@flax.struct.dataclass
class ModelState:
  """One model's trainable state (or M models' with a leading axis on every leaf)."""
  params: Any
  batch_stats: Any   # {} for models without BatchNorm
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of a train step (hashable: part of the jit cache key)."""
  label_smoothing: float = 0.0
  crop_padding: int = 0
  flip: bool = False
  dp: Any = None            # mia_jax.training.dp.DPStepConfig for DP-SGD; None for plain SGD


def init_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
               sample_x: jax.Array) -> ModelState:
  """Initialises one model from `key`; sample_x [1, ...] fixes the input shape."""
  variables = model.init({"params": key, "dropout": key}, sample_x, train=False)
  params = variables["params"]
  return ModelState(params=params, batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params))


def variables_of(params: Any, batch_stats: Any) -> dict:
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def per_example_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross entropy [B] of logits [B, C] against integer labels [B], optionally smoothed."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing > 0:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: ModelState, x: jax.Array, y: jax.Array, mask: jax.Array, key: jax.Array,
               *, model: nn.Module, tx: optax.GradientTransformation, cfg: StepConfig
               ) -> tuple[ModelState, dict]:
  """One optimizer step of one model on x [B, ...], y [B], mask [B] (1 = real example).

  The loss is the mean cross entropy over real examples. Returns the new state and summed
  metrics {loss_sum, correct, count} over the real examples.
  """
  aug_key, dropout_key = jax.random.split(key)
  x = augment.augment(aug_key, x, cfg.crop_padding, cfg.flip)
  count = jnp.sum(mask)
  has_bn = bool(state.batch_stats)
  if cfg.dp is not None:
    return _dp_train_step(state, x, y, mask, key, dropout_key, model=model, tx=tx, cfg=cfg)

  def loss_fn(params):
    variables = variables_of(params, state.batch_stats)
    if has_bn:
      logits, updated = model.apply(variables, x, train=True, rngs={"dropout": dropout_key},
                                    mutable=["batch_stats"])
      new_bs = updated["batch_stats"]
    else:
      logits = model.apply(variables, x, train=True, rngs={"dropout": dropout_key})
      new_bs = state.batch_stats
    losses = per_example_loss(logits, y, cfg.label_smoothing)
    loss = jnp.sum(losses * mask) / jnp.maximum(count, 1.0)
    return loss, (logits, losses, new_bs)

  grads, (logits, losses, new_bs) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = ModelState(params=optax.apply_updates(state.params, updates), batch_stats=new_bs,
                         opt_state=opt_state)
  active = count > 0
  new_state = jax.tree.map(lambda n, o: jnp.where(active, n, o), new_state, state)
  correct = jnp.sum((jnp.argmax(logits, -1) == y) * mask)
  return new_state, {"loss_sum": jnp.sum(losses * mask), "correct": correct, "count": count}


def _dp_train_step(state, x, y, mask, key, dropout_key, *, model, tx, cfg):
  """DP-SGD: the privatised gradient replaces the plain one; the rest of the step is the same.

  The noise key is fold_in(step key, a constant): the step key is unique per (model, step), so
  no two steps share noise. Every step updates, even on an empty batch. Train accuracy is not computed (it would cost a forward pass):
  `correct` is NaN.
  """
  from mia_jax.training import dp  # pylint: disable=g-import-not-at-top
  if state.batch_stats:
    raise ConfigError("DP-SGD cannot train a model with BatchNorm (its batch statistics mix "
                      "examples); set --config.model.norm=group")
  noise_key = jax.random.fold_in(key, 0x5EED)
  grads, losses = dp.noisy_grad(model, state.params, x, y, mask, dropout_key, noise_key, cfg.dp,
                                cfg.label_smoothing)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = ModelState(params=optax.apply_updates(state.params, updates),
                         batch_stats=state.batch_stats, opt_state=opt_state)
  # No skipping of empty batches here: under Poisson sampling a step whose batch is empty still
  # releases its noisy update (skipping it would reveal that the batch was empty).
  count = jnp.sum(mask)
  return new_state, {"loss_sum": jnp.sum(losses * mask), "correct": jnp.nan * count,
                     "count": count}


def predict(model: nn.Module, variables: dict, x: jax.Array, batch_size: int = 1024) -> jax.Array:
  """Eval-mode logits [N, C] of one model on x [N, ...] (no dropout, BatchNorm running
  statistics), computed in chunks of `batch_size` inside one jitted lax.map."""
  n = x.shape[0]
  b = min(batch_size, n)
  pad = (-n) % b
  xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  chunks = xp.reshape((-1, b) + x.shape[1:])
  out = jax.lax.map(lambda c: model.apply(variables, c, train=False), chunks)
  return out.reshape((-1, out.shape[-1]))[:n]
