"""Benchmark: the ensemble strategies side by side, on this machine, in one run.

  python -m experiments.bench_ensemble            # the full table (~10-15 minutes, 2-core CPU)
  python -m experiments.bench_ensemble --quick    # a quick try (fewer rounds, smaller pools)

Workloads (synthetic inputs of the real shapes: time does not depend on the values):
  mlp  16 copies of the Purchase100 network (600-1024-512-256-128-100, tanh; 1.32M parameters),
       a pool of 2,048 examples, pkeep 0.5, batch 128, Adam.
  cnn  16 copies of the Fashion-MNIST CNN (conv 32, conv 64, each 3x3 + relu + 2x2 max-pool,
       global average pool, dense 128, dense 10) on 28x28x1 inputs, a pool of 512, pkeep 0.5,
       batch 128, Adam.
For each strategy: the time of one training epoch of all 16 models (host-side batching
included), the median over rounds in which every strategy runs one epoch in turn (side by side,
since the machine is shared), after one warm-up epoch that compiles. `loop` with lax
convolutions is the sequential loop of single models (the baseline).
Training FLOP/s: the useful FLOPs of an epoch (XLA's cost analysis of ONE plain single-model
train step, times the steps with real examples, times the models: redundant work such as the
shared strategy's is not counted) over its time, as a fraction of the float32 matmul peak
(a 2048 x 2048 matmul) measured in the same run.
Roofline bound: the memory bandwidth is measured in the same rounds (a jitted in-place scale
and axpy of a 256 MiB float32 array, the faster of the two), and a model-step takes at least
  matmul FLOPs (the dots and convolutions of the step) / peak
  + (bytes Adam moves: it reads params, grads, mu, nu and writes params, mu, nu, 28 bytes a
     parameter; + the batch gather's reads and writes) / bandwidth,
so the best attainable training FLOP/s fraction is FLOPs / (that time * peak): the "bound"
column; "of bound" is each strategy's fraction of the peak over it.
The loop runs each epoch as one jitted program where the step allows it (no autodiff
convolution gradients), in lanes (groups of models, one program each, in threads at once) where
`auto` says: "jit per step" rows run the former path, one jitted step at a time, side by side.
DP-SGD CNNs: 4 CNNs with GroupNorm trained with DP-SGD (fast clipping, sigma 1, C 1), the
former path (lax convolutions, one jitted step at a time) against the loop with forward
convolutions, and the same CNNs without DP under auto, side by side.
CNN breakdown: one batch's convolutions, their weight and input gradients, ReLU + max-pool and
its gradient, the head and Adam, each jitted on its own (lax and im2col), side by side.
What bounds the MLP: the same 16 MLPs (loop, one lane) in a fresh process pinned to one core,
against that core's matmul peak (lanes run one program per core at once, so that fraction bounds
theirs); and auto at the main table's pool and at 8 times it, side by side (the per-model costs
of an epoch weigh less as epochs get longer).
Scaling: the MLP under `auto` for M = 8, 16, 32, 64, and the peak RSS of a fresh process that
trains M = 64 for two epochs with train_ensemble. The float16 logits store: LiRA (online)
scores of 4 targets from float16 vs float32 logits of the trained MLPs.
Writes experiments/results/bench_ensemble.{md,json}.
"""

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mia_jax import attacks, inference, metrics
from mia_jax.data import membership
from mia_jax.models import cnn, mlp
from mia_jax.training import ensemble, optim, steps, strategies

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def train_config(batch_size: int = 128, epochs: int = 100) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      epochs=epochs, batch_size=batch_size, optimizer="adam", learning_rate=1e-3, momentum=0.9,
      nesterov=False, schedule="constant", lr_decay_epochs=(), lr_decay_factor=0.1,
      warmup_epochs=1.0, l2=0.0, weight_decay=0.0, label_smoothing=0.0,
      early_stopping_patience=0, augment=dict(crop_padding=0, flip=False), strategy="auto",
      conv="auto", chunk_size=0))


def workload(name: str, num_models: int, pool: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  if name == "mlp":
    model = mlp.MLP(hidden=mlp.PURCHASE_HIDDEN, num_classes=100, activation="tanh")
    x = (rng.random((pool, 600)) < 0.2).astype(np.float32)
    y = rng.integers(0, 100, pool).astype(np.int32)
  else:
    model = cnn.CNN(channels=(32, 64), num_classes=10, dense=128)
    x = rng.random((pool, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, pool).astype(np.int32)
  keep = membership.keep_matrix(seed, num_models, pool, 0.5)
  return model, x, y, keep


def matmul_peak(n: int = 2048, reps: int = 3) -> float:
  """float32 matmul GFLOP/s (median of reps)."""
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / np.median(times) / 1e9


def bandwidth(mib: int = 256, reps: int = 3) -> dict:
  """GB/s of a jitted in-place (donated) scale, a = 1.0001 a (8 bytes an element: read, write),
  and axpy, a = 0.9999 a + b (12 bytes), of float32 arrays of `mib` MiB: the median of reps."""
  n = mib * 2 ** 20 // 4
  scale = jax.jit(lambda a: a * 1.0001, donate_argnums=0)
  axpy = jax.jit(lambda a, b: a * 0.9999 + b, donate_argnums=0)
  a, b = jnp.ones((n,), jnp.float32), jnp.ones((n,), jnp.float32)
  out = {}
  for name, fn, nbytes in (("copy", lambda a: scale(a), 8 * n), ("axpy", lambda a: axpy(a, b),
                                                                   12 * n)):
    a = fn(a).block_until_ready()
    times = []
    for _ in range(reps):
      t = time.perf_counter()
      a = fn(a).block_until_ready()
      times.append(time.perf_counter() - t)
    out[name] = nbytes / np.median(times) / 1e9
  out["best"] = max(out["copy"], out["axpy"])
  return out


def _matmul_flops(jaxpr) -> float:
  """2 * multiply-adds of the dot_generals and convolutions in `jaxpr` (nested ones included)."""
  total = 0.0
  for eqn in _matmul_eqns(jaxpr):
    if eqn.primitive.name == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in lc])
    else:
      rhs = eqn.invars[1].aval.shape
      spec = eqn.params["dimension_numbers"].rhs_spec      # (out, in, spatial...)
      per_out = np.prod([rhs[d] for d in spec[1:]])        # Cin / groups * kernel window
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * per_out
  return total


