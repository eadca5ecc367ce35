"""CPU kernels: convolutions and max-pooling rewritten as the operations XLA:CPU runs fast.

XLA:CPU runs forward convolutions fast, but autodiff's gradients of them (transposed
convolutions), batched (grouped) convolutions and max-pooling's gradient (select-and-scatter)
far below matmul speed, and inside a loop slower still (measurements:
experiments/results/bench_ensemble.md). Each rewrite keeps the parameters and the function:

  with_convolutions(apply_fn, conv)  every nn.Conv of a flax apply_fn, through a flax method
      interceptor (the model's code is untouched), as
        'im2col'   shifted slices and one matmul (`im2col_conv`): under vmap a batched matmul,
                   where a vmapped convolution becomes a grouped one;
        'forward'  a convolution whose kernel and input gradients are forward convolutions too
                   (`conv_forward_grads`), what one model at a time runs fastest;
        'lax'      unchanged.
  with_window_max(fn)  fn traced to a jaxpr and run again with every non-overlapping max-pool
      (lax.reduce_window_max with window == strides, no padding) as `window_max` (a reshape and a
      max) and every select-and-scatter of its gradient as `window_max_grad` (one select pass):
      an explicit rewrite of the traced function, nothing in flax or jax is replaced. It may
      wrap a whole train step, its gradient included, or a model's apply_fn.

Both are pure wrappers: jit, vmap and grad compose with them, and two threads may trace them at
once. Under DP-SGD the clipping's own interceptor is registered first (outside), so it sees each
nn.Conv before the rewrite computes it.

  apply_fn = with_convolutions(module.apply, "forward")
  step = with_window_max(functools.partial(steps.train_step, loss_fn=loss))
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

CONVS = ("lax", "im2col", "forward")
_DIMS = ("NHWC", "HWIO", "NHWC")


def explicit_padding(padding: str, kh: int, kw: int) -> tuple:
  """The ((top, bottom), (left, right)) padding of a stride-1 'SAME' or 'VALID' convolution."""
  if padding == "SAME":
    return (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
  return ((0, 0), (0, 0))


def im2col_patches(x: jax.Array, kh: int, kw: int, padding: str) -> jax.Array:
  """The kh*kw shifted windows of x [B, H, W, C] concatenated on the channel axis:
  [B, Ho, Wo, kh*kw*C] (row-major window order), for a stride-1 'SAME' or 'VALID' kernel."""
  (top, bottom), (left, right) = explicit_padding(padding, kh, kw)
  if padding == "SAME":
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  return jnp.concatenate([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)],
                         axis=-1)


def im2col_conv(module: nn.Conv, x: jax.Array) -> jax.Array:
  """nn.Conv's function for x [B, H, W, Cin] as im2col patches times the kernel (one matmul)."""
  kernel = module.get_variable("params", "kernel")                  # [kh, kw, Cin, Cout]
  kh, kw, cin, cout = kernel.shape
  cols = im2col_patches(x, kh, kw, module.padding)                   # [B, Ho, Wo, kh*kw*Cin]
  y = jnp.dot(cols.reshape(-1, kh * kw * cin), kernel.reshape(kh * kw * cin, cout))
  y = y.reshape(cols.shape[:3] + (cout,))
  if module.use_bias:
    y = y + module.get_variable("params", "bias")
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_forward_grads(x: jax.Array, kernel: jax.Array, pads: tuple) -> jax.Array:
  """lax's stride-1 convolution of x [B, H, W, Cin] by kernel [kh, kw, Cin, Cout] with explicit
  `pads`, whose kernel and input gradients are forward convolutions too (NHWC / HWIO layouts,
  no groups or dilations)."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DIMS)


def _conv_fwd(x, kernel, pads):
  return conv_forward_grads(x, kernel, pads), (x, kernel)


def _conv_bwd(pads, res, dy):
  x, kernel = res
  kh, kw, _, _ = kernel.shape
  # Ordered after the forward pass: XLA:CPU would otherwise run these alongside the forward
  # convolutions, each then slower.
  x, dy = jax.lax.optimization_barrier((x, dy))
  # The kernel gradient as a forward convolution: x with batch and channels swapped
  # [Cin, H, W, B], by dy as a kernel [Ho, Wo, B, Cout], gives [Cin, kh, kw, Cout].
  dk = jax.lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1),
                                    pads, dimension_numbers=_DIMS).transpose(1, 2, 0, 3)
  # The input gradient: a forward convolution of dy with the flipped, transposed kernel.
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)          # [kh, kw, Cout, Cin]
  ipads = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]), (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
  dx = jax.lax.conv_general_dilated(dy, flipped, (1, 1), ipads, dimension_numbers=_DIMS)
  return dx, dk


conv_forward_grads.defvjp(_conv_fwd, _conv_bwd)


def forward_grads_conv(module: nn.Conv, x: jax.Array) -> jax.Array:
  """nn.Conv's function for x [B, H, W, Cin] through `conv_forward_grads`."""
  kernel = module.get_variable("params", "kernel")
  y = conv_forward_grads(x, kernel, explicit_padding(module.padding, *kernel.shape[:2]))
  if module.use_bias:
    y = y + module.get_variable("params", "bias")
  return y


