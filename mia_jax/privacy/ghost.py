"""Fast per-example clipping: ghost norms from captured activations and output gradients.

Written by hand because jax_privacy 2.0 has no ghost clipping: its `clipped_grad` is a vmap of
per-example gradients, which materialises B copies of every weight gradient (memory bound; its
cost against this module's: experiments/results/bench_dp.md).

How it works, for a flax.linen model used through `apply_fn(params, x, rng)`:

1. A method interceptor (`nn.intercept_methods`, no edit to the model files) wraps `__call__` of
   every module that owns parameters directly (a "site": Dense, Conv, GroupNorm, LayerNorm, ...).
   It records the site's input a [B, ...] and adds a zero perturbation e to its output y; the
   gradient of sum_i loss_i with respect to e is the per-example output gradient
   delta_i = dloss_i / dy_i (examples do not interact: BatchNorm is refused).
2. One forward and one backward pass, differentiating with respect to the perturbations only (the
   parameters are constants), so no weight gradient is formed yet.
3. Per-example squared gradient norms per site:
   - Dense on [B, d]: ||a_i||^2 ||delta_i||^2 (+ ||delta_i||^2 for the bias);
     on [B, T, d]: the Gram form sum_ts (a_t.a_s)(delta_t.delta_s) when T^2 <= d_in d_out, else
     the per-example gradient directly.
   - Conv: im2col patches P_i [T, k*k*C_in]; either the per-example gradient P_i^T delta_i
     ("patches", cheapest when T^2 > k*k*C_in*C_out, e.g. every layer of a 28x28 CNN) or the
     ghost Gram form ("ghost"); conv_norm="vmap" is a batched conv (vmap of the layer's VJP).
   - GroupNorm: the per-example gradients of scale and bias, sum over positions of
     delta_i * xhat_i and of delta_i, with xhat_i normalised again from a_i.
   - Any other site (LayerNorm, unusual Dense/Conv/GroupNorm configurations): the per-example
     gradient of that layer alone, vmap(vjp(layer)). Its parameters are few, but its forward
     and backward run again (why GroupNorm has its own rule above).
4. w_i = mask_i * min(1, C / ||g_i||), and per site the clipped sum sum_i w_i g_i as
   a^T (w * delta) -- the weight-gradient matmul of an ordinary backward pass, done once.
   Total cost: about one forward plus one backward pass.

Privacy guarantee: the returned sum is sum_i w_i g_i with ||w_i g_i|| <= C, exactly the clipped
sum of per-example gradients (up to float rounding), so its L2 sensitivity to adding or removing
one example is C. An example whose gradient norm is not finite contributes zero.

Limits: a module whose parameters are used twice in one forward (weight sharing), or a module
that owns parameters and also has sub-modules with parameters, is refused with a ConfigError
naming method="reference".
"""

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mia_jax import kernels
from mia_jax.errors import ConfigError

_HIGHEST = jax.lax.Precision.HIGHEST
CONV_NORMS = ("auto", "patches", "ghost", "vmap")


def _sequence_sq_norms(a3, d3, bias: bool, gram: bool):
  """Per-example squared gradient norms [B] of a layer applied at T positions: inputs a3
  [B, T, I], output gradients d3 [B, T, O]. gram: from the T x T Gram matrices (ghost norm,
  cheaper when T^2 <= I O); else from the per-example gradient g [B, I, O], also returned."""
  if gram:
    ga = jnp.einsum("bti,bsi->bts", a3, a3, precision=_HIGHEST)
    gd = jnp.einsum("bto,bso->bts", d3, d3, precision=_HIGHEST)
    sq, g = jnp.sum(ga * gd, axis=(1, 2)), None
  else:
    g = jnp.einsum("bti,bto->bio", a3, d3, precision=_HIGHEST)
    sq = jnp.sum(g * g, axis=(1, 2))
  if bias:
    db = jnp.sum(d3, axis=1)
    sq = sq + jnp.sum(db * db, axis=1)
  return sq, g


def _subtree(params: Mapping[str, Any], path: tuple[str, ...]):
  node = params
  for name in path:
    if not isinstance(node, Mapping) or name not in node:
      return None
    node = node[name]
  return node


def _is_leaf_site(node) -> bool:
  return isinstance(node, Mapping) and bool(node) and not any(
      isinstance(v, Mapping) for v in node.values())


def refuse_batch_norm(module: nn.Module) -> None:
  if isinstance(module, nn.BatchNorm):
    raise ConfigError(
        "DP-SGD cannot train a model with BatchNorm (it mixes examples, so per-example "
        "gradients are undefined); set --config.model.norm=group")


