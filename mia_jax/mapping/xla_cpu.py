"""XLA:CPU facts the loop mapping acts on: its compiler options, and the primitives it runs
slowly inside a loop (measurements: experiments/results/bench_ensemble.md).

Options of the loop's whole-epoch program:
  - region-analysis copy insertion lets the parameter and optimizer-moment updates write in
    place (without it XLA copies params and moments every step);
  - YNNPACK (XLA:CPU's kernel library) for dots and reductions only: its convolutions ran
    slower than XLA's own when their output is written to memory.
Options this jaxlib does not know are left out (`known_options`, tried on a trivial program).

Slow in loops: autodiff's convolution gradients (transposed, grouped or dilated convolutions)
and pooling windows with their gradients. A plain forward convolution (NHWC input, HWIO
kernel, no groups or dilations: what mia_jax.kernels' 'forward' rewrite computes, gradients
included) runs at its speed inside a loop.
"""

import functools

import jax
import numpy as np

CPU_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True,
                        "xla_cpu_experimental_ynn_fusion_type":
                            "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}

SLOW_IN_LOOPS = frozenset({"conv_general_dilated", "reduce_window", "reduce_window_sum",
                           "reduce_window_max", "reduce_window_min", "select_and_scatter_add",
                           "select_and_gather_add", "select_and_scatter"})
_FORWARD_CONV_DIMS = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                                  out_spec=(0, 3, 1, 2))


def known_options(options: dict) -> tuple:
  """The (name, value) entries of `options` this XLA accepts, each tried on a trivial program."""
  known = []
  for name, value in options.items():
    try:
      jax.jit(lambda v: v + 1, compiler_options={name: value}).lower(np.float32(0)).compile()
      known.append((name, value))
    except Exception:  # pylint: disable=broad-except
      pass
  return tuple(known)


@functools.cache
def loop_options() -> dict | None:
  """The compiler options of the loop's epoch program: the known CPU_COMPILER_OPTIONS on a CPU
  backend, None elsewhere."""
  if jax.default_backend() != "cpu":
    return None
  return dict(known_options(CPU_COMPILER_OPTIONS))


def _forward_conv(eqn) -> bool:
  """Whether `eqn` is a plain forward convolution XLA:CPU runs at its speed inside a loop."""
  params = eqn.params
  return (eqn.primitive.name == "conv_general_dilated"
          and params["dimension_numbers"] == _FORWARD_CONV_DIMS
          and params["feature_group_count"] == 1 and params["batch_group_count"] == 1
          and all(d == 1 for d in tuple(params["lhs_dilation"]) + tuple(params["rhs_dilation"])))


def jaxpr_eqns(jaxpr):
  """Every equation of `jaxpr` and of every jaxpr nested in it (loops, calls, custom rules)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in (value if isinstance(value, (tuple, list)) else (value,)):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from jaxpr_eqns(sub)


def slow_in_loops(jaxpr) -> bool:
  """Whether `jaxpr` (or a jaxpr nested in it) holds a primitive XLA:CPU runs slowly in a loop."""
  return any(eqn.primitive.name in SLOW_IN_LOOPS and not _forward_conv(eqn)
             for eqn in jaxpr_eqns(jaxpr))
