"""How the model axis of an ensemble is mapped: the one place where that choice is made.

Every strategy runs the same single-model `steps.train_step` on the same batches (those of
`ensemble.epoch_batches`, a function of (seed, epoch, model id) only) with the same keys
(a function of (seed, model id, step)), so every strategy trains the same models:

  vmap     jax.vmap(train_step) over the stacked state, one jitted step at a time; steps in
           which no model has a real example (a curriculum's padding) are skipped, except
           under DP-SGD.
  loop     one model after another, each only on its steps with real examples. By default the
           whole epoch is one jitted program (a loop over the models, each a loop over its
           steps; the batch gathered inside; the state donated and updated in place), compiled
           with XLA:CPU's region-analysis copy insertion, which drops the copies of the
           parameters and Adam moments XLA otherwise makes every step. With `lanes` > 1 (auto:
           2 on a CPU for models without convolutions) the models are split into that many
           groups, each with its epoch program in its own thread, run at once. A step with lax
           convolutions or pooling windows (XLA:CPU ran convolution gradients 40 times slower
           inside a loop) runs as one jitted single-model step at a time, as does
           Strategy(epoch_jit=False) (the former path, kept to compare against). Both train
           the same models: bit-identical for the MLPs measured, up to the last bit of a float
           where XLA fuses differently inside the loop.
  shared   one shared input batch per step, the union of the M models' batches, with per-model
           example masks (loss and BatchNorm statistics are masked): train_step is vmapped over
           the parameters only, so a CNN's first layer is one convolution with M * channels
           outputs. Every model computes on the whole union (about M times the work of its
           own batch), so it only pays where the models' batches overlap heavily.
  sharded  the vmap step with the model axis sharded over a jax.sharding.Mesh of every device
           (of every process under jax.distributed); no communication inside a step.
  auto     picked by `resolve` from the backend and the model family (measurements in
           experiments/results/bench_ensemble.md): sharded over several devices, vmap on one
           accelerator, the loop (with conv='forward') on one CPU.

Convolutions on the CPU: XLA:CPU runs forward convolutions fast, but autodiff's gradients of
them (transposed convolutions) and batched (grouped) convolutions far below matmul speed, and
inside a loop slower still. Both rewrites below keep the parameters and the function (flax
method interceptors: the model's code is untouched), and run 2x2 max-pooling as a reshape and
a max whose gradient is one select (`window_max`), not XLA:CPU's slow select-and-scatter.
  conv="forward"  every convolution, its gradients included, as a forward convolution in
                  NHWC / HWIO layouts (`conv_forward_grads`): what the loop runs fastest, in
                  its epoch program.
  conv="im2col"   every nn.Conv as shifted slices + one matmul: under vmap it stays a batched
                  matmul, where a vmapped convolution becomes a grouped one.
`auto` picks forward for the loop and im2col for the mappings that batch models, on a CPU, for
models with convolutions (measured fastest), and lax elsewhere. Under DP-SGD the rewrite wraps
the model's apply inside the clipping (dp.noisy_grad), whose interceptor must see each nn.Conv.
Dropout and augmentation draw per batch position: under `shared` (a different batch layout)
they draw differently, so `shared` equals the others exactly only without them.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import threading
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mia_jax.errors import ConfigError
from mia_jax.training import steps

MAPPINGS = ("vmap", "loop", "shared", "sharded")
STRATEGIES = MAPPINGS + ("auto",)
CONVS = ("lax", "im2col", "forward")
AXIS = "models"
# Lanes of the loop on a CPU for models without convolutions: groups of models trained at once,
# each group's epoch one program in its own thread (`in_lanes`). Measured on 2 cores (16
# Purchase100 MLPs): two lanes 1.23-1.28 times as fast as one (5.4 against 6.9 ms a model-step
# in experiments/results/bench_ensemble.md), 93-99% as efficient as the same step in a process
# pinned to one core (63-65% of the matmul peak against 66-68%), the most lanes can reach; three
# or four no faster than two. A CNN's convolutions already fill the cores: two lanes ran its epoch 0.96-0.97
# times as fast as one, so a model with convolutions keeps one lane.
CPU_LANES = 2


# ---------------------------------------------------------------------------------------------
# Convolutions as im2col matmuls, and masked BatchNorm statistics (flax method interceptors).

def im2col_conv(module: nn.Conv, x: jax.Array) -> jax.Array:
  """nn.Conv's function for x [B, H, W, Cin] (stride 1, SAME or VALID padding, no dilation):
  the kh*kw shifted windows concatenated on the channel axis, times the kernel as one matmul."""
  kernel = module.get_variable("params", "kernel")                  # [kh, kw, Cin, Cout]
  kh, kw, cin, cout = kernel.shape
  h, w = x.shape[1:3]
  if module.padding == "SAME":
    x = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  cols = jnp.concatenate([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)],
                         axis=-1)                                    # [B, Ho, Wo, kh*kw*Cin]
  y = jnp.dot(cols.reshape(-1, kh * kw * cin), kernel.reshape(kh * kw * cin, cout))
  y = y.reshape(x.shape[0], ho, wo, cout)
  if module.use_bias:
    y = y + module.get_variable("params", "bias")
  return y


def _explicit_padding(padding: str, kh: int, kw: int) -> tuple:
  if padding == "SAME":
    return (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
  return ((0, 0), (0, 0))


_DIMS = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_forward_grads(x: jax.Array, kernel: jax.Array, pads: tuple) -> jax.Array:
  """lax's stride-1 convolution of x [B, H, W, Cin] by kernel [kh, kw, Cin, Cout] with explicit
  `pads`, whose kernel and input gradients are forward convolutions too (in NHWC / HWIO
  layouts, without groups or dilations): XLA:CPU runs forward convolutions fast, inside loops
  as well, and autodiff's transposed ones slowly."""
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
  # [Cin, H, W, B], by dy as a kernel [Ho, Wo, B, Cout], gives [Cin, kh, kw, Cout]. In these
  # layouts XLA:CPU runs it at forward speed (10 ms for the 128 x 14 x 14 x 32 -> 64 layer inside
  # a loop), where autodiff's own transposed convolution took 1.8 s and im2col matmuls 14 ms.
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
  y = conv_forward_grads(x, kernel, _explicit_padding(module.padding, *kernel.shape[:2]))
  if module.use_bias:
    y = y + module.get_variable("params", "bias")
  return y