def _rewritable(module: nn.Conv) -> bool:
  """A 2-D, stride-1, undilated, ungrouped nn.Conv with 'SAME' or 'VALID' padding."""
  ones = (None, 1, (1, 1))
  return (len(tuple(module.kernel_size)) == 2 and module.padding in ("SAME", "VALID")
          and module.feature_group_count == 1 and module.strides in ones
          and module.kernel_dilation in ones and module.input_dilation in ones)


def conv_interceptor(conv: str) -> Callable:
  """A flax method interceptor computing each rewritable nn.Conv by `conv` ('im2col' or
  'forward'); other modules, and convolutions it cannot rewrite, run unchanged."""
  impl = {"im2col": im2col_conv, "forward": forward_grads_conv}[conv]

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (isinstance(module, nn.Conv) and context.method_name == "__call__"
        and not module.is_initializing() and _rewritable(module) and not kwargs):
      return impl(module, *args)
    return next_fun(*args, **kwargs)
  return interceptor


@dataclasses.dataclass(frozen=True)
class ConvRewrite:
  """apply_fn with its nn.Conv computed by `conv`; equal (and hashed) by (apply_fn, conv), so
  two states built alike share jit caches. `base` is the unrewritten apply_fn."""
  base: Callable
  conv: str

  def __call__(self, *args, **kwargs):
    with nn.intercept_methods(conv_interceptor(self.conv)):
      return self.base(*args, **kwargs)


def with_convolutions(apply_fn: Callable, conv: str) -> Callable:
  """apply_fn (a flax module.apply, or one already rewritten) with its convolutions as `conv`
  in CONVS; 'lax' gives the unrewritten apply_fn."""
  if conv not in CONVS:
    raise ValueError(f"conv must be one of {CONVS}, got {conv!r}")
  base = apply_fn.base if isinstance(apply_fn, ConvRewrite) else apply_fn
  return base if conv == "lax" else ConvRewrite(base, conv)


# ---------------------------------------------------------------------------------------------
# Max-pooling as a reshape and a max.

