"""Per-example losses: the one softmax cross entropy of mia_jax (training, DP clipping).

A loss here maps logits [B, C] and integer labels [B] to per-example losses [B] (no
reduction): the step masks and sums them, DP-SGD clips each example's gradient.

  loss_fn = functools.partial(softmax_cross_entropy, label_smoothing=0.1)
  losses = loss_fn(logits, labels)            # [B]
"""

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                          label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross entropy float32 [B] of logits [B, C] against integer labels [B].

  With label_smoothing s > 0 the target is (1 - s) one_hot(y) + s / C (optax.smooth_labels).
  Logits are cast to float32 first (a bfloat16 model's loss is still summed in float32).
  """
  logits = logits.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing > 0:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)