def _im2col_supported(module: nn.Conv) -> bool:
  ks = tuple(module.kernel_size)
  return (len(ks) == 2 and module.padding in ("SAME", "VALID") and module.feature_group_count == 1
          and module.strides in (None, 1, (1, 1)) and module.kernel_dilation in (None, 1, (1, 1))
          and module.input_dilation in (None, 1, (1, 1)))


def _conv_interceptor(impl: Callable) -> Callable:
  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (isinstance(module, nn.Conv) and context.method_name == "__call__"
        and not module.is_initializing() and _im2col_supported(module) and not kwargs):
      return impl(module, *args)
    return next_fun(*args, **kwargs)
  return interceptor


def _bn_mask_interceptor(mask: jax.Array) -> Callable:
  """BatchNorm statistics over the examples with mask [B] > 0 only (a model's own examples)."""
  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      x = args[0]
      m = jnp.broadcast_to(mask.reshape((-1,) + (1,) * (x.ndim - 1)) > 0, x.shape)
      return next_fun(*args, **{**kwargs, "mask": m})
    return next_fun(*args, **kwargs)
  return interceptor


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def window_max(x: jax.Array, window: tuple) -> jax.Array:
  """The max of each non-overlapping window [wh, ww] of x [B, H, W, C] (H, W multiples of it).
  Its gradient goes to the first maximum of each window in row-major order, as lax's max-pool
  gradient (select-and-scatter) does; one elementwise pass, where autodiff of a reshape and a
  max would split ties, through a mask and a count materialised at the input's size."""
  (wh, ww), (b, h, w, c) = window, x.shape
  return x.reshape(b, h // wh, wh, w // ww, ww, c).max(axis=(2, 4))


def _window_max_fwd(x, window):
  return window_max(x, window), x


def _window_max_bwd(window, x, dm):
  (wh, ww), (b, h, w, c) = window, x.shape
  x6 = x.reshape(b, h // wh, wh, w // ww, ww, c)
  vals = [x6[:, :, i, :, j] for i in range(wh) for j in range(ww)]      # row-major window order
  # The first maximum, from comparisons of the window's values with each other only: XLA may
  # recompute x (a BatchNorm, say) in this pass to the last bit differently from the forward
  # pass, so comparing with the forward's max could leave a window without its maximum.
  grads = []
  for k, v in enumerate(vals):
    tests = [v > u for u in vals[:k]] + [v >= u for u in vals[k + 1:]]
    hit = functools.reduce(jnp.logical_and, tests, jnp.ones(v.shape, bool))
    grads.append(jnp.where(hit, dm, jnp.zeros_like(dm)))
  rows = [jnp.stack(grads[i * ww:(i + 1) * ww], axis=3)             # [B, H/wh, W/ww, ww, C]
          for i in range(wh)]
  return (jnp.stack(rows, axis=2).reshape(x.shape),)


window_max.defvjp(_window_max_fwd, _window_max_bwd)


def reshape_max_pool(x, window_shape, strides=None, padding="VALID"):
  """nn.max_pool for non-overlapping windows (strides == window, VALID) on [B, H, W, C] as
  `window_max`: a reshape and a max, whose gradient is one select, not XLA:CPU's slow
  select-and-scatter (80 ms against 16 ms for a 128 x 28 x 28 x 32 input). Other pools go to
  nn.max_pool."""
  window = tuple(window_shape)
  if (x.ndim != 4 or len(window) != 2 or tuple(strides or (1, 1)) != window
      or padding != "VALID"):
    return _MAX_POOL(x, window_shape, strides=strides, padding=padding)
  (wh, ww), (h, w) = window, x.shape[1:3]
  return window_max(x[:, :h - h % wh, :w - w % ww], window)


_MAX_POOL = nn.max_pool


_TRACE_LOCK = threading.RLock()


@contextlib.contextmanager
def _matmul_layers(conv: str):
  """While tracing: nn.Conv as im2col (a flax method interceptor) and nn.max_pool as
  `reshape_max_pool` (flax offers no interceptor for functions: nn.max_pool is swapped for the
  trace and restored after it, under a lock, so two threads never trace under it at once)."""
  with _TRACE_LOCK:
    nn.max_pool = reshape_max_pool
    try:
      impl = im2col_conv if conv == "im2col" else forward_grads_conv
      with nn.intercept_methods(_conv_interceptor(impl)):
        yield
    finally:
      nn.max_pool = _MAX_POOL


def with_conv(step: Callable, conv: str) -> Callable:
  """`step` traced with XLA's convolutions ('lax'), or with reshape max-pooling and im2col
  convolutions ('im2col') or forward convolutions for the gradients too ('forward'): the same
  function of the same parameters."""
  if conv == "lax":
    return step

  def wrapped(*args):
    with _matmul_layers(conv):
      return step(*args)
  return wrapped


# ---------------------------------------------------------------------------------------------
# Epoch functions. All share one signature:
#   (state[M], pool_x, pool_y, idx[S, M, B], mask[S, M, B], model_ids[M], seed, step0, active[M])
#   -> (state[M], metrics {loss_sum, correct, count} [M])
# where state is in the form Strategy.running gives (the loop's: a tuple of its lanes' groups).
# An epoch is a Python loop over one jitted step (the state and the running metrics donated),
# except the loop's (below): XLA:CPU ran convolutions inside a lax.scan of the steps 40 times
# slower than outside one.

def step_keys(seed, model_ids, t):
  """The step-t key of each model [M]: fold_in(fold_in(fold_in(key(seed), id), 1), t)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda m: jax.random.fold_in(jax.random.fold_in(
      jax.random.fold_in(base, m), 1), t))(model_ids)


def _jit_step(step_fn) -> Callable:
  """step_fn(state, px, py, bidx, bmask, keys) -> (state, metrics) -> one jitted step s of an
  epoch that adds its metrics to the running sums."""
  def one(state, sums, pool_x, pool_y, idx, mask, s, model_ids, seed, step0, active):
    bmask = mask[s] * active.reshape((-1,) + (1,) * (mask.ndim - 2))
    state, metrics = step_fn(state, pool_x, pool_y, idx[s], bmask,
                             step_keys(seed, model_ids, step0 + s))
    return state, jax.tree.map(jnp.add, sums, metrics)
  return jax.jit(one, donate_argnums=(0, 1))


def _run_steps(jitted, state, pool_x, pool_y, idx, mask, model_ids, seed, step0, active,
               steps_to_run=None):
  """Runs steps `steps_to_run` (default: all S) of the epoch; a step left out must be one
  with no real example, which would leave the state untouched."""
  num_models = mask.shape[1]
  sums = {k: jnp.zeros((num_models,), jnp.float32) for k in ("loss_sum", "correct", "count")}
  for s in (range(idx.shape[0]) if steps_to_run is None else steps_to_run):
    state, sums = jitted(state, sums, pool_x, pool_y, idx, mask, np.int32(s), model_ids, seed,
                         step0, active)
  return state, sums


# XLA:CPU options of the loop's whole-epoch program:
#  - region-analysis copy insertion lets the parameter and Adam-moment updates write in place
#    (without it XLA copies params, mu and nu every step: 26 copies in the Purchase100 MLP's
#    step, 1.16x slower over an epoch of 16 models); the MLP's results are bit-identical.
#  - YNNPACK (XLA:CPU's kernel library for dots, reductions and convolutions) for dots and
#    reductions only: its convolutions ran at half the speed of XLA's own when their output is
#    written to memory (8.6 ms against 4.1 ms for the 128 x 14 x 14 x 32 -> 64 layer inside a
#    loop; 3.8 ms when fused into a reduction); an epoch of 8 CNNs under conv='forward'
#    ran about 1.2 times as fast without them.
# Options this jaxlib does not know are left out (`_cpu_compiler_options`).
_CPU_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True,
                         "xla_cpu_experimental_ynn_fusion_type":
                             "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def _cpu_compiler_options() -> tuple:
  """The entries of _CPU_COMPILER_OPTIONS this XLA accepts (each tried on a trivial program)."""
  known = []
  for name, value in _CPU_COMPILER_OPTIONS.items():
    try:
      jax.jit(lambda v: v + 1, compiler_options={name: value}).lower(np.float32(0)).compile()
      known.append((name, value))
    except Exception:  # pylint: disable=broad-except
      pass
  return tuple(known)


# Primitives that keep a step out of a loop: XLA:CPU ran an epoch of 16 CNNs with lax
# convolutions inside one 40 times slower (184 s against 4.5 s, and 1e-5 off the step outside
# one): the gradients of convolutions (a kernel gradient took 1.8 s inside a loop against 35 ms
# outside), while forward convolutions ran at their speed (about 4 ms, 220-245 GFLOP/s, for
# the 128 x 14 x 14 x 32 -> 64 layer). So a forward convolution, in the layouts and without the
# groups or dilations of autodiff's transposes, may run in a loop (as conv='forward'
# computes every convolution); pooling windows and their gradients are kept out by caution.
_SLOW_IN_LOOPS = frozenset({"conv_general_dilated", "reduce_window", "reduce_window_sum",
                            "reduce_window_max", "reduce_window_min", "select_and_scatter_add",
                            "select_and_gather_add", "select_and_scatter"})
_FORWARD_CONV_DIMS = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                                  out_spec=(0, 3, 1, 2))


def _fast_in_loops(eqn) -> bool:
  """Whether `eqn`, a primitive of _SLOW_IN_LOOPS, is a plain forward convolution (NHWC input,
  HWIO kernel, no groups, no dilation) that XLA:CPU runs at its speed inside a loop."""
  p = eqn.params
  return (eqn.primitive.name == "conv_general_dilated"
          and p["dimension_numbers"] == _FORWARD_CONV_DIMS
          and p["feature_group_count"] == 1 and p["batch_group_count"] == 1
          and all(d == 1 for d in tuple(p["lhs_dilation"]) + tuple(p["rhs_dilation"])))


def jaxpr_eqns(jaxpr):
  """Every equation of `jaxpr` and of every jaxpr nested in it (loops, calls, custom rules)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in (value if isinstance(value, (tuple, list)) else (value,)):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from jaxpr_eqns(sub)


def _slow_in_loops(jaxpr) -> bool:
  """Whether `jaxpr` (or a jaxpr nested in it) holds a primitive XLA:CPU runs slowly in a loop."""
  return any(eqn.primitive.name in _SLOW_IN_LOOPS and not _fast_in_loops(eqn)
             for eqn in jaxpr_eqns(jaxpr))


def real_steps(mask: np.ndarray, active: np.ndarray, every_step: bool
               ) -> tuple[np.ndarray, np.ndarray]:
  """The steps each model runs: order int32 [M, S] (its first counts[m] entries) and counts [M].

  Without DP a step with no real example (mask * active all 0) leaves the state untouched, so
  it is skipped: a model whose kept examples ran out, or that stopped early, does no work.
  `every_step` (DP-SGD, whose step releases a noisy update even on an empty batch, as under
  vmap): every step of every model.
  """
  s_steps, num_models = mask.shape[:2]
  if every_step:
    return (np.tile(np.arange(s_steps, dtype=np.int32), (num_models, 1)),
            np.full(num_models, s_steps, np.int32))
  real = (mask * active.reshape(1, -1, 1)).sum(axis=-1) > 0            # [S, M]
  order = np.zeros((num_models, s_steps), np.int32)
  counts = real.sum(axis=0).astype(np.int32)
  for m in range(num_models):
    order[m, :counts[m]] = np.flatnonzero(real[:, m])
  return order, counts


def _model_steps(step) -> Callable:
  """One model's steps of an epoch in a loop (traced inside the epoch's program): state of one
  model, idx_m / mask_m [S, B], the steps order[:count] -> (state, summed metrics)."""
  def run(state, pool_x, pool_y, idx_m, mask_m, order, count, model_id, seed, step0, active):
    def body(t, carry):
      state, sums = carry
      s = order[t]
      bidx = idx_m[s]
      key = step_keys(seed, model_id[None], step0 + s)[0]
      state, metrics = step(state, pool_x[bidx], pool_y[bidx], mask_m[s] * active, key)
      return state, jax.tree.map(jnp.add, sums, metrics)
    sums = {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct", "count")}
    return jax.lax.fori_loop(0, count, body, (state, sums))
  return run


def _epoch_program(step) -> Callable:
  """An epoch of a group of models (a lane's) as one jitted program, on their stacked state
  (donated): for each model, its state sliced out, its steps run in a loop, its state written
  back in place. One program per epoch, not one per model: XLA:CPU allocates a program's
  temporary buffers afresh at each call, and first writes to them fault pages in (about 12,000
  page faults, 14 ms, for the CNN's step, whose step takes 23 ms)."""
  run = _model_steps(step)

  def epoch(state, pool_x, pool_y, idx, mask, model_ids, seed, step0, active, order, counts):
    num_models = counts.shape[0]
    sums = {k: jnp.zeros((num_models,), jnp.float32) for k in ("loss_sum", "correct", "count")}

    def one_model(m, carry):
      state, sums = carry
      take = lambda a, axis=0: jax.lax.dynamic_index_in_dim(a, m, axis, keepdims=False)
      st, met = run(jax.tree.map(take, state), pool_x, pool_y, take(idx, 1), take(mask, 1),
                    order[m], counts[m], model_ids[m], seed, step0, active[m])
      state = jax.tree.map(lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v, m, 0),
                           state, st)
      return state, jax.tree.map(lambda a, v: a.at[m].set(v), sums, met)
    return jax.lax.fori_loop(0, num_models, one_model, (state, sums))

  options = dict(_cpu_compiler_options()) if jax.default_backend() == "cpu" else None
  return jax.jit(epoch, donate_argnums=(0,), compiler_options=options)


def lane_bounds(num_models: int, lanes: int) -> tuple:
  """The models [lo, hi) of each lane: contiguous groups, as equal in size as can be."""
  edges = np.linspace(0, num_models, min(lanes, num_models) + 1).round().astype(int)
  return tuple((int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]))


def group_starts(groups: list) -> np.ndarray:
  """The first model of each stacked group, and the number of models at the end: [G + 1]."""
  return np.cumsum([0] + [jax.tree.leaves(g)[0].shape[0] for g in groups])


@jax.jit
def _concat(*trees):
  return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def in_lanes(tasks: list[Callable], lanes: int) -> list:
  """Runs `tasks` (callables without arguments, independent of each other) in `lanes` threads,
  each taking the next task when done with its last; the results in the order of `tasks`.

  XLA:CPU runs a program in the thread that calls it, and one program alone leaves the cores
  idle part of the time (between its kernels, and in kernels that run on one thread): two at
  once fill them. Every task computes what it would alone, so the results do not depend on
  `lanes`. JAX's thread-local settings (`with jax.default_matmul_precision(...)`,
  `jax.default_device`, `jax.enable_x64` as contexts) do not reach the lanes' threads: the loop
  compiles each program in the calling thread first, but one retraced in a lane would not see
  them. Set such options globally (jax.config.update), or train with train.lanes=1.
  """
  if lanes <= 1 or len(tasks) <= 1:
    return [task() for task in tasks]
  with concurrent.futures.ThreadPoolExecutor(lanes, thread_name_prefix="mia_jax-lane") as pool:
    return list(pool.map(lambda task: task(), tasks))


def _loop(step, every_step: bool, epoch_jit: bool, lanes: int = 1) -> Callable:
  """The loop strategy's epoch function, on the ensemble's state split into lanes
  (`Strategy.running`: a tuple of stacked groups of models): each lane's epoch as one program
  (`_epoch_program`) when `epoch_jit` and the step has none of _SLOW_IN_LOOPS, else one jitted
  step at a time; the lanes in threads at once (`in_lanes`)."""
  per_step = _jit_step(_single(step))
  program = _epoch_program(step) if epoch_jit else None
  fits = {}                      # input shapes -> whether the step may run inside a loop
  compiled = set()               # input shapes the lanes' programs were compiled for

  def in_one_program(groups, pool_x, pool_y, idx, mask) -> bool:
    if program is None:
      return False
    key = _shapes_key((groups[0], pool_x, pool_y, idx, mask))
    if key not in fits:
      one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), groups[0])
      b = idx.shape[-1]
      jaxpr = jax.make_jaxpr(step)(
          one, jax.ShapeDtypeStruct((b,) + pool_x.shape[1:], pool_x.dtype),
          jax.ShapeDtypeStruct((b,) + pool_y.shape[1:], pool_y.dtype),
          jax.ShapeDtypeStruct((b,), mask.dtype), jax.random.key(0))
      fits[key] = not _slow_in_loops(jaxpr.jaxpr)
    return fits[key]

  def loop_epoch(groups, px, py, idx, mask, model_ids, seed, step0, active):
    idx, mask = np.asarray(idx), np.asarray(mask)
    model_ids, active = np.asarray(model_ids), np.asarray(active)
    order, counts = real_steps(mask, active, every_step)
    whole = in_one_program(groups, px, py, idx, mask)
    starts = group_starts(groups)
    sizes = np.diff(starts).tolist()
    groups = list(groups)

    def lane(g):
      state, groups[g] = groups[g], None       # donated: the list keeps no deleted arrays
      lo, hi = starts[g], starts[g + 1]
      if whole:
        out = program(state, px, py, idx[:, lo:hi], mask[:, lo:hi], model_ids[lo:hi], seed,
                      step0, active[lo:hi], order[lo:hi], counts[lo:hi])
      else:
        outs = [_run_steps(per_step, jax.tree.map(lambda a: a[m:m + 1], state), px, py,
                           jnp.asarray(idx[:, lo + m:lo + m + 1]),
                           jnp.asarray(mask[:, lo + m:lo + m + 1]),
                           model_ids[lo + m:lo + m + 1], seed, step0,
                           active[lo + m:lo + m + 1], order[lo + m, :counts[lo + m]])
                for m in range(hi - lo)]
        out = jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
      return jax.block_until_ready(out)

    tasks = [functools.partial(lane, g) for g in range(len(groups))]
    # Each group size's program is compiled (traced) by one lane alone, the first time: tracing
    # under conv rewrites swaps nn.max_pool for the duration, which lanes must not overlap.
    common = _shapes_key((jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
                                       groups[0]), px, py, idx, mask))
    for g, size in enumerate(sizes):
      if len(tasks) > 1 and (whole, size, common) not in compiled:
        tasks[g] = (lambda done: lambda: done)(tasks[g]())
        compiled.add((whole, size, common))
    outs = in_lanes(tasks, lanes)
    metrics = {k: np.concatenate([np.asarray(o[1][k]) for o in outs]) for k in outs[0][1]}
    return tuple(o[0] for o in outs), metrics
  loop_epoch.in_one_program = in_one_program
  return loop_epoch


