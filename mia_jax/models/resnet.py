"""ResNet-18, CIFAR variant (He et al. 2016; as in kuangliu/pytorch-cifar).

A 3x3 stem (no max-pool), four stages of two basic blocks (3x3-3x3 with a shortcut, a 1x1
projection where the shape changes) of width w, 2w, 4w, 8w with strides 1, 2, 2, 2, global
average pooling and a dense head. Width 64 on CIFAR-10 has 11,173,962 parameters.
`norm="group"` swaps BatchNorm for GroupNorm (DP-SGD).
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mia_jax.errors import ConfigError
from mia_jax.models import norms


class BasicBlock(nn.Module):
  """x [B, H, W, C] -> [B, H / stride, W / stride, features]."""
  features: int
  stride: int = 1
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool = False):
    s = (self.stride, self.stride)
    y = nn.Conv(self.features, (3, 3), strides=s, padding=1, use_bias=False)(x)
    y = nn.relu(norms.norm(self.norm, y, train))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
    y = norms.norm(self.norm, y, train)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), strides=s, use_bias=False)(x)
      x = norms.norm(self.norm, x, train)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Inputs [B, H, W, C]; returns logits [B, num_classes]."""
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  norm: str = "batch"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(x)
    x = nn.relu(norms.norm(self.norm, x, train))
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2 ** i, stride, self.norm)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def from_config(config: ml_collections.ConfigDict, num_classes: int) -> ResNet:
  """model.width (64), model.stage_sizes ((2, 2, 2, 2)), model.norm, model.dropout."""
  norm = config.get("norm", "batch")
  if norm not in norms.NORMS:
    raise ConfigError(f"model.norm={norm!r}: ResNet takes one of {list(norms.NORMS)}")
  return ResNet(num_classes=num_classes, stage_sizes=tuple(config.get("stage_sizes", (2, 2, 2, 2))),
                width=int(config.get("width", 64)), norm=norm,
                dropout=float(config.get("dropout", 0.0)))