@dataclasses.dataclass(frozen=True)
class _Site:
  """A parameter-owning module seen in the forward pass (its params are params[path])."""
  path: tuple[str, ...]
  module: nn.Module  # an unbound clone, for the generic per-example VJP
  kind: str  # "dense" | "conv" | "generic"
  out: jax.ShapeDtypeStruct  # the module's output
  conv_norm: str


def _site_kind(module: nn.Module, x, conv_norm: str) -> str:
  """'dense', 'conv', 'group_norm' or 'generic' (per-example VJP of the layer alone)."""
  if type(module) is nn.Dense and module.dot_general is None and module.dot_general_cls is None:
    return "dense"
  if (type(module) is nn.GroupNorm and module.reduction_axes is None
      and module.axis_name is None and x.ndim >= 2):
    return "group_norm"
  if type(module) is nn.Conv and conv_norm != "vmap":
    ks = (module.kernel_size,) if isinstance(module.kernel_size, int) else module.kernel_size
    dil = module.input_dilation
    plain = (module.shared_weights and module.mask is None and module.feature_group_count == 1
             and module.conv_general_dilated is None and module.conv_general_dilated_cls is None
             and (dil is None or dil == 1 or all(d == 1 for d in dil))
             and x.ndim == len(ks) + 2
             and module.padding not in ("CIRCULAR", "REFLECT", "CAUSAL"))
    if plain:
      return "conv"
  return "generic"


def _make_interceptor(params, sites: dict, inputs: dict, perts, conv_norm: str):
  """Records site inputs into `inputs` and adds perts[key] to site outputs (if perts given)."""

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    refuse_batch_norm(module)
    path = tuple(module.path)
    own = _subtree(params, path)
    if own is None or not isinstance(own, Mapping):
      return next_fun(*args, **kwargs)
    if not _is_leaf_site(own):
      if any(not isinstance(v, Mapping) for v in own.values()):
        raise ConfigError(
            f"fast clipping: module {'/'.join(path) or '<root>'} owns parameters and also has "
            "sub-modules with parameters; use method='reference'")
      return next_fun(*args, **kwargs)
    key = "/".join(path)
    if context.method_name != "__call__" or len(args) != 1 or kwargs:
      raise ConfigError(
          f"fast clipping: {type(module).__name__} {key!r} is called as "
          f"{context.method_name}(<{len(args)} args>, {sorted(kwargs)}); only __call__(x) is "
          "supported; use method='reference'")
    if key in inputs:
      raise ConfigError(
          f"fast clipping: parameters of {key!r} are used twice in one forward pass (weight "
          "sharing); use method='reference'")
    x = args[0]
    y = next_fun(x)
    inputs[key] = x
    if key not in sites:
      sites[key] = _Site(path, module.clone(parent=None), _site_kind(module, x, conv_norm),
                         jax.ShapeDtypeStruct(y.shape, y.dtype), conv_norm)
    if perts is not None:
      y = y + perts[key].astype(y.dtype)
    return y

  return interceptor


def _flat3(a, b):
  """[B, ..., d] -> [B, T, d]."""
  return a.reshape(b, -1, a.shape[-1])


def _rows(v, keep):
  """Zeroes the examples (leading axis) where `keep` is False; NaN-safe."""
  return jnp.where(keep.reshape((-1,) + (1,) * (v.ndim - 1)), v, 0)


# Each site kind has a norm part, (site, a, d, own) -> (sq [B], cache), and a sum part,
# (site, a, d, own, w, keep, cache) -> grads for that module's params. `keep` [B] is False for
# examples whose gradient norm is not finite; their rows are zeroed before any sum.


def _dense_norms(site, a, d, own):
  b = a.shape[0]
  if a.ndim == 2:
    d2 = jnp.sum(d * d, axis=1)
    sq = jnp.sum(a * a, axis=1) * d2
    return (sq + d2 if "bias" in own else sq), None
  a3, d3 = _flat3(a, b), _flat3(d, b)
  t, din, dout = a3.shape[1], a3.shape[2], d3.shape[2]
  sq, _ = _sequence_sq_norms(a3, d3, "bias" in own, gram=t * t <= din * dout)
  return sq, None


def _dense_sums(site, a, d, own, w, keep, cache):
  del site, cache
  a2 = _rows(a, keep).reshape(-1, a.shape[-1])  # [B*T, d_in]
  wd = (_rows(d, keep) * w.reshape((-1,) + (1,) * (d.ndim - 1))).reshape(-1, d.shape[-1])
  grads = {"kernel": jnp.dot(a2.T, wd, precision=_HIGHEST)}
  if "bias" in own:
    grads["bias"] = jnp.sum(wd, axis=0)
  return grads


