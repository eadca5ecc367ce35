"""A small convolutional network for 8x8 to 32x32 images.

Blocks of conv 3x3 -> norm -> relu -> 2x2 max-pool, then global average pooling and a dense
head. `norm` is "none", "batch" (running statistics in `batch_stats`), "group" or "layer";
use "group" or "layer" under DP-SGD, which refuses BatchNorm.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mia_jax.errors import ConfigError

NORMS = ("none", "batch", "group", "layer")


class CNN(nn.Module):
  """Inputs [B, H, W, C]; returns logits [B, num_classes]."""
  channels: Sequence[int]
  num_classes: int
  dense: int = 128
  norm: str = "none"
  dropout: float = 0.0

  def _norm(self, x, train: bool):
    if self.norm == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    if self.norm == "group":
      return nn.GroupNorm(num_groups=min(8, x.shape[-1]))(x)
    if self.norm == "layer":
      return nn.LayerNorm()(x)
    return x

  @nn.compact
  def __call__(self, x, train: bool = False):
    for ch in self.channels:
      x = nn.Conv(ch, (3, 3), padding="SAME")(x)
      x = nn.relu(self._norm(x, train))
      if min(x.shape[1:3]) >= 2:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    if self.dense:
      x = nn.relu(nn.Dense(self.dense)(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def from_config(config: ml_collections.ConfigDict, num_classes: int) -> CNN:
  norm = config.get("norm", "none")
  if norm not in NORMS:
    raise ConfigError(f"unknown norm {norm!r}; choose one of {list(NORMS)} with --config.model.norm=NAME")
  return CNN(channels=tuple(config.channels), num_classes=num_classes,
             dense=int(config.get("dense", 128)), norm=norm,
             dropout=float(config.get("dropout", 0.0)))
