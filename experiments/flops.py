"""FLOP counting and the matmul peak, shared by the benches (experiments/bench_*.py).

  matmul_peak()                 float32 GFLOP/s of a jitted 2048 x 2048 matmul on this machine
  cost_flops(fn, *args)         XLA's cost analysis of jit(fn) on args: its FLOPs
  matmul_flops(fn, *args)       2 * multiply-adds of the dot_generals and convolutions of fn's
                                jaxpr (nested jaxprs included): a dense count
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from mia_jax.mapping import xla_cpu


def matmul_peak(n: int = 2048, reps: int = 3) -> float:
  """float32 matmul GFLOP/s (the median of `reps` calls after a warm-up)."""
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / float(np.median(times)) / 1e9


def cost_flops(fn, *args) -> float:
  """The FLOPs of jit(fn)(*args) by XLA's cost analysis of the compiled program."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis["flops"])


def matmul_flops(fn, *args) -> float:
  """2 * multiply-adds of the dot_generals and convolutions of fn's jaxpr on args."""
  total = 0.0
  for eqn in xla_cpu.jaxpr_eqns(jax.make_jaxpr(fn)(*args).jaxpr):
    out = np.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if eqn.primitive.name == "dot_general":
      (contracting, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * out * np.prod([lhs[d] for d in contracting])
    elif eqn.primitive.name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      spec = eqn.params["dimension_numbers"].rhs_spec      # (out, in, spatial...)
      total += 2.0 * out * np.prod([rhs[d] for d in spec[1:]])
  return total