def model_steps(keep: np.ndarray, batch_size: int) -> int:
  """The model-steps of an epoch with real examples: each model's ceil(kept / batch), summed."""
  return int(np.ceil(keep.sum(1) / batch_size).sum())


def step_costs(model, tx, x, batch_size: int) -> dict:
  """What bounds one plain single-model train step: its matmul FLOPs (dots and convolutions),
  the parameters, and the bytes Adam and the batch gather must move."""
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  step = functools.partial(steps.train_step, model=model, tx=tx, cfg=steps.StepConfig())
  xb = jnp.asarray(x[:batch_size])
  jaxpr = jax.make_jaxpr(step)(state, xb, jnp.zeros(batch_size, jnp.int32),
                               jnp.ones(batch_size), jax.random.key(0))
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
  gather = 2 * (xb.size * 4 + batch_size * 4)           # read rows of the pool, write the batch
  return {"matmul_flops": _matmul_flops(jaxpr.jaxpr), "params": params,
          "adam_bytes": 7 * 4 * params, "gather_bytes": gather}


def _matmul_eqns(jaxpr) -> list:
  """The dot_general and conv_general_dilated equations of `jaxpr`, nested ones included."""
  return [eqn for eqn in strategies.jaxpr_eqns(jaxpr)
          if eqn.primitive.name in ("dot_general", "conv_general_dilated")]


class MatmulsAlone:
  """The dots (and convolutions) of one train step under `conv`, with their shapes, on random
  operands, alone: what the step's matmuls cost without the rest. They run `REPS` times in a
  loop in one program compiled as the loop's epoch program is (each output written to memory,
  each pass depending on the last), so that they pay for their buffers once, as there."""

  REPS = 8

  def __init__(self, model, tx, x, batch_size: int, conv: str):
    state = steps.init_state(model, tx, jax.random.key(0), x[:1])
    step = strategies.with_conv(functools.partial(steps.train_step, model=model, tx=tx,
                                                  cfg=steps.StepConfig()), conv)
    jaxpr = jax.make_jaxpr(step)(state, jnp.asarray(x[:batch_size]),
                                 jnp.zeros(batch_size, jnp.int32), jnp.ones(batch_size),
                                 jax.random.key(0))
    eqns = _matmul_eqns(jaxpr.jaxpr)
    rng = np.random.default_rng(0)
    self.operands = [[jnp.asarray(rng.normal(size=v.aval.shape).astype(v.aval.dtype))
                      for v in e.invars] for e in eqns]

    def once(ops, outs):
      # A pass depends on the last one's outputs (no hoisting out of the loop) by a factor
      # that rounds to 1.
      tie = 1 + 1e-30 * sum(o.ravel()[0] for o in outs)
      return [e.primitive.bind(o[0] * tie, *o[1:], **e.params) for e, o in zip(eqns, ops)]

    def run(ops):
      outs = [jnp.zeros(v.aval.shape, v.aval.dtype) for e in eqns for v in e.outvars]
      return jax.lax.fori_loop(0, self.REPS, lambda i, outs: once(ops, outs), outs)
    options = (dict(strategies._cpu_compiler_options())  # pylint: disable=protected-access
               if jax.default_backend() == "cpu" else None)
    self.fn = jax.jit(run, compiler_options=options)
    self.flops = _matmul_flops(jaxpr.jaxpr)
    jax.block_until_ready(self.fn(self.operands))

  def seconds(self, reps: int = 3) -> float:
    return _timed(self.fn, (self.operands,), reps) / self.REPS


def bound(flops: float, costs: dict, peak_gflops: float, bw_gbs: float) -> dict:
  """The roofline time of a model-step and the best attainable FLOP/s fraction of the peak."""
  t_mm = costs["matmul_flops"] / (peak_gflops * 1e9)
  t_mem = (costs["adam_bytes"] + costs["gather_bytes"]) / (bw_gbs * 1e9)
  return {"matmul_ms": 1e3 * t_mm, "memory_ms": 1e3 * t_mem, "step_ms": 1e3 * (t_mm + t_mem),
          "fraction": flops / (t_mm + t_mem) / (peak_gflops * 1e9)}


