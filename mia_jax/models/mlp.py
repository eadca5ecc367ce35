"""Fully connected networks, including the paper's Purchase100 network.

The study (Khalil et al. 2025) uses 600-1024-512-256-128-100 with tanh for Purchase100
(about 1.317M parameters).
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mia_jax.errors import ConfigError

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu}

PURCHASE_HIDDEN = (1024, 512, 256, 128)


class MLP(nn.Module):
  """Dense layers with an activation and optional dropout after each hidden layer.

  Inputs [B, ...] are flattened to [B, D]; returns logits [B, num_classes].
  """
  hidden: Sequence[int]
  num_classes: int
  activation: str = "relu"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = ACTIVATIONS[self.activation]
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = act(nn.Dense(width)(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def from_config(config: ml_collections.ConfigDict, num_classes: int) -> MLP:
  if config.activation not in ACTIVATIONS:
    raise ConfigError(f"unknown activation {config.activation!r}; choose one of "
                      f"{sorted(ACTIVATIONS)} with --config.model.activation=NAME")
  return MLP(hidden=tuple(config.hidden), num_classes=num_classes,
             activation=config.activation, dropout=float(config.dropout))


def purchase_fcn_from_config(config: ml_collections.ConfigDict, num_classes: int) -> MLP:
  """The paper's Purchase100 network: 1024-512-256-128 hidden units with tanh."""
  return MLP(hidden=PURCHASE_HIDDEN, num_classes=num_classes, activation="tanh",
             dropout=float(config.get("dropout", 0.0)))