def _shapes_key(tree) -> tuple:
  """A hashable key of a tree's structure and its leaves' shapes and dtypes."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves)


def _vmapped(step):
  """A step over stacked models taking pool indices [M, B]."""
  vstep = jax.vmap(step)
  return lambda state, px, py, bidx, bmask, keys: vstep(state, px[bidx], py[bidx], bmask, keys)


def _shared(step):
  """A step over stacked models on one shared batch: bidx [U] (shared), bmask [M, 2, U]
  (loss masks, BatchNorm masks: see union_batches)."""
  def masked(state, x, y, masks, key):
    with nn.intercept_methods(_bn_mask_interceptor(masks[1])):
      return step(state, x, y, masks[0], key)
  vstep = jax.vmap(masked, in_axes=(0, None, None, 0, 0))
  return lambda state, px, py, bidx, bmask, keys: vstep(state, px[bidx], py[bidx], bmask, keys)


def _single(step):
  """A step of one model (leading axis of size 1 on every per-model input)."""
  def one(state, px, py, bidx, bmask, keys):
    s, met = step(jax.tree.map(lambda a: a[0], state), px[bidx[0]], py[bidx[0]], bmask[0],
                  keys[0])
    return jax.tree.map(lambda a: a[None], (s, met))
  return one


def union_batches(idx: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-model batches idx, mask [S, M, B] -> one shared batch per step: the union [S, U] of
  the models' batch entries (padded with its first entry) and masks [S, M, 2, U]: [:, :, 0]
  marks model m's real examples (its loss), [:, :, 1] all B entries of its batch, padding
  included (its BatchNorm statistics, as under vmap; exact when every model keeps >= B
  examples, so that no entry repeats within a model's batch)."""
  s_steps, num_models, _ = idx.shape
  unions = [np.unique(idx[s]) for s in range(s_steps)]
  width = max(len(u) for u in unions)
  uidx = np.zeros((s_steps, width), np.int32)
  umask = np.zeros((s_steps, num_models, 2, width), np.float32)
  for s, u in enumerate(unions):
    uidx[s, :len(u)] = u
    uidx[s, len(u):] = u[0]
    for m in range(num_models):
      umask[s, m, 0, :len(u)] = np.isin(u, idx[s, m][mask[s, m] > 0])
      umask[s, m, 1, :len(u)] = np.isin(u, idx[s, m])
  return uidx, umask


