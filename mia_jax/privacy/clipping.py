"""Per-example clipping for DP-SGD: a transform of any per-example loss, in jax_privacy's shape.

`clipped_grad(loss_fn, clip_norm=C, method=...)` returns a `ClippedGrad`: a callable
`(apply_fn, params, batch, rng) -> (clipped_sum, ClipAux)` that carries its L2 sensitivity, as
jax_privacy's `clipping.clipped_grad` returns a `BoundedSensitivityCallable`. The sum is
sum_i mask_i * clip_C(g_i), where g_i is the gradient of example i's loss and
clip_C(g) = g * min(1, C / ||g||). Privacy guarantee: with mask in {0, 1}, adding or removing
one example changes the sum by at most C in L2 norm (sensitivity C under add/remove-one and
zero-out, 2C under replace-one); padded examples (mask 0) contribute exactly zero.

Two methods behind one transform:
- "reference": jax_privacy's `clipped_grad` (a vmap of per-example gradients, clipped with
  `clip_pytree`, summed; optionally microbatched to bound memory). Used as is.
- "fast": ghost clipping (mia_jax.privacy.ghost, written by hand: jax_privacy 2.0 has none).
  Same result up to float rounding, at about the cost of one plain step
  (experiments/results/bench_dp.md).

Where mia_jax departs from jax_privacy's `clipped_grad(fun, argnums, batch_argnums, ...)`, and
why: the transform takes the per-example loss `loss_fn(logits [B, C], labels [B]) -> [B]` and
the model's `apply_fn(params, x [B, ...], rng) -> logits [B, C]` separately, not one scalar loss
of (params, batch): ghost clipping must see the model's layers (through a flax method
interceptor) and the per-example losses, which a closed-over scalar loss hides. The batch is
padded to a static size with a mask (x [B, ...], y [B], mask [B]; the trainer's Poisson batches),
where jax_privacy passes `is_padding_example`. Both methods are pure functions of their array
arguments: jit them, and vmap them over a leading model axis of params (and keys).
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import dp_accounting
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax_privacy import clipping as jp_clipping

from mia_jax.errors import ConfigError
from mia_jax.privacy import ghost

METHODS = ("reference", "fast")
LossFn = Callable[[jax.Array, jax.Array], jax.Array]   # (logits [B, C], labels [B]) -> [B]
ApplyFn = Callable[[Any, jax.Array, Any], jax.Array]   # (params, x [B, ...], rng) -> [B, C]


class ClipAux(NamedTuple):
  """Per-example side outputs (not privatised: do not release them).

  losses: [B] per-example loss before clipping (padding included).
  grad_norms: [B] per-example gradient L2 norm before clipping.
  """
  losses: jax.Array
  grad_norms: jax.Array


@dataclasses.dataclass(frozen=True)
class ClippedGrad:
  """`(apply_fn, params, batch, rng=None) -> (clipped_sum like params, ClipAux)` with its bound.

  batch: (x [B, ...], y [B], mask [B]) (a tuple or mia_jax.training.state.Batch); mask is read
  as mask > 0 (a binary mask, not a weight). rng: a PRNG key for dropout, or None.
  l2_sensitivity: the clipped sum's L2 sensitivity under add/remove-one adjacency (= clip_norm;
  infinite when clip_norm is, e.g. dp.fault='no_clipping').
  """
  fun: Callable[..., tuple[Any, ClipAux]]
  l2_sensitivity: float   # or a traced scalar, when built under jit with a traced clip_norm
  method: str

  def __call__(self, apply_fn: ApplyFn, params: Any, batch, rng: jax.Array | None = None):
    return self.fun(apply_fn, params, batch, rng)

  def sensitivity(self, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE) -> float:
    """The L2 sensitivity under `relation` (jax_privacy's BoundedSensitivityCallable's rule)."""
    if relation == dp_accounting.NeighboringRelation.REPLACE_ONE:
      return 2 * self.l2_sensitivity
    return self.l2_sensitivity


def check_dp_compatible(variables: Any) -> None:
  """Raises ConfigError if the model variables hold BatchNorm statistics.

  Accepts the full variables dict ({"params": ..., "batch_stats": ...}) or a params pytree.
  """
  if isinstance(variables, dict) and "batch_stats" in variables:
    ghost.refuse_batch_norm(nn.BatchNorm())
  for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]:
    if any("BatchNorm" in str(getattr(k, "key", "")) for k in path):
      ghost.refuse_batch_norm(nn.BatchNorm())


def clipped_grad(
    loss_fn: LossFn,
    *,
    clip_norm: float,
    method: str = "fast",
    microbatch_size: int | None = None,
    conv_norm: str = "auto",
) -> ClippedGrad:
  """The clipped-gradient-sum transform of a per-example loss.

  Args:
    loss_fn: (logits [B, C], labels [B]) -> per-example losses [B]; loss i may depend on row i
      only (e.g. mia_jax.training.losses' cross entropy, a squared error).
    clip_norm: C > 0, the per-example L2 bound: a Python float (math.inf clips nothing), or a
      traced scalar when the transform is built inside a jitted function.
    method: "fast" (ghost clipping) or "reference" (jax_privacy.clipping.clipped_grad).
    microbatch_size: reference only: examples vmapped at a time (must divide B); None = all.
    conv_norm: fast only: "auto" | "patches" | "ghost" | "vmap" (see mia_jax.privacy.ghost).

  Returns:
    A ClippedGrad; calling it with (apply_fn, params, (x [B, ...], y [B], mask [B]), rng)
    returns (sum_i mask_i clip_C(g_i) shaped like params, ClipAux(losses [B], grad_norms [B])).
    With rng, "reference" gives each example its own split key and "fast" uses it for the
    whole batch (different dropout masks, both valid for DP).

  Example (a squared error on a flax Dense layer):
    >>> model = nn.Dense(2)
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    >>> apply_fn = lambda p, x, rng: model.apply({"params": p}, x)
    >>> squared_error = lambda z, y: jnp.sum((z - jax.nn.one_hot(y, 2)) ** 2, axis=-1)
    >>> grad_fn = clipped_grad(squared_error, clip_norm=1.0)
    >>> batch = (jnp.ones((4, 3)), jnp.zeros(4, jnp.int32), jnp.array([1.0, 1.0, 1.0, 0.0]))
    >>> total, aux = grad_fn(apply_fn, params, batch)
    >>> total["kernel"].shape, aux.grad_norms.shape, grad_fn.l2_sensitivity
    ((3, 2), (4,), 1.0)
  """
  if method not in METHODS:
    raise ConfigError(f"unknown clipping method {method!r}; choose one of {list(METHODS)} "
                      "with --config.dp.clipping=NAME")
  if isinstance(clip_norm, (int, float)) and not clip_norm > 0:
    raise ConfigError(f"clip_norm must be > 0, got {clip_norm}; set --config.dp.clip_norm")
  if conv_norm not in ghost.CONV_NORMS:
    raise ConfigError(f"unknown conv_norm {conv_norm!r}; choose one of {list(ghost.CONV_NORMS)}")

  def fun(apply_fn, params, batch, rng):
    x, y, mask = batch
    if microbatch_size is not None and (microbatch_size <= 0 or x.shape[0] % microbatch_size):
      raise ConfigError(f"microbatch_size {microbatch_size} must be positive and divide the "
                        f"batch size {x.shape[0]}; set --config.dp.microbatch_size")
    check_dp_compatible(params)
    if method == "fast":
      total, losses, norms = ghost.ghost_clipped_grad_sum(
          loss_fn, apply_fn, params, x, y, mask, rng, clip_norm=clip_norm, conv_norm=conv_norm)
      return total, ClipAux(losses, norms)
    return _reference(apply_fn, loss_fn, params, x, y, mask, rng, clip_norm, microbatch_size)

  return ClippedGrad(fun, clip_norm, method)


def _refusing_batch_norm(next_fun, args, kwargs, context):
  ghost.refuse_batch_norm(context.module)
  return next_fun(*args, **kwargs)


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

