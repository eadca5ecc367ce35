"""The pure single-model train step, initialisation and eval-mode prediction.

`train_step(state, batch, key)` -> (state, metrics) trains ONE model (a TrainState: its
apply_fn and tx travel with it) on one padded Batch; a mapping (mia_jax.mapping) runs it for
every model of a stacked state without changing it. The loss is the mean of `loss_fn` over the
real examples. A batch with no real example leaves the state untouched, so a model whose data
ran out early in an epoch is not moved by momentum or weight decay. Augmentation and the loss
are arguments, bound with functools.partial or `make_train_step`:

  step = make_train_step(label_smoothing=0.1, crop_padding=4, flip=True)
  state, metrics = jax.jit(step)(state, Batch(x, y, mask), key)
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mia_jax.data import augment
from mia_jax.training import losses
from mia_jax.training.state import Batch, TrainState, variables_of

LossFn = Callable[[jax.Array, jax.Array], jax.Array]   # (logits [B, C], labels [B]) -> [B]


def init_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
               sample_x: jax.Array, apply_fn: Callable | None = None) -> TrainState:
  """One model initialised from `key` (params and dropout); sample_x [1, ...] fixes the input
  shape. apply_fn defaults to model.apply (pass a kernels rewrite of it to use one)."""
  variables = model.init({"params": key, "dropout": key}, sample_x, train=False)
  return TrainState.create(apply_fn=model.apply if apply_fn is None else apply_fn,
                           params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def init_ensemble(model: nn.Module, tx: optax.GradientTransformation, keys: jax.Array,
                  sample_x: jax.Array, apply_fn: Callable | None = None) -> TrainState:
  """M models, one per key of keys [M] (e.g. training.keys.model_keys): every array leaf of
  the returned state stacked [M, ...]."""
  return jax.jit(jax.vmap(lambda k: init_state(model, tx, k, sample_x, apply_fn)))(keys)


def _forward(state: TrainState, params, x, dropout_key):
  """Training-mode logits [B, C] and the updated batch statistics."""
  variables = variables_of(params, state.batch_stats)
  rngs = {"dropout": dropout_key}
  if not state.batch_stats:
    return state.apply_fn(variables, x, train=True, rngs=rngs), state.batch_stats
  logits, updated = state.apply_fn(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
  return logits, updated["batch_stats"]


def train_step(state: TrainState, batch: Batch, key: jax.Array, *,
               loss_fn: LossFn = losses.softmax_cross_entropy, crop_padding: int = 0,
               flip: bool = False) -> tuple[TrainState, dict]:
  """One optimizer step of one model on batch x [B, ...], y [B], mask [B].

  key: this (model, step)'s key, split into augmentation and dropout keys. Returns the new
  state and metrics {loss_sum, correct, count} summed over the real examples.
  """
  aug_key, dropout_key = jax.random.split(key)
  x = augment.augment(aug_key, batch.x, crop_padding, flip)
  count = jnp.sum(batch.mask)

  def mean_loss(params):
    logits, batch_stats = _forward(state, params, x, dropout_key)
    per_example = loss_fn(logits, batch.y)
    return jnp.sum(per_example * batch.mask) / jnp.maximum(count, 1.0), (logits, per_example,
                                                                          batch_stats)

  grads, (logits, per_example, batch_stats) = jax.grad(mean_loss, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, batch_stats=batch_stats)
  new_state = jax.tree.map(lambda new, old: jnp.where(count > 0, new, old), new_state, state)
  correct = jnp.sum((jnp.argmax(logits, -1) == batch.y) * batch.mask)
  return new_state, {"loss_sum": jnp.sum(per_example * batch.mask), "correct": correct,
                     "count": count}


def make_train_step(*, label_smoothing: float = 0.0, crop_padding: int = 0, flip: bool = False,
                    loss_fn: LossFn | None = None) -> Callable:
  """train_step with its loss (softmax cross entropy with `label_smoothing` unless loss_fn is
  given) and augmentation bound: (state, batch, key) -> (state, metrics)."""
  if loss_fn is None:
    loss_fn = functools.partial(losses.softmax_cross_entropy, label_smoothing=label_smoothing)
  return functools.partial(train_step, loss_fn=loss_fn, crop_padding=crop_padding, flip=flip)


def predict(apply_fn: Callable | nn.Module, variables: dict, x: jax.Array,
            batch_size: int = 1024) -> jax.Array:
  """Eval-mode logits [N, C] of one model (apply_fn, or a flax module) on x [N, ...]: no
  dropout, BatchNorm running statistics; in chunks of `batch_size` inside one lax.map."""
  if isinstance(apply_fn, nn.Module):
    apply_fn = apply_fn.apply
  n = x.shape[0]
  size = min(batch_size, n)
  pad = (-n) % size
  padded = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  chunks = padded.reshape((-1, size) + x.shape[1:])
  out = jax.lax.map(lambda c: apply_fn(variables, c, train=False), chunks)
  return out.reshape((-1, out.shape[-1]))[:n]


def accuracy_fn(apply_fn: Callable) -> Callable:
  """Jitted `(params [M], batch_stats [M], x [N, ...], y [N]) -> accuracy [M]` in eval mode."""
  def accuracy(params, batch_stats, x, y):
    logits = predict(apply_fn, variables_of(params, batch_stats), x)
    return jnp.mean(jnp.argmax(logits, -1) == y)
  return jax.jit(jax.vmap(accuracy, in_axes=(0, 0, None, None)))


__all__ = ["Batch", "TrainState", "variables_of", "init_state", "init_ensemble", "train_step",
           "make_train_step", "predict", "accuracy_fn"]
