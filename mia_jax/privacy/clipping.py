"""Per-example clipped gradient sums for DP-SGD, two ways behind one function.

- method="reference": jax_privacy's `clipped_grad` (a vmap of per-example gradients, clipped with
  `clip_pytree`, summed; optionally microbatched with optax to bound memory). Used as is.
- method="fast": ghost clipping (mia_jax.privacy.ghost, written by hand: jax_privacy 2.0 has no
  ghost clipping). Same result up to float rounding, at about the cost of one plain step.

Both return sum_i mask_i * clip_C(g_i), where g_i is the gradient of example i's loss and
clip_C(g) = g * min(1, C / ||g||). Privacy guarantee: with mask in {0, 1}, adding or removing
one example changes the sum by at most C in L2 norm (sensitivity C under add/remove-one, 2C
under replace-one); padded examples (mask 0) contribute exactly zero.

The per-example loss is softmax cross-entropy with optional label smoothing. Models are
flax.linen modules used through `apply_fn(params, x, rng) -> logits [B, K]` (see `apply_fn_for`).
Both methods are pure functions of their array arguments: jit them, and vmap them over a leading
model axis of params (and keys).
"""

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax_privacy import clipping as jp_clipping

from mia_jax.errors import ConfigError
from mia_jax.privacy import ghost

METHODS = ("reference", "fast")
LOSSES = ("xent",)


class ClipAux(NamedTuple):
  """Per-example side outputs (not privatised: do not release them).

  losses: [B] per-example loss before clipping (padding included).
  grad_norms: [B] per-example gradient L2 norm before clipping.
  """
  losses: jax.Array
  grad_norms: jax.Array


def apply_fn_for(model: nn.Module, train: bool = True) -> Callable:
  """Returns apply_fn(params, x, rng) -> logits for a flax.linen model; rng feeds dropout."""

  def apply_fn(params, x, rng):
    rngs = {} if rng is None else {"dropout": rng}
    return model.apply({"params": params}, x, train=train, rngs=rngs)

  return apply_fn


def per_example_xent(logits, labels, label_smoothing: float = 0.0):
  """Softmax cross-entropy per example. logits [B, K], integer labels [B] -> [B] float32."""
  logits = logits.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def check_dp_compatible(variables: Any) -> None:
  """Raises ConfigError if the model variables hold BatchNorm statistics.

  Accepts the full variables dict ({"params": ..., "batch_stats": ...}) or a params pytree.
  """
  if isinstance(variables, dict) and "batch_stats" in variables:
    ghost.refuse_batch_norm(nn.BatchNorm())
  for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]:
    if any("BatchNorm" in str(getattr(k, "key", "")) for k in path):
      ghost.refuse_batch_norm(nn.BatchNorm())


def _refusing_batch_norm(next_fun, args, kwargs, context):
  ghost.refuse_batch_norm(context.module)
  return next_fun(*args, **kwargs)


def _validate(method, loss, clip_norm, microbatch_size, batch_size):
  if method not in METHODS:
    raise ConfigError(f"unknown clipping method {method!r}; choose one of {list(METHODS)} "
                      "with --config.dp.clipping=NAME")
  if loss not in LOSSES:
    raise ConfigError(f"unknown DP loss {loss!r}; choose one of {list(LOSSES)}")
  if isinstance(clip_norm, (int, float)) and not clip_norm > 0:
    raise ConfigError(f"clip_norm must be > 0, got {clip_norm}; set --config.dp.clip_norm")
  if microbatch_size is not None and (microbatch_size <= 0 or batch_size % microbatch_size):
    raise ConfigError(f"microbatch_size {microbatch_size} must be positive and divide the batch "
                      f"size {batch_size}; set --config.dp.microbatch_size")


def clipped_grad_sum(
    apply_fn: Callable,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    *,
    clip_norm: float,
    method: str = "fast",
    microbatch_size: int | None = None,
    loss: str = "xent",
    label_smoothing: float = 0.0,
    rng: jax.Array | None = None,
    conv_norm: str = "auto",
) -> tuple[Any, ClipAux]:
  """Sum over the batch of mask_i * clip_C(grad of loss_i). Pure; jit- and vmap-safe.

  Args:
    apply_fn: (params, x, rng) -> logits [B, K]; flax.linen modules inside (apply_fn_for).
    params: parameter pytree (the "params" collection; BatchNorm is refused).
    x: inputs [B, ...]. y: integer labels [B].
    mask: float [B]: 1 for a real example, 0 for padding (Poisson batches are padded);
      read as mask > 0 by both methods (a binary mask, not a weight).
    clip_norm: C, the per-example L2 bound (a Python float or a traced scalar).
    method: "fast" (ghost clipping) or "reference" (jax_privacy.clipping.clipped_grad).
    microbatch_size: reference only: examples vmapped at a time (must divide B); None = all.
    loss: "xent" (softmax cross-entropy).
    label_smoothing: in [0, 1).
    rng: PRNG key for dropout, or None. "reference" gives each example its own split key;
      "fast" uses it for the whole batch (different masks, both valid for DP).
    conv_norm: fast only: "auto" | "patches" | "ghost" | "vmap" (see mia_jax.privacy.ghost).

  Returns:
    (clipped_sum shaped like params, ClipAux(losses [B], grad_norms [B])).
    Sensitivity of clipped_sum: C (add/remove one example).
  """
  _validate(method, loss, clip_norm, microbatch_size, x.shape[0])
  check_dp_compatible(params)
  loss_fn = lambda logits, labels: per_example_xent(logits, labels, label_smoothing)
  if method == "fast":
    total, losses, norms = ghost.ghost_clipped_grad_sum(
        loss_fn, apply_fn, params, x, y, mask, rng, clip_norm=clip_norm, conv_norm=conv_norm)
    return total, ClipAux(losses, norms)
  return _reference(apply_fn, loss_fn, params, x, y, mask, rng, clip_norm, microbatch_size)


def _reference(apply_fn, loss_fn, params, x, y, mask, rng, clip_norm, microbatch_size):
  """jax_privacy.clipping.clipped_grad over examples, padding zeroed via is_padding_example."""

  def example_loss(p, x1, y1, key=None):  # x1 [1, ...], y1 [1]
    with nn.intercept_methods(_refusing_batch_norm):
      logits = apply_fn(p, x1, key)
    return jnp.sum(loss_fn(logits, y1))

  grad_fn = jp_clipping.clipped_grad(
      example_loss, argnums=0, l2_clip_norm=clip_norm, batch_argnums=(1, 2),
      keep_batch_dim=True, return_values=True, return_grad_norms=True,
      microbatch_size=microbatch_size, prng_argnum=None if rng is None else 3)
  args = (params, x, y) if rng is None else (params, x, y, rng)
  total, aux = grad_fn(*args, is_padding_example=mask <= 0)
  return total, ClipAux(aux.values, aux.grad_norms)