def step_flops(model, tx, x, batch_size: int) -> float:
  """XLA's FLOP count of one plain (lax convolution) single-model train step."""
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, cfg=steps.StepConfig()))
  xb = jnp.asarray(x[:batch_size])
  cost = step.lower(state, xb, jnp.zeros(batch_size, jnp.int32), jnp.ones(batch_size),
                    jax.random.key(0)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


class Runner:
  """One strategy's ensemble, ready to run epochs (compiled on the first)."""

  def __init__(self, strategy, model, x, y, keep, cfg, step_cfg=steps.StepConfig()):
    self.strategy, self.keep, self.cfg = strategy, keep, cfg
    self.spe = ensemble.steps_per_epoch(keep, cfg.batch_size)
    tx = optim.make_optimizer(cfg, self.spe)
    self.ids = np.arange(keep.shape[0], dtype=np.int32)
    state = ensemble.init_ensemble(model, tx, 0, keep.shape[0], jnp.asarray(x[:1]), self.ids)
    self.state = strategy.running(jax.tree.map(np.asarray, state))
    self.run = strategy.epoch_fn(model, tx, step_cfg)
    self.px, self.py = strategy.replicate((x, y))
    self.model_ids = strategy.put(self.ids)
    self.active = strategy.put(np.ones(keep.shape[0], np.float32))

  def epoch(self, e: int) -> float:
    t = time.perf_counter()
    idx, mask = ensemble.epoch_batches(self.keep, self.cfg.batch_size, 0, e, self.ids)
    self.state, metrics = self.run(self.state, self.px, self.py, self.strategy.put(idx, axis=1),
                                   self.strategy.put(mask, axis=1), self.model_ids, np.uint32(0),
                                   np.int32(e * self.spe), self.active)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - t


BASE = "loop (lax), jit per step"       # the sequential baseline: the former loop
CONVS = ("lax", "im2col", "forward")     # the convolutions of the CNN breakdown


def compare(name: str, variants: dict, num_models: int, pool: int, rounds: int, peak: float,
            log) -> dict:
  """Times one epoch of each variant, side by side, `rounds` times; returns per variant the
  median seconds, speed-up over the loop (the former one, step by step, lax convolutions),
  FLOP/s fraction of the matmul peak and of the roofline bound (peak and bandwidth measured in
  the same rounds)."""
  model, x, y, keep = workload(name, num_models, pool)
  cfg = train_config()
  flops = step_flops(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size)
  costs = step_costs(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size)
  alone_conv = strategies.resolve("auto", model, x[:1]).conv
  alone = MatmulsAlone(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size, alone_conv)
  real_steps = model_steps(keep, cfg.batch_size)
  epoch_flops = flops * real_steps
  runners, times = {}, {}
  for label, strat in variants.items():
    t = time.perf_counter()
    runners[label] = Runner(strat, model, x, y, keep, cfg)
    runners[label].epoch(0)
    times[label] = []
    log(f"{name} {label}: compiled and warmed up in {time.perf_counter() - t:.1f}s")
  peaks, bws, alone_s = [], [], []
  for r in range(rounds):
    peaks.append(matmul_peak(reps=3))
    bws.append(bandwidth(reps=3)["best"])
    alone_s.append(alone.seconds())
    for label, runner in runners.items():
      slow = label.startswith("shared") or label.startswith("vmap (lax")
      if slow and r >= 1:
        continue          # several times slower: one round is enough to show it
      times[label].append(runner.epoch(r + 1))
    log(f"{name} round {r + 1}: peak {peaks[-1]:.0f} GFLOP/s, {bws[-1]:.1f} GB/s, "
        + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
  base = np.median(times[BASE])
  peak, bw = float(np.median(peaks)), float(np.median(bws))
  roof = bound(flops, costs, peak, bw)
  rows = {}
  for label, ts in times.items():
    sec = float(np.median(ts))
    frac = epoch_flops / sec / 1e9 / peak
    rows[label] = {"strategy": variants[label].name, "seconds_per_epoch": sec,
                   "rounds": len(ts), "times": ts, "speedup_vs_loop": float(base / sec),
                   "gflops": epoch_flops / sec / 1e9, "peak_fraction": frac,
                   "ms_per_model_step": 1e3 * sec / real_steps,
                   "bound_fraction": frac / roof["fraction"]}
  alone_sec = float(np.median(alone_s))
  return {"models": num_models, "pool": pool, "batch_size": cfg.batch_size, "round_peaks": peaks,
          "peak_gflops": peak, "round_bandwidths": bws, "bandwidth_gbs": bw,
          "costs": costs, "bound": roof,
          "matmuls_alone": {"conv": alone_conv, "ms": 1e3 * alone_sec, "flops": alone.flops,
                            "peak_fraction": alone.flops / alone_sec / 1e9 / peak},
          "flops_per_model_step": flops, "real_steps_per_epoch": real_steps, "rows": rows}


def _timed(fn, args, reps: int = 3) -> float:
  """Median seconds of `reps` calls of the jitted fn (after one warm-up call)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def cnn_breakdown(rounds: int, log, batch: int = 128) -> dict:
  """Where one step of the Fashion-MNIST CNN spends its time: each piece jitted on its own
  (a gradient from the piece's inputs and the output's cotangent, the output itself not
  returned), under each of the strategies' convolutions (lax; im2col; forward: gradients as
  forward convolutions; max-pooling as a reshape and a max under both rewrites), timed side by
  side. Each piece runs as its own program: it pays for its buffers at every call, which the
  loop's epoch program allocates once."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32))
  pool = lambda y: nn.max_pool(nn.relu(y), (2, 2), strides=(2, 2))
  fns, args = {}, {}
  for tag, h, cin, cout in (("conv 1 (1 -> 32, 28x28)", 28, 1, 32),
                            ("conv 2 (32 -> 64, 14x14)", 14, 32, 64)):
    layer = nn.Conv(cout, (3, 3), padding="SAME")
    x, dy, g = normal(batch, h, h, cin), normal(batch, h, h, cout), normal(batch, h // 2,
                                                                          h // 2, cout)
    params = layer.init(jax.random.key(0), x)
    fwd = lambda p, x, layer=layer: layer.apply(p, x)
    pieces = {"forward": (fwd, (params, x)),
              "weight grad": (lambda p, x, dy, fwd=fwd: jax.vjp(lambda p: fwd(p, x), p)[1](dy),
                              (params, x, dy)),
              "relu + max-pool": (pool, (dy,)),
              "relu + max-pool grad": (lambda y, g: jax.vjp(pool, y)[1](g), (dy, g))}
    if cin > 1:
      pieces["input grad"] = (lambda p, x, dy, fwd=fwd: jax.vjp(lambda x: fwd(p, x), x)[1](dy),
                              (params, x, dy))
    for piece, (fn, a) in pieces.items():
      for conv in CONVS:
        fns[tag, piece, conv] = jax.jit(strategies.with_conv(fn, conv))
        args[tag, piece, conv] = a
  model = cnn.CNN(channels=(32, 64), num_classes=10, dense=128)
  tx = optim.make_optimizer(train_config(), 1)
  state = steps.init_state(model, tx, jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
  xb, yb = normal(batch, 28, 28, 1), jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
  step = functools.partial(steps.train_step, model=model, tx=tx, cfg=steps.StepConfig())
  grads = jax.tree.map(jnp.ones_like, state.params)
  adam = lambda g, o, p: (lambda u, o2: (optax.apply_updates(p, u), o2))(*tx.update(g, o, p))
  for conv in CONVS:
    fns["step", "whole train step", conv] = jax.jit(strategies.with_conv(step, conv))
    args["step", "whole train step", conv] = (state, xb, yb, jnp.ones(batch), jax.random.key(0))
    fns["step", "Adam update (28k parameters)", conv] = jax.jit(adam)
    args["step", "Adam update (28k parameters)", conv] = (grads, state.opt_state, state.params)
  times = {k: [] for k in fns}
  for r in range(rounds):
    for k, fn in fns.items():
      times[k].append(_timed(fn, args[k]))
    log(f"cnn breakdown round {r + 1} done")
  ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
  rows = [{"piece": piece if tag == "step" else f"{tag}: {piece}",
           **{c: ms[tag, piece, c] for c in CONVS}}
          for tag, piece, conv in ms if conv == "lax"]
  return {"batch": batch, "rows": rows, "ms": {" | ".join(k): v for k, v in ms.items()}}


def scaling(sizes, pool: int, rounds: int, peak: float, log) -> dict:
  model, x, y, _ = workload("mlp", max(sizes), pool)
  cfg = train_config()
  strat = strategies.resolve("auto", model, x[:1])
  flops = step_flops(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size)
  runners = {}
  for m in sizes:
    keep = membership.keep_matrix(0, m, pool, 0.5)
    runners[m] = Runner(strat, model, x, y, keep, cfg)
    runners[m].epoch(0)
  times = {m: [] for m in sizes}
  peaks = []
  for r in range(rounds):
    peaks.append(matmul_peak(reps=1))
    for m in sizes:
      times[m].append(runners[m].epoch(r + 1))
    log(f"scaling round {r + 1}: " + ", ".join(f"M={m} {v[-1]:.2f}s" for m, v in times.items()))
  out = {}
  peak = float(np.median(peaks))
  for m in sizes:
    sec = float(np.median(times[m]))
    real = model_steps(runners[m].keep, cfg.batch_size)
    out[m] = {"seconds_per_epoch": sec, "seconds_per_model": sec / m, "times": times[m],
              "peak_fraction": flops * real / sec / 1e9 / peak}
  per_model = [v["seconds_per_model"] for v in out.values()]
  return {"strategy": strat.name, "pool": pool, "sizes": out, "peak_gflops": peak,
          "max_over_min_seconds_per_model": float(max(per_model) / min(per_model))}


def one_core(rounds: int, pool: int, num_models: int = 16) -> dict | None:
  """What lanes can reach at best: the MLP epoch (loop, one lane, the pool of the main table)
  in a fresh process pinned to one core, against that core's matmul peak, side by side.
  Lanes run one program per core at once; with perfect packing, two cores do twice one core's
  work, so the step's fraction of one core's peak bounds theirs (if two cores' peak is twice
  one core's). None where a process cannot be pinned (os.sched_setaffinity is Linux's)."""
  if not hasattr(os, "sched_setaffinity"):
    return None
  code = (f"import os, json, sys; os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}});"
          f"sys.argv = ['x'];"
          f"import numpy as np; from experiments import bench_ensemble as b;"
          f"from mia_jax.training import strategies, optim;"
          f"model, x, y, keep = b.workload('mlp', {num_models}, {pool}); cfg = b.train_config();"
          f"run = b.Runner(strategies.resolve('loop', model, x[:1], lanes=1), model, x, y, keep,"
          f" cfg); run.epoch(0);"
          f"flops = b.step_flops(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size);"
          f"real = b.model_steps(keep, cfg.batch_size);"
          f"peaks, times = [], [];"
          f"[(peaks.append(b.matmul_peak(reps=3)), times.append(run.epoch(r + 1))) "
          f"for r in range({rounds})];"
          f"print(json.dumps(dict(peaks=peaks, times=times, flops=flops, real=real, "
          f"cpus=len(os.sched_getaffinity(0)))))")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                                  text=True, check=True).stdout.splitlines()[-1])
  sec, peak = float(np.median(out["times"])), float(np.median(out["peaks"]))
  return {"models": num_models, "pool": pool, "cpus": out["cpus"], "round_peaks": out["peaks"],
          "peak_gflops": peak, "times": out["times"], "seconds_per_epoch": sec,
          "ms_per_model_step": 1e3 * sec / out["real"],
          "peak_fraction": out["flops"] * out["real"] / sec / 1e9 / peak}


def epoch_length(pools, rounds: int, log, num_models: int = 16) -> dict:
  """The MLP under auto at several pool sizes, side by side: an epoch's costs that do not grow
  with its steps (each model's state sliced out of its lane's stacked state and written back:
  about 2.6 ms for the Purchase100 MLP, timing one lane's epoch program with no steps to run;
  the host's batches; the lanes' start and uneven ends) weigh less as each model takes more
  steps per epoch (a Purchase100 shadow model on its 79k examples takes 617 at batch 128)."""
  cfg = train_config()
  runners, steps_, times, peaks = {}, {}, {}, []
  for pool in pools:
    model, x, y, keep = workload("mlp", num_models, pool)
    runners[pool] = Runner(strategies.resolve("auto", model, x[:1]), model, x, y, keep, cfg)
    runners[pool].epoch(0)
    steps_[pool] = model_steps(keep, cfg.batch_size)
    times[pool] = []
  flops = step_flops(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size)
  for r in range(rounds):
    peaks.append(matmul_peak(reps=3))
    for pool, run in runners.items():
      times[pool].append(run.epoch(r + 1))
    log(f"epoch length round {r + 1}: peak {peaks[-1]:.0f}, "
        + ", ".join(f"pool {p} {v[-1]:.2f}s" for p, v in times.items()))
  peak = float(np.median(peaks))
  rows = {}
  for pool in pools:
    sec = float(np.median(times[pool]))
    rows[pool] = {"model_steps_per_epoch": steps_[pool], "seconds_per_epoch": sec,
                  "times": times[pool], "ms_per_model_step": 1e3 * sec / steps_[pool],
                  "peak_fraction": flops * steps_[pool] / sec / 1e9 / peak}
  return {"models": num_models, "strategy": runners[pools[0]].strategy.name,
          "round_peaks": peaks, "peak_gflops": peak, "pools": rows}


def dp_cnn(rounds: int, log, num_models: int = 4, pool: int = 512) -> dict:
  """DP-SGD CNNs (GroupNorm) per epoch: DP's former path, the loop with forward convolutions
  and auto, auto with GroupNorm's former rule in fast clipping (per-example gradients by a vmap
  of the layer's VJP, restored by patching ghost._site_kind), and the same models without DP
  under auto, side by side."""
  import contextlib  # pylint: disable=g-import-not-at-top
  from unittest import mock  # pylint: disable=g-import-not-at-top
  from mia_jax.privacy import ghost  # pylint: disable=g-import-not-at-top
  from mia_jax.training import dp as dp_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.random((pool, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, pool).astype(np.int32)
  keep = membership.keep_matrix(0, num_models, pool, 0.5)
  model = cnn.CNN(channels=(32, 64), num_classes=10, dense=128, norm="group")
  cfg = train_config()
  dp_step = steps.StepConfig(dp=dp_lib.DPStepConfig(clip_norm=1.0, noise_multiplier=1.0,
                                                    expected_batch_size=128.0))
  auto = strategies.resolve("auto", model, x[:1])
  kind = ghost._site_kind  # pylint: disable=protected-access
  former_group_norm = lambda: mock.patch.object(
      ghost, "_site_kind", lambda *a: "generic" if kind(*a) == "group_norm" else kind(*a))
  variants = {"DP, loop (lax), one jitted step at a time: the former path":
                  (strategies.Strategy("loop", "lax"), dp_step),
              "DP, loop (forward convolutions)": (strategies.Strategy("loop", "forward"), dp_step),
              "DP, auto": (auto, dp_step),
              "DP, auto, GroupNorm by vmap of its VJP (the former rule)":
                  (auto, dp_step, former_group_norm),
              "no DP, auto": (auto, steps.StepConfig())}
  runners, times = {}, {}
  for label, (strat, step_cfg, *patch) in variants.items():
    with (patch[0]() if patch else contextlib.nullcontext()):    # while the step is traced
      runners[label] = Runner(strat, model, x, y, keep, cfg, step_cfg)
      runners[label].epoch(0)
    times[label] = []
  for r in range(rounds):
    for label, runner in runners.items():
      times[label].append(runner.epoch(r + 1))
    log(f"dp cnn round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
  first = next(iter(times))
  base = float(np.median(times[first]))
  plain = float(np.median(times["no DP, auto"]))
  return {"models": num_models, "pool": pool, "batch_size": cfg.batch_size,
          "rows": {label: {"strategy": variants[label][0].name,
                           "seconds_per_epoch": float(np.median(ts)), "times": ts,
                           "speedup_vs_former": base / float(np.median(ts)),
                           "vs_no_dp": float(np.median(ts)) / plain}
                   for label, ts in times.items()}}


def rss_of_training(num_models: int, pool: int) -> dict:
  """Peak RSS (VmHWM: ru_maxrss would carry the parent's over exec) of a fresh process
  training `num_models` MLPs for two epochs with train_ensemble."""
  code = (f"import time, numpy as np, sys; sys.argv=['x'];"
          f"from experiments import bench_ensemble as b; from mia_jax.training import ensemble;"
          f"model, x, y, keep = b.workload('mlp', {num_models}, {pool});"
          f"t = time.perf_counter();"
          f"r = ensemble.train_ensemble(model, b.train_config(epochs=2), x, y, keep, seed=0, "
          f"log=lambda s: None);"
          f"hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
          f"print(hwm, time.perf_counter() - t, "
          f"r.history[-1]['seconds'], r.strategy)")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       check=True).stdout.split()
  params = 1_317_672 * num_models
  return {"models": num_models, "peak_rss_mib": int(out[0]) / 1024, "train_s_two_epochs":
          float(out[1]), "strategy": out[3],
          "state_mib": params * 4 * 3 / 2 ** 20}   # params + Adam's two moments, float32


def float16_store(log) -> dict:
  """LiRA online scores of 4 targets from float16 vs float32 logits of trained MLPs."""
  model, x, y, keep = workload("mlp", 16, 2048, seed=1)
  cfg = train_config(epochs=8)
  res = ensemble.train_ensemble(model, cfg, x, y, keep, seed=0, log=lambda s: None)
  out = {}
  with tempfile.TemporaryDirectory() as d:
    for dt in ("float32", "float16"):
      out[dt] = inference.query_logits(model, res.state, x, "none", dtype=np.dtype(dt),
                                       out=os.path.join(d, f"{dt}.npy"))
  rows = {}
  for dt in ("float32", "float16"):
    data = attacks.AttackData(logits=np.asarray(out[dt]), labels=y, keep=keep)
    rows[dt] = attacks.run("lira_online", data, targets=[0, 1, 2, 3])
  diff = np.abs(rows["float16"] - rows["float32"])
  ev = {dt: [metrics.evaluate(rows[dt][t], keep[t]) for t in range(4)] for dt in rows}
  auc = {dt: [e["auc"] for e in ev[dt]] for dt in ev}
  tpr = {dt: [e["tpr_at_fpr"]["0.001"] for e in ev[dt]] for dt in ev}
  result = {"train_accuracy_mean": float(inference.accuracy(out["float32"], y, keep).mean()),
            "max_abs_score_diff": float(diff.max()),
            "median_abs_score_diff": float(np.median(diff)),
            "score_scale_median_abs": float(np.median(np.abs(rows["float32"]))),
            "max_abs_auc_diff": float(np.max(np.abs(np.subtract(auc["float16"], auc["float32"])))),
            "max_abs_tpr_at_0.1%_diff": float(np.max(np.abs(np.subtract(tpr["float16"],
                                                                       tpr["float32"])))),
            "auc_float32": auc["float32"], "auc_float16": auc["float16"]}
  log(f"float16 store: {result}")
  return result


def variants_for(name: str, model, sample_x) -> dict:
  rows = {BASE: strategies.Strategy("loop", "lax", epoch_jit=False)}
  if name == "cnn":
    rows["loop (im2col), jit per step"] = strategies.Strategy("loop", "im2col", epoch_jit=False)
    rows["loop (im2col)"] = strategies.Strategy("loop", "im2col")
    rows["loop (forward convolutions)"] = strategies.Strategy("loop", "forward")
    rows["loop (forward convolutions), 2 lanes"] = strategies.Strategy("loop", "forward", lanes=2)
    rows["vmap (lax conv)"] = strategies.Strategy("vmap", "lax")
    rows["vmap (im2col)"] = strategies.Strategy("vmap", "im2col")
    rows["shared (im2col)"] = strategies.Strategy("shared", "im2col")
  else:
    rows["loop (lax), 1 lane"] = strategies.Strategy("loop", "lax")
    rows["loop (lax), 2 lanes"] = strategies.Strategy("loop", "lax", lanes=2)
    rows["vmap"] = strategies.Strategy("vmap", "lax")
    rows["shared (one round)"] = strategies.Strategy("shared", "lax")
  rows["sharded (1 device)"] = strategies.resolve("sharded", model, sample_x)
  rows["auto"] = strategies.resolve("auto", model, sample_x)
  return rows


def padding_note(b: dict) -> str:
  if b["costs"]["matmul_flops"] <= b["flops_per_model_step"]:
    return ""
  return (" (a dense count, the zero padding of SAME convolutions included, which XLA's cost "
          f"analysis, {b['flops_per_model_step'] / 1e9:.2f}, leaves out)")


def c_alone_text(b: dict) -> str:
  a = b["matmuls_alone"]
  what = {"im2col": "dots (im2col)", "forward": "convolutions (forward) and dots"}.get(a["conv"],
                                                                                   "dots")
  return (f"{what} alone, with their shapes, in a loop in "
          f"one jitted function: {a['ms']:.2f} ms, {100 * a['peak_fraction']:.0f}% of the peak "
          f"({a['flops'] / 1e9:.3f} GFLOP).")


def markdown(r: dict) -> str:
  lines = [f"# Ensemble strategies on {r['machine']}", "",
           f"jax {r['jax']}, backend {r['backend']}, {r['devices']} device(s); float32 matmul "
           f"(2048 x 2048) peak measured in this run: {r['peak_gflops']:.1f} GFLOP/s at the "
           f"start, {r['peak_gflops_end']:.1f} at the end. Other people's work shared the "
           "machine: each time is the median over rounds in which every strategy ran one epoch "
           "in turn, and each FLOP/s fraction is of the peak measured in the same rounds.", "",
           "Command: `python -m experiments.bench_ensemble" + (" --quick`" if r["quick"] else "`"),
           ""]
  for name, title in (("mlp", "16 Purchase100 MLPs"), ("cnn", "16 Fashion-MNIST CNNs")):
    b = r[name]
    c, roof = b["costs"], b["bound"]
    lines += [f"## {title} (pool {b['pool']}, batch {b['batch_size']}, "
              f"{b['real_steps_per_epoch']} model-steps per epoch, "
              f"{b['flops_per_model_step'] / 1e9:.2f} GFLOP per model-step)", "",
              f"Matmul peak measured in each round: "
              f"{', '.join(f'{p:.0f}' for p in b['round_peaks'])} GFLOP/s (median "
              f"{b['peak_gflops']:.0f}: the fractions below are of it); memory bandwidth "
              f"(256 MiB float32, in-place scale or axpy): "
              f"{', '.join(f'{w:.1f}' for w in b['round_bandwidths'])} GB/s (median "
              f"{b['bandwidth_gbs']:.1f}).", "",
              f"Roofline bound of a model-step: {c['matmul_flops'] / 1e9:.3f} GFLOP of dots and "
              f"convolutions{padding_note(b)} / {b['peak_gflops']:.0f} GFLOP/s = "
              f"{roof['matmul_ms']:.2f} ms, + "
              f"(Adam {c['adam_bytes'] / 1e6:.1f} MB: 28 bytes for each of {c['params']:,} "
              f"parameters; batch gather {c['gather_bytes'] / 1e6:.2f} MB) / "
              f"{b['bandwidth_gbs']:.1f} GB/s = {roof['memory_ms']:.2f} ms: at least "
              f"{roof['step_ms']:.2f} ms, so at most **{100 * roof['fraction']:.0f}%** of the "
              f"matmul peak (the bound column) for one program at a time; lanes, which run two "
              f"at once, may overlap one's memory traffic with the other's matmuls. The step's "
              f"{c_alone_text(b)}", "",
              "| strategy | resolves to | s / epoch | rounds | vs sequential loop | ms / model-step "
              "| GFLOP/s | of matmul peak | bound | of bound |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for label, row in b["rows"].items():
      lines.append(f"| {label} | {row['strategy']} | {row['seconds_per_epoch']:.2f} | "
                   f"{row['rounds']} | {row['speedup_vs_loop']:.2f}x | "
                   f"{row['ms_per_model_step']:.1f} | {row['gflops']:.1f} | "
                   f"{100 * row['peak_fraction']:.0f}% | {100 * roof['fraction']:.0f}% | "
                   f"{100 * row['bound_fraction']:.0f}% |")
    lines.append("")
  if "one_core" in r or "epoch_length" in r:
    lines.append("## What bounds the MLP\n")
  if "one_core" in r:
    o, mlp = r["one_core"], r["mlp"]
    auto = mlp["rows"]["auto"]
    lines += [f"One core: a fresh process pinned to {o['cpus']} core ran the same {o['models']} "
              f"MLPs (loop, one lane, pool {o['pool']}) at {o['ms_per_model_step']:.1f} ms per "
              f"model-step: **{100 * o['peak_fraction']:.0f}%** of that core's matmul peak "
              f"({', '.join(f'{p:.0f}' for p in o['round_peaks'])} GFLOP/s in its rounds, median "
              f"{o['peak_gflops']:.0f}; twice it is {2 * o['peak_gflops']:.0f}, against "
              f"{mlp['peak_gflops']:.0f} for both cores in the main table). Lanes run one program "
              f"per core at once, so they reach that fraction at best (two cores' peak being "
              f"twice one core's); auto reached {100 * auto['peak_fraction']:.0f}%, "
              f"{auto['peak_fraction'] / o['peak_fraction']:.0%} of it. The step's work "
              f"besides its dots (Adam's memory traffic above all) costs a lane's core as much "
              f"time as it costs the pinned process's.", ""]
  if "epoch_length" in r:
    e = r["epoch_length"]
    lines += [f"Epoch length: auto ({e['strategy']}) at two pool sizes, side by side (matmul peak "
              f"{e['peak_gflops']:.0f} GFLOP/s, median of its rounds). An epoch's costs that do "
              "not grow with its steps (each model's state sliced out of its lane's stacked "
              "state and written back, the host's batches, the lanes' start and uneven ends) "
              "weigh less when each model takes more steps (a Purchase100 shadow model on its "
              "79k examples takes 617 an epoch at batch 128).", "",
              "| pool | model-steps per epoch | s / epoch | ms / model-step | of matmul peak |",
              "|---|---|---|---|---|"]
    for pool, row in e["pools"].items():
      lines.append(f"| {pool} | {row['model_steps_per_epoch']} | {row['seconds_per_epoch']:.2f} "
                   f"| {row['ms_per_model_step']:.2f} | {100 * row['peak_fraction']:.0f}% |")
    lines.append("")
  if "cnn_breakdown" in r:
    bd = r["cnn_breakdown"]
    lines += [f"## Where a CNN step's time goes (batch {bd['batch']}, each piece jitted on its "
              "own, median ms)", "",
              "A gradient is computed from the piece's inputs and the output's cotangent (under "
              "im2col the weight gradient builds the im2col matrix again, which a whole step "
              "shares with the forward; under forward it is a forward convolution of the input "
              "and the cotangent, both transposed). Each piece is its own program, which pays "
              "for its buffers at every call: an epoch program allocates them once, so these "
              "times only rank the pieces.", "",
              "| piece | " + " | ".join(c for c in CONVS if c in bd["rows"][0]) + " |",
              "|---|" + "---|" * sum(c in bd["rows"][0] for c in CONVS)]
    for row in bd["rows"]:
      lines.append(f"| {row['piece']} | "
                   + " | ".join(f"{row[c]:.1f}" for c in CONVS if c in row) + " |")
    lines.append("")
  if "dp_cnn" in r:
    d = r["dp_cnn"]
    lines += [f"## DP-SGD CNNs ({d['models']} CNNs with GroupNorm, pool {d['pool']}, batch "
              f"{d['batch_size']}, fast clipping, sigma 1, C 1)", "",
              "The former path's row runs today's DP step with lax convolutions, one jitted step "
              "at a time: its ghost norms take their patches as shifted slices, as every row's "
              "do (before, as lax's patches convolution), so it isolates the rewrite of the "
              "convolutions. The auto row checks what auto resolves to. The GroupNorm row "
              "restores the former rule of fast clipping for GroupNorm (per-example gradients by "
              "a vmap of the layer's VJP, which runs its forward and backward again) in place of "
              "sums over positions of delta * xhat and delta.", "",
              "| variant | resolves to | s / epoch | vs the former path | vs no DP |",
              "|---|---|---|---|---|"]
    for label, row in d["rows"].items():
      lines.append(f"| {label} | {row['strategy']} | {row['seconds_per_epoch']:.2f} | "
                   f"{row['speedup_vs_former']:.2f}x | {row['vs_no_dp']:.2f}x |")
    lines.append("")
  s = r["scaling"]
  lines += [f"## Scaling, MLP under auto ({s['strategy']}), pool {s['pool']}, matmul peak "
            f"{s['peak_gflops']:.0f} GFLOP/s", "",
            "| M | s / epoch | s / model | of matmul peak |", "|---|---|---|---|"]
  for m, v in s["sizes"].items():
    lines.append(f"| {m} | {v['seconds_per_epoch']:.2f} | {v['seconds_per_model']:.3f} | "
                 f"{100 * v['peak_fraction']:.0f}% |")
  lines += ["", f"Seconds per model, largest over smallest: "
            f"{s['max_over_min_seconds_per_model']:.3f} (linear within 10% if <= 1.10).", ""]
  m = r["memory"]
  lines += [f"Peak RSS of a fresh process training M = {m['models']} MLPs for two epochs "
            f"({m['strategy']}): **{m['peak_rss_mib']:.0f} MiB** (parameters and Adam moments: "
            f"{m['state_mib']:.0f} MiB); {m['train_s_two_epochs']:.1f}s with compilation.", ""]
  mlp_rows, cnn_rows = r["mlp"]["rows"], r["cnn"]["rows"]
  ratio = {k: v["rows"]["auto"]["speedup_vs_loop"] for k, v in (("mlp", r["mlp"]),
                                                                  ("cnn", r["cnn"]))}
  ok = lambda c: "met" if c else "**not met**"
  lines += ["## Goals", "",
            "| goal | measured | |", "|---|---|---|",
            f"| auto never slower than the sequential loop (the former loop: lax, one jitted "
            f"step at a time) | MLP {ratio['mlp']:.2f}x, CNN {ratio['cnn']:.2f}x | "
            f"{ok(ratio['mlp'] >= 0.95 and ratio['cnn'] >= 1.0)} |",
            f"| CNN: auto at least 1.5x faster than the loop | {ratio['cnn']:.2f}x | "
            f"{ok(ratio['cnn'] >= 1.5)} |",
            f"| MLP: at least 70% of the matmul peak | "
            f"{100 * max(v['peak_fraction'] for v in mlp_rows.values()):.0f}% (best strategy; "
            f"{100 * max(v['peak_fraction'] for v in s['sizes'].values()):.0f}% in the scaling "
            f"rounds); the roofline bound of one program with Adam at batch 128 on this CPU is "
            f"{100 * r['mlp']['bound']['fraction']:.0f}%"
            + (f", and one core alone runs the step at {100 * r['one_core']['peak_fraction']:.0f}%"
               f" of its own peak, the most lanes can reach" if "one_core" in r else "")
            + " | "
            f"{ok(max(v['peak_fraction'] for v in mlp_rows.values()) >= 0.7)} |",
            f"| CNN: at least 40% of the matmul peak | "
            f"{100 * max(v['peak_fraction'] for v in cnn_rows.values()):.0f}% (best strategy; "
            f"bound {100 * r['cnn']['bound']['fraction']:.0f}%) | "
            f"{ok(max(v['peak_fraction'] for v in cnn_rows.values()) >= 0.4)} |",
            f"| MLP time linear in M within 10% | {s['max_over_min_seconds_per_model']:.3f} | "
            f"{ok(s['max_over_min_seconds_per_model'] <= 1.1)} |", ""]
  f = r["float16"]
  lines += ["## float16 logits store (LiRA online, 4 targets, 16 MLPs)", "",
            f"Scores differ by at most {f['max_abs_score_diff']:.3g} (median "
            f"{f['median_abs_score_diff']:.2g}; median |score| {f['score_scale_median_abs']:.3g});"
            f" AUC by at most {f['max_abs_auc_diff']:.2g}; TPR at 0.1% FPR by at most "
            f"{f['max_abs_tpr_at_0.1%_diff']:.2g}.", ""]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=os.path.join(RESULTS, "bench_ensemble"))
  p.add_argument("--markdown_only", action="store_true",
                 help="rewrite OUT.md from OUT.json without measuring")
  args = p.parse_args(argv)
  if args.markdown_only:
    with open(args.out + ".json") as f:
      result = json.load(f)
    with open(args.out + ".md", "w") as f:
      f.write(markdown(result))
    return
  log = lambda s: print(s, flush=True)
  t0 = time.perf_counter()
  rounds = 1 if args.quick else 5
  peak = matmul_peak(1024 if args.quick else 2048)
  log(f"matmul peak {peak:.1f} GFLOP/s")
  result = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": jax.device_count(), "quick": args.quick, "peak_gflops": peak}
  for name, pool in (("mlp", 1024 if args.quick else 2048), ("cnn", 256 if args.quick else 512)):
    model, x, _, _ = workload(name, 16, 8)
    result[name] = compare(name, variants_for(name, model, x[:1]), 16, pool, rounds, peak, log)
  mlp_pool = result["mlp"]["pool"]
  one = one_core(rounds, mlp_pool)
  if one is not None:
    result["one_core"] = one
    log(f"one core: {one}")
  result["epoch_length"] = epoch_length((mlp_pool, 8 * mlp_pool), rounds, log)
  result["cnn_breakdown"] = cnn_breakdown(rounds, log)
  result["dp_cnn"] = dp_cnn(rounds, log, pool=256 if args.quick else 512)
  result["scaling"] = scaling((8, 16) if args.quick else (8, 16, 32, 64),
                              1024 if args.quick else 2048, rounds, peak, log)
  result["memory"] = rss_of_training(16 if args.quick else 64, 1024 if args.quick else 2048)
  log(f"memory: {result['memory']}")
  result["float16"] = float16_store(log)
  result["peak_gflops_end"] = matmul_peak(1024 if args.quick else 2048)
  result["total_s"] = time.perf_counter() - t0
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(result, f, indent=1, default=float)
  with open(args.out + ".md", "w") as f:
    f.write(markdown(result))
  log(markdown(result))
  log(f"total {result['total_s']:.0f}s")


if __name__ == "__main__":
  main()