# ---------------------------------------------------------------------------------------------
# Strategies: how per-model arrays are placed, and how an epoch runs.

@dataclasses.dataclass(frozen=True)
class Strategy:
  """A resolved strategy. `mapping` in MAPPINGS; `conv` in CONVS. `epoch_jit` (the loop only):
  the whole epoch as one jitted program where the step allows it; False: one jitted step at a
  time (the former path, kept for comparison). `lanes` (the loop only): how many groups of models
  train at once, each group's epoch in its own thread (`in_lanes`)."""
  mapping: str
  conv: str = "lax"
  epoch_jit: bool = True
  lanes: int = 1

  def __post_init__(self):
    if not isinstance(self.lanes, (int, np.integer)) or self.lanes < 1:
      raise ConfigError(f"lanes={self.lanes!r} must be an integer >= 1")

  @property
  def name(self) -> str:
    name = self.mapping + ("" if self.conv == "lax" else "+" + self.conv)
    if self.mapping != "loop":
      return name
    return (name + ("" if self.epoch_jit else "+stepjit")
            + ("" if self.lanes == 1 else f"+{self.lanes}lanes"))

  # Placement --------------------------------------------------------------------------------
  @functools.cached_property
  def mesh(self) -> Mesh | None:
    return Mesh(np.array(jax.devices()), (AXIS,)) if self.mapping == "sharded" else None

  def model_multiple(self) -> int:
    """A chunk's number of models is padded to a multiple of this (the mesh's devices)."""
    return self.mesh.size if self.mesh is not None else 1

  def put(self, tree: Any, axis: int = 0) -> Any:
    """Places host arrays whose `axis` is the model axis (sharded: over the mesh)."""
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, tree)
    def place(a):
      a = np.asarray(a)
      spec = P(*([None] * axis + [AXIS]))
      return jax.make_array_from_callback(a.shape, NamedSharding(self.mesh, spec),
                                          lambda index: a[index])
    return jax.tree.map(place, tree)

  def replicate(self, tree: Any) -> Any:
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, tree)
    def place(a):
      a = np.asarray(a)
      return jax.make_array_from_callback(a.shape, NamedSharding(self.mesh, P()),
                                          lambda index: a[index])
    return jax.tree.map(place, tree)

  def get(self, tree: Any) -> Any:
    """Host (numpy) copies of device arrays, gathered from every process when sharded."""
    if self.mesh is not None and jax.process_count() > 1:
      return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))

  def running(self, state: Any) -> Any:
    """The stacked ensemble state [M, ...] (host or device arrays) placed (`put`) in the form
    `epoch_fn` takes and returns: the loop's, a tuple of its lanes' groups of models
    (`lane_bounds`), each stacked (so its epochs do not copy the ensemble in and out of one
    array; host arrays are placed group by group, without a stacked copy on the device); the
    others', the stacked state."""
    if self.mapping != "loop":
      return self.put(state)
    bounds = lane_bounds(jax.tree.leaves(state)[0].shape[0], self.lanes)
    return tuple(jax.tree.map(lambda a, lo=lo, hi=hi: jnp.asarray(a[lo:hi]), state)
                 for lo, hi in bounds)

  def stacked(self, state: Any) -> Any:
    """The inverse of `running`: the stacked state [M, ...] on the device (for one group, the
    running state's own arrays, which the next epoch donates)."""
    if self.mapping != "loop":
      return state
    return state[0] if len(state) == 1 else _concat(*state)

  def groups(self, state: Any) -> list:
    """The stacked groups of models of a state in the form `running` gives, in model order
    (the loop's lanes; one group, the stacked state, for the others): per-group work, such as
    evaluation, needs no stacked copy of the whole ensemble."""
    return list(state) if self.mapping == "loop" else [state]

  def from_groups(self, groups: list) -> Any:
    """The inverse of `groups`."""
    return tuple(groups) if self.mapping == "loop" else groups[0]

  def get_stacked(self, state: Any) -> Any:
    """A host (numpy) copy of the stacked state, from the form `running` gives (the loop's
    groups concatenated on the host, without a stacked copy on the device)."""
    if self.mapping != "loop" or len(state) == 1:
      return self.get(self.stacked(state))
    return jax.tree.map(lambda *a: np.concatenate(a), *self.get(state))

  # Epochs -----------------------------------------------------------------------------------
  def epoch_fn(self, model: nn.Module, tx, step_cfg: steps.StepConfig) -> Callable:
    """The epoch function (signature above) of this strategy, jitted once; the state is
    donated."""
    conv = self.conv
    if step_cfg.dp is not None and conv != "lax":
      # DP-SGD's fast clipping intercepts nn.Conv itself (its inputs, for per-example norms);
      # flax calls the interceptor registered first first, so the rewrite of convolutions is
      # registered inside the clipping's: around the model's apply (dp.noisy_grad).
      step_cfg = dataclasses.replace(step_cfg, dp=dataclasses.replace(step_cfg.dp, conv=conv))
      conv = "lax"
    step = with_conv(functools.partial(steps.train_step, model=model, tx=tx, cfg=step_cfg), conv)
    if self.mapping == "sharded":
      return functools.partial(_run_steps, _jit_step(_vmapped(step)))
    if self.mapping == "vmap":
      jitted = _jit_step(_vmapped(step))
      def vmap_epoch(state, px, py, idx, mask, model_ids, seed, step0, active):
        # Steps where no model has a real example (a curriculum's padding, the tail of the
        # longest model's epoch) leave every state untouched, except under DP-SGD: skipped.
        todo = None
        if step_cfg.dp is None:
          real = (np.asarray(mask) * np.asarray(active).reshape(1, -1, 1)).sum(axis=(1, 2))
          todo = np.flatnonzero(real > 0)
        return _run_steps(jitted, state, px, py, idx, mask, model_ids, seed, step0, active,
                          todo)
      return vmap_epoch
    if self.mapping == "shared":
      jitted = _jit_step(_shared(step))
      def shared_epoch(state, px, py, idx, mask, model_ids, seed, step0, active):
        uidx, umask = union_batches(np.asarray(idx), np.asarray(mask))
        return _run_steps(jitted, state, px, py, uidx, umask, model_ids, seed, step0, active)
      return shared_epoch
    if self.mapping == "loop":
      # A model skips its steps without a real example (a no-op, except under DP-SGD): the
      # loop does the work of the real batches only.
      return _loop(step, every_step=step_cfg.dp is not None, epoch_jit=self.epoch_jit,
                   lanes=self.lanes)
    raise ValueError(self.mapping)

  def eval_fn(self, model: nn.Module) -> Callable:
    """Jitted `(params[M], batch_stats[M], x, y) -> accuracy [M]` in eval mode."""
    def accuracy(params, batch_stats, x, y):
      logits = steps.predict(model, steps.variables_of(params, batch_stats), x)
      return jnp.mean(jnp.argmax(logits, -1) == y)
    # Vmapped over the models, a forward convolution becomes a grouped one (slow on a CPU):
    # evaluation, which has no gradients, runs forward's convolutions as im2col's matmuls.
    conv = "im2col" if self.conv == "forward" else self.conv
    return jax.jit(jax.vmap(with_conv(accuracy, conv), in_axes=(0, 0, None, None)))


