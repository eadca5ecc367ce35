"""Lanes: groups of models trained at once, each group's work in its own thread.

XLA:CPU runs a program in the thread that calls it, and one program alone leaves the cores
idle part of the time (between its kernels, and in kernels that run on one thread): two at once
fill them. Every task computes what it would alone, so results do not depend on the lanes.
JAX's thread-local settings (`with jax.default_matmul_precision(...)`, `jax.default_device`,
`jax.enable_x64` as contexts) do not reach the lanes' threads: the loop compiles each program
in the calling thread first, but one retraced in a lane would not see them. Set such options
globally (jax.config.update), or train with one lane.
"""

import concurrent.futures
from typing import Callable

import numpy as np


def lane_bounds(num_models: int, lanes: int) -> tuple:
  """The models [lo, hi) of each lane: contiguous groups, as equal in size as can be."""
  edges = np.linspace(0, num_models, min(lanes, num_models) + 1).round().astype(int)
  return tuple((int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]))


def in_lanes(tasks: list[Callable], lanes: int) -> list:
  """Runs `tasks` (callables without arguments, independent of each other) in `lanes` threads,
  each taking the next task when done with its last; the results in the order of `tasks`."""
  if lanes <= 1 or len(tasks) <= 1:
    return [task() for task in tasks]
  with concurrent.futures.ThreadPoolExecutor(lanes, thread_name_prefix="mia_jax-lane") as pool:
    return list(pool.map(lambda task: task(), tasks))
