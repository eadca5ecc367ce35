"""Model registry: `config.model.name` -> a flax.linen Module.

Every model is used through pure `init` / `apply`; its `__call__(x, train)` takes inputs
[B, ...] and returns logits [B, C]. Dropout draws from the `dropout` RNG stream; models
with BatchNorm keep running statistics in the `batch_stats` collection.

Adding a model is one file and one line in `_REGISTRY`.
"""

from typing import Any, Callable

import flax.linen as nn
import ml_collections

from mia_jax.errors import ConfigError
from mia_jax.models import cnn, mlp
from mia_jax.models import densenet, resnet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp.from_config,
    "purchase_fcn": mlp.purchase_fcn_from_config,
    "cnn": cnn.from_config,
    "densenet": densenet.from_config,
    "resnet18": resnet.from_config,
}


def names() -> list[str]:
  return sorted(_REGISTRY)


def register(name: str, factory: Callable[..., nn.Module]) -> None:
  """Registers `factory(model_config, num_classes) -> nn.Module` under `name`."""
  _REGISTRY[name] = factory


def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the model named by `config.name` for `num_classes` outputs."""
  name = config.name
  if name not in _REGISTRY:
    raise ConfigError(
        f"unknown model {name!r}; choose one of {names()} with --config.model.name=NAME")
  return _REGISTRY[name](config, num_classes)


def uses_batch_stats(variables: Any) -> bool:
  return "batch_stats" in variables