def _conv_patches(module: nn.Conv, x):
  """im2col patches [B, T, prod(kernel) * C_in] (window major, C_in minor: the order of the
  flax kernel's leading axes, so the kernel gradient is a reshape of patches^T deltas).

  A 2-D convolution with stride 1, no dilation and SAME or VALID padding takes its patches as
  shifted slices (mia_jax.kernels.im2col_patches); others through
  lax.conv_general_dilated_patches (C_in major, reordered), a grouped convolution with an
  identity kernel, which XLA:CPU runs slowly inside a loop.
  """
  ks = (module.kernel_size,) if isinstance(module.kernel_size, int) else tuple(module.kernel_size)
  nd = len(ks)
  bc = lambda v: (1,) * nd if v is None else ((v,) * nd if isinstance(v, int) else tuple(v))
  if (nd == 2 and x.ndim == 4 and module.padding in ("SAME", "VALID")
      and bc(module.strides) == (1, 1) and bc(module.kernel_dilation) == (1, 1)):
    p = kernels.im2col_patches(x, ks[0], ks[1], module.padding)
    return p.reshape(p.shape[0], -1, p.shape[-1]), ks
  padding = nn.linear.canonicalize_padding(module.padding, nd)
  spatial = tuple(range(1, nd + 1))
  dn = jax.lax.ConvDimensionNumbers(lhs_spec=(0, nd + 1) + spatial,
                                    rhs_spec=(nd + 1, nd) + tuple(range(nd)),
                                    out_spec=(0, nd + 1) + spatial)
  p = jax.lax.conv_general_dilated_patches(
      x, ks, bc(module.strides), padding, rhs_dilation=bc(module.kernel_dilation),
      dimension_numbers=dn, precision=_HIGHEST)
  b, cin = p.shape[0], x.shape[-1]
  p = p.reshape(b, -1, cin, math.prod(ks))                        # [B, T, C_in, prod(kernel)]
  return jnp.swapaxes(p, 2, 3).reshape(b, p.shape[1], -1), ks


def _conv_mode(site, p, d3):
  t, kin, cout = p.shape[1], p.shape[2], d3.shape[2]
  if site.conv_norm in ("patches", "ghost"):
    return site.conv_norm
  return "ghost" if t * t < kin * cout else "patches"


def _conv_norms(site, a, d, own):
  b = a.shape[0]
  p, _ = _conv_patches(site.module, a)
  d3 = _flat3(d, b)
  sq, g = _sequence_sq_norms(p, d3, "bias" in own, gram=_conv_mode(site, p, d3) == "ghost")
  return sq, (p, g)


def _conv_sums(site, a, d, own, w, keep, cache):
  b = a.shape[0]
  p, g = cache
  d3 = _flat3(_rows(d, keep), b)
  if g is None:
    kern = jnp.einsum("btk,bto->ko", _rows(p, keep), d3 * w[:, None, None], precision=_HIGHEST)
  else:
    kern = jnp.tensordot(w, _rows(g, keep), axes=1, precision=_HIGHEST)
  grads = {"kernel": kern.reshape(own["kernel"].shape)}
  if "bias" in own:
    grads["bias"] = jnp.dot(w, jnp.sum(d3, axis=1), precision=_HIGHEST)
  return grads


def _group_norm_norms(site, a, d, own):
  """GroupNorm y = xhat * scale + bias (flax's formula): per example, the scale's gradient is
  sum over positions of d * xhat and the bias's sum of d, channel by channel. xhat is computed
  again from the input with flax's statistics (fast variance E[x^2] - E[x]^2 clipped at 0, or
  E[(x - mean)^2]), reduced over the positions first and then over each group's channels."""
  module = site.module
  b, c = a.shape[0], a.shape[-1]
  groups = module.num_groups if module.group_size is None else c // module.group_size
  size = c // groups
  a3, d3 = _flat3(a, b), _flat3(d, b)                               # [B, T, C]
  n = a3.shape[1] * size
  group_mean = lambda v: jnp.repeat(v.reshape(b, groups, size).sum(-1) / n, size, axis=-1)
  mean = group_mean(jnp.sum(a3, axis=1))                            # [B, C]
  if module.use_fast_variance:
    var = jnp.maximum(0.0, group_mean(jnp.sum(a3 * a3, axis=1)) - mean * mean)
  else:
    var = group_mean(jnp.sum((a3 - mean[:, None]) ** 2, axis=1))
  xhat = (a3 - mean[:, None]) * jax.lax.rsqrt(var + module.epsilon)[:, None]
  g = {}
  if "scale" in own:
    g["scale"] = jnp.sum(d3 * xhat, axis=1)                        # [B, C]
  if "bias" in own:
    g["bias"] = jnp.sum(d3, axis=1)
  return sum(jnp.sum(v * v, axis=1) for v in g.values()), g


