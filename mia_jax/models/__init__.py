"""Model registry: `config.model.name` -> a flax.linen Module.

Every model is used through pure `init` / `apply`; its `__call__(x, train)` takes inputs
[B, ...] and returns logits [B, C]. Dropout draws from the `dropout` RNG stream; models
with BatchNorm keep running statistics in the `batch_stats` collection.

Two kinds of name:
  a registered name (`names()`: mlp, purchase_fcn, cnn, densenet, resnet18); adding one is one
    file and one line in `_REGISTRY`;
  `package.module:Attr`, your own model, imported with importlib (the package must be on
    sys.path, e.g. installed or in the working directory). `Attr` is either
      a flax.linen.Module subclass: built as `Attr(num_classes=C, **config.model.kwargs)`
        (`kwargs` a dict or ConfigDict in your config file; absent: no other fields), or
      a factory `Attr(model_config, num_classes) -> nn.Module`, the registry's signature: it
        receives the whole `config.model` block and reads whichever fields it wants.
    Whatever it builds must be an nn.Module whose `__call__(x, train)` returns logits [B, C].

Example (a module `my_models.py` beside your config, holding `class Net(nn.Module)` with a
`num_classes` field):

  config.model.name = "my_models:Net"
  config.model.kwargs = {"width": 64}
"""

import importlib
from typing import Any, Callable

import flax.linen as nn
import ml_collections

from mia_jax.errors import ConfigError
from mia_jax.models import cnn, densenet, mlp, norms, resnet

__all__ = ["build", "cnn", "densenet", "is_importable_name", "mlp", "names", "norms",
           "register", "resnet", "resolve", "uses_batch_stats"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp.from_config,
    "purchase_fcn": mlp.purchase_fcn_from_config,
    "cnn": cnn.from_config,
    "densenet": densenet.from_config,
    "resnet18": resnet.from_config,
}


def names() -> list[str]:
  """The registered names; `package.module:Attr` is accepted beside them."""
  return sorted(_REGISTRY)


def register(name: str, factory: Callable[..., nn.Module]) -> None:
  """Registers `factory(model_config, num_classes) -> nn.Module` under `name`."""
  _REGISTRY[name] = factory


def is_importable_name(name: str) -> bool:
  """True for a `package.module:Attr` name (one colon, both sides non-empty)."""
  module, sep, attr = str(name).partition(":")
  return bool(sep and module and attr and ":" not in attr)


def resolve(name: str) -> Callable[..., nn.Module]:
  """The factory `(model_config, num_classes) -> nn.Module` that `name` stands for.

  A registered name gives its factory; `package.module:Attr` is imported (a ConfigError of
  one line when the module or attribute is missing, or the attribute is neither an nn.Module
  subclass nor callable).
  """
  if name in _REGISTRY:
    return _REGISTRY[name]
  if not is_importable_name(name):
    raise ConfigError(f"unknown model {name!r}; choose one of {names()} or give your own as "
                      "--config.model.name=package.module:ModuleClass")
  module_name, _, attr = name.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"model {name!r}: module {module_name!r} cannot be imported ({e}); put "
                      "its package on sys.path (install it, or run from its folder)") from None
  if not hasattr(module, attr):
    raise ConfigError(f"model {name!r}: module {module_name!r} has no attribute {attr!r}; "
                      "name a flax.linen.Module subclass or a factory defined in it")
  target = getattr(module, attr)
  if isinstance(target, type) and issubclass(target, nn.Module):
    return _class_factory(name, target)
  if isinstance(target, type) or not callable(target):
    raise ConfigError(f"model {name!r} is a {type(target).__name__}, neither a flax.linen.Module "
                      "subclass nor a factory(model_config, num_classes); name one of those")
  return target


def _class_factory(name: str, module_class: type) -> Callable[..., nn.Module]:
  """The factory of an nn.Module subclass: `module_class(num_classes=C, **config.kwargs)`."""

  def factory(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    kwargs = dict(config.get("kwargs", None) or {})
    try:
      return module_class(num_classes=num_classes, **kwargs)
    except TypeError as e:
      raise ConfigError(f"model {name!r} takes no num_classes={num_classes} or config.model."
                        f"kwargs {sorted(kwargs)} ({e}); give it a num_classes field") from None

  return factory


def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the model that `config.name` names (see the module docstring) for `num_classes`
  outputs; a ConfigError when the name resolves to something that does not build an
  nn.Module."""
  model = resolve(config.name)(config, num_classes)
  if not isinstance(model, nn.Module):
    raise ConfigError(f"model {config.name!r} built a {type(model).__name__}, not a "
                      "flax.linen.Module; return an nn.Module instance")
  return model


def uses_batch_stats(variables: Any) -> bool:
  """True when the variables hold BatchNorm running statistics."""
  return "batch_stats" in variables