def has_conv(model: nn.Module, sample_x) -> bool:
  """Whether the model calls nn.Conv (found by tracing one init, no computation)."""
  found = []
  def spy(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Conv):
      found.append(True)
    return next_fun(*args, **kwargs)
  with nn.intercept_methods(spy):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(sample_x), train=False))
  return bool(found)


def resolve(strategy: str, model: nn.Module, sample_x, conv: str = "auto", lanes: int = 0
            ) -> Strategy:
  """The strategy for `strategy` in STRATEGIES ('auto': by backend and model family).

  auto (measured side by side on a 2-core CPU, experiments/results/bench_ensemble.md):
    several devices       sharded (vmap within each device)
    one GPU / TPU         vmap
    one CPU               loop: one model's step already fills the cores, and the loop skips
                          the empty steps of models whose examples ran out. Against the former
                          loop (lax, one jitted step at a time), the loop with its epoch in one
                          program ran 1.49-1.67 times as fast and vmap at 0.78-0.91 times
                          (16 MLPs; in two lanes 1.64-1.71); for 16 CNNs vmap of lax
                          convolutions at 0.27-0.52, vmap with im2col at 1.16-1.78, the loop
                          with im2col in one program at 2.29-3.30, with forward convolutions
                          in one program at 4.52-5.97
  conv auto, on a CPU for models with convolutions: forward under the loop (45% of the matmul
  peak for the CNN, against 25% with im2col), im2col under the mappings that batch models; lax
  elsewhere.
  lanes 0 (auto): CPU_LANES for the loop on a CPU for models without convolutions (see there),
  else 1.
  """
  if strategy not in STRATEGIES:
    raise ConfigError(f"unknown ensemble strategy {strategy!r}; choose one of {list(STRATEGIES)} "
                      "with --config.train.strategy=NAME")
  if conv not in CONVS + ("auto",):
    raise ConfigError(f"unknown convolution {conv!r}; choose one of {list(CONVS + ('auto',))} "
                      "with --config.train.conv=NAME")
  if not isinstance(lanes, (int, np.integer)) or lanes < 0:
    raise ConfigError(f"train.lanes={lanes!r} must be an integer >= 0 (0: auto)")
  if lanes > 1 and strategy not in ("loop", "auto"):
    raise ConfigError(f"train.lanes={lanes} applies to the loop strategy only, not to "
                      f"{strategy!r}; set --config.train.lanes=0")
  cpu = jax.default_backend() == "cpu"
  convs = cpu and has_conv(model, sample_x)
  if strategy == "auto":
    if jax.device_count() > 1:
      strategy = "sharded"
    else:
      strategy = "loop" if cpu else "vmap"
  if conv == "auto":
    if not convs:
      conv = "lax"
    else:
      # One model at a time: forward convolutions, gradients included. Models
      # mapped together: batched matmuls (a vmapped convolution becomes a grouped one, slow).
      conv = "forward" if strategy == "loop" else "im2col"
  if lanes == 0 or strategy != "loop":     # lanes given with auto: where it picks the loop
    lanes = CPU_LANES if strategy == "loop" and cpu and not convs else 1
  return Strategy(mapping=strategy, conv=conv, lanes=lanes)