def _generic_norms(site, a, d, own):
  """Per-example gradients of the layer applied alone (a vmap of its VJP)."""

  def one(x_i, d_i):
    _, vjp = jax.vjp(lambda p: site.module.apply({"params": p}, x_i[None]), own)
    return vjp(d_i[None].astype(site.out.dtype))[0]

  g = jax.tree.map(lambda v: v.astype(jnp.float32), jax.vmap(one)(a, d))
  sq = sum(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=1) for v in jax.tree.leaves(g))
  return sq, g


def _generic_sums(site, a, d, own, w, keep, cache):
  del site, a, d, own
  return jax.tree.map(lambda v: jnp.tensordot(w, _rows(v, keep), axes=1, precision=_HIGHEST),
                      cache)


_KINDS = {"dense": (_dense_norms, _dense_sums), "conv": (_conv_norms, _conv_sums),
          "group_norm": (_group_norm_norms, _generic_sums),
          "generic": (_generic_norms, _generic_sums)}


def _check_coverage(params, sites: dict) -> None:
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = tuple(str(getattr(k, "key", k)) for k in path)
    if "/".join(names[:-1]) not in sites:
      raise ConfigError(
          f"fast clipping: parameter {'/'.join(names)} was not used by any intercepted module "
          "call (unused, or used outside __call__); use method='reference'")


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  if path:
    tree[path[-1]] = value
  else:
    tree.update(value)


def ghost_clipped_grad_sum(
    loss_fn: Callable, apply_fn: Callable, params, x, y, mask, rng, *, clip_norm,
    conv_norm: str = "auto"):
  """Sum over the batch of mask_i * clip(g_i) by ghost norms; see the module docstring.

  Args:
    loss_fn: (logits [B, K], y [B]) -> per-example losses [B].
    apply_fn: (params, x, rng) -> logits [B, K], built from flax.linen modules.
    params: the parameter pytree (the 'params' collection).
    x: inputs [B, ...]; y: labels [B]; mask: float [B], 1 for real and 0 for padding examples.
    rng: PRNG key for dropout, or None.
    clip_norm: C > 0.
    conv_norm: "auto" | "patches" | "ghost" | "vmap": how Conv per-example norms are formed.

  Returns:
    (clipped_sum, losses [B], grad_norms [B]) with clipped_sum shaped like params.
  """
  if conv_norm not in CONV_NORMS:
    raise ConfigError(f"unknown conv_norm {conv_norm!r}; choose one of {list(CONV_NORMS)}")
  sites: dict[str, _Site] = {}

  def forward(perts):
    inputs: dict = {}
    with nn.intercept_methods(_make_interceptor(params, sites, inputs, perts, conv_norm)):
      logits = apply_fn(params, x, rng)
    return loss_fn(logits, y), inputs

  jax.eval_shape(lambda: forward(None))  # discovers the sites and their output shapes
  _check_coverage(params, sites)
  perts = {k: jnp.zeros(s.out.shape, s.out.dtype) for k, s in sites.items()}
  losses, vjp_fn, inputs = jax.vjp(forward, perts, has_aux=True)
  (deltas,) = vjp_fn(jnp.ones_like(losses))

  work = []
  sq_total = jnp.zeros(losses.shape, jnp.float32)
  for key, site in sites.items():
    a, d, own = inputs[key], deltas[key], _subtree(params, site.path)
    if site.kind != "generic":
      a, d = a.astype(jnp.float32), d.astype(jnp.float32)
    norms_fn, sums_fn = _KINDS[site.kind]
    sq, cache = norms_fn(site, a, d, own)
    sq_total = sq_total + sq
    work.append((site, a, d, own, sums_fn, cache))
  norms = jnp.sqrt(sq_total)
  keep = jnp.isfinite(norms)
  scale = jnp.minimum(1.0, clip_norm / jnp.where(keep & (norms > 0), norms, 1.0))
  w = jnp.where(keep & (mask > 0), scale, 0.0)
  out: dict = {}
  for site, a, d, own, sums_fn, cache in work:
    grads = sums_fn(site, a, d, own, w, keep, cache)
    _set(out, site.path, {k: v.astype(own[k].dtype) for k, v in grads.items()})
  return _restructure(out, params), losses, norms


def _restructure(out: dict, params):
  """Returns `out` with the container types of `params` (dict or FrozenDict)."""
  if isinstance(params, Mapping) and not isinstance(params, dict):
    return type(params)(out)
  return out
