"""Which mapping and which convolutions: `resolve` turns a strategy name into them, by backend
and model family where asked ('auto'). Measurements behind the choices:
experiments/results/bench_ensemble.md.

  several devices   sharded (vmap within each device)
  one GPU / TPU     vmap
  one CPU           loop: one model's step already fills the cores, and the loop skips the
                    empty steps of models whose examples ran out; models with convolutions
                    get conv='forward' (im2col under the mappings that batch models, where a
                    vmapped convolution becomes a grouped one); models without them two lanes.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mia_jax import kernels
from mia_jax.errors import ConfigError
from mia_jax.mapping import loop, shared, sharded, vmap

MAPPINGS = ("vmap", "loop", "shared", "sharded")
STRATEGIES = MAPPINGS + ("auto",)
CONVS = kernels.CONVS
CPU_LANES = 2     # lanes of the loop on a CPU for models without convolutions


@dataclasses.dataclass(frozen=True)
class Strategy:
  """A resolved strategy: the mapping object and the convolution rewrite (kernels.CONVS)."""
  mapping: Any
  conv: str = "lax"

  @property
  def name(self) -> str:
    """e.g. 'loop+forward', 'loop+2lanes', 'vmap+im2col'."""
    base, _, lanes = self.mapping.name.partition("+")
    name = base + ("" if self.conv == "lax" else "+" + self.conv)
    return name + ("+" + lanes if lanes else "")

  @property
  def lanes(self) -> int:
    return getattr(self.mapping, "lanes", 1)


def make_mapping(name: str, lanes: int = 1):
  """The mapping object of `name` in MAPPINGS."""
  if not isinstance(lanes, (int, np.integer)) or lanes < 1:
    raise ConfigError(f"lanes={lanes!r} must be an integer >= 1")
  if name == "loop":
    return loop.Loop(int(lanes))
  return {"vmap": vmap.Vmap, "shared": shared.Shared, "sharded": sharded.Sharded}[name]()


def has_conv(init_fn: Callable, sample_x) -> bool:
  """Whether init_fn(key, x) (e.g. a flax module's init) calls nn.Conv: one abstract trace."""
  found = []
  def spy(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Conv):
      found.append(True)
    return next_fun(*args, **kwargs)
  with nn.intercept_methods(spy):
    jax.eval_shape(lambda: init_fn(jax.random.key(0), jnp.asarray(sample_x)))
  return bool(found)


def _check(strategy: str, conv: str, lanes) -> None:
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


def resolve(strategy: str, model: nn.Module, sample_x, conv: str = "auto", lanes: int = 0
            ) -> Strategy:
  """The Strategy of `strategy` in STRATEGIES for `model` on inputs like sample_x [1, ...];
  conv 'auto' and lanes 0 are chosen as the module docstring says."""
  _check(strategy, conv, lanes)
  cpu = jax.default_backend() == "cpu"
  convs = cpu and has_conv(lambda k, x: model.init(k, x, train=False), sample_x)
  if strategy == "auto":
    strategy = "sharded" if jax.device_count() > 1 else ("loop" if cpu else "vmap")
  if conv == "auto":
    conv = "lax" if not convs else ("forward" if strategy == "loop" else "im2col")
  if lanes == 0 or strategy != "loop":     # lanes given with auto: where it picks the loop
    lanes = CPU_LANES if strategy == "loop" and cpu and not convs else 1
  return Strategy(make_mapping(strategy, lanes), conv)