def _windows(x: jax.Array, window: tuple) -> jax.Array:
  """x cropped to multiples of `window` (one size per axis) and reshaped to
  [o0, w0, o1, w1, ...] with o_i = x.shape[i] // w_i."""
  x = x[tuple(slice(0, d - d % w) for d, w in zip(x.shape, window))]
  return x.reshape(sum(((d // w, w) for d, w in zip(x.shape, window)), ()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def window_max(x: jax.Array, window: tuple) -> jax.Array:
  """The max of each non-overlapping window (one size per axis of x, e.g. (1, 2, 2, 1) or, for
  [B, H, W, C], (2, 2)) of x; trailing rows that fill no window are dropped, as VALID pooling
  does. Its gradient goes to the first maximum of each window in row-major order, as lax's
  max-pool gradient (select-and-scatter) does (`window_max_grad`)."""
  window = _full_window(x.ndim, window)
  return _windows(x, window).max(axis=tuple(range(1, 2 * x.ndim, 2)))


def _full_window(ndim: int, window: tuple) -> tuple:
  window = tuple(int(w) for w in window)
  return (1,) + window + (1,) if len(window) == ndim - 2 else window


def window_max_grad(x: jax.Array, window: tuple, cotangent: jax.Array) -> jax.Array:
  """The gradient [x.shape] of `window_max` for output cotangent [o0, o1, ...]: each window's
  cotangent at its first maximum (row-major), zero elsewhere and on the cropped tail.

  The first maximum comes from comparisons of the window's values with each other only: XLA
  may recompute x (a BatchNorm, say) to the last bit differently from the forward pass, so a
  comparison with the forward's max could leave a window without its maximum.
  """
  window = _full_window(x.ndim, window)
  blocks = _windows(x, window)
  positions = list(np.ndindex(*window))
  index = lambda pos: tuple(v for p in pos for v in (slice(None), p))
  vals = [blocks[index(pos)] for pos in positions]
  grads = {}
  for k, (pos, v) in enumerate(zip(positions, vals)):
    tests = [v > u for u in vals[:k]] + [v >= u for u in vals[k + 1:]]
    hit = functools.reduce(jnp.logical_and, tests, jnp.ones(v.shape, bool))
    grads[pos] = jnp.where(hit, cotangent, jnp.zeros_like(cotangent))

  def assemble(prefix: tuple) -> jax.Array:   # window axis d = len(prefix), after o_0 .. o_d
    if len(prefix) == x.ndim:
      return grads[prefix]
    parts = [assemble(prefix + (p,)) for p in range(window[len(prefix)])]
    return jnp.stack(parts, axis=len(prefix) + 1)
  out = assemble(()).reshape(tuple(d - d % w for d, w in zip(x.shape, window)))
  return jnp.pad(out, [(0, d % w) for d, w in zip(x.shape, window)])


window_max.defvjp(lambda x, window: (window_max(x, window), x),
                  lambda window, x, dm: (window_max_grad(x, window, dm),))


def _plain_window(params: dict, ndim: int) -> tuple | None:
  """The window of a reduce_window_max / select_and_scatter_add that `window_max` computes:
  window == strides, no padding, no dilation; else None."""
  window, strides = tuple(params["window_dimensions"]), tuple(params["window_strides"])
  dilations = tuple(params.get("base_dilation", ())) + tuple(params.get("window_dilation", ()))
  if (window != strides or len(window) != ndim or any(p != (0, 0) for p in params["padding"])
      or any(d != 1 for d in dilations)):
    return None
  return window


def _substitute(eqn, invals: list) -> list | None:
  """The outputs of `eqn` through window_max / window_max_grad, or None to run it as is."""
  name = eqn.primitive.name
  if name == "reduce_window_max":
    window = _plain_window(eqn.params, invals[0].ndim)
    return None if window is None else [window_max(invals[0], window)]
  if name == "select_and_scatter_add" and str(eqn.params["select_prim"]) == "ge":
    source, operand = invals
    window = _plain_window(eqn.params, operand.ndim)
    return None if window is None else [window_max_grad(operand, window, source)]
  return None


_INLINED = ("pjit", "jit", "closed_call")


def _eval_jaxpr(jaxpr, consts: list, *args) -> list:
  """Evaluates `jaxpr` as jax.core.eval_jaxpr does, through `_substitute` (nested jit calls
  inlined so their pooling is rewritten too)."""
  env: dict = {}
  read = lambda v: v.val if isinstance(v, jex.Literal) else env[v]
  for var, val in zip(list(jaxpr.constvars) + list(jaxpr.invars), list(consts) + list(args)):
    env[var] = val
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    outs = _substitute(eqn, invals)
    if outs is None and eqn.primitive.name in _INLINED:
      inner = eqn.params["jaxpr"]
      outs = _eval_jaxpr(inner.jaxpr, inner.consts, *invals)
    elif outs is None:
      with eqn.ctx.manager:
        outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    for var, val in zip(eqn.outvars, outs):
      if not isinstance(var, jex.DropVar):
        env[var] = val
  return [read(v) for v in jaxpr.outvars]


def _is_array(leaf: Any) -> bool:
  return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def with_window_max(fn: Callable) -> Callable:
  """fn with its non-overlapping max-pools and their gradients computed by window_max (see the
  module docstring): fn is traced to a jaxpr at each call (inside the caller's jit, once per
  compilation) and its equations run again, substituted. Array leaves of the arguments are
  traced; every other leaf (Python numbers, strings, static fields) is fixed."""
  @functools.wraps(fn)
  def rewritten(*args, **kwargs):
    leaves, treedef = jax.tree.flatten((args, kwargs))
    arrays = [leaf for leaf in leaves if _is_array(leaf)]

    def traced(*values):
      it = iter(values)
      full = [next(it) if _is_array(leaf) else leaf for leaf in leaves]
      call_args, call_kwargs = jax.tree.unflatten(treedef, full)
      return fn(*call_args, **call_kwargs)
    closed, out_shape = jax.make_jaxpr(traced, return_shape=True)(*arrays)
    outs = _eval_jaxpr(closed.jaxpr, closed.consts, *arrays)
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)
  return rewritten
