"""DenseNet-BC (Huang et al. 2017) for 32x32 images, the study's "DenseNet-12".

Depth L, growth rate k, compression theta: three dense blocks of n = (L - 4) / 6 bottleneck
layers (BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k), output concatenated to the input), joined by
transitions (BN-ReLU-Conv1x1(floor(theta * channels))-AvgPool2x2); a 3x3 stem of 2k channels;
then BN-ReLU, global average pooling and a dense head. Depth 100, k = 12, theta = 0.5 on
CIFAR-10 has 769,162 parameters (the study: about 769k). Dropout (rate > 0) follows every
convolution inside the dense blocks, as in the original DenseNet.
`norm="group"` swaps BatchNorm for GroupNorm (DP-SGD).
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mia_jax.errors import ConfigError
from mia_jax.models import norms


class Bottleneck(nn.Module):
  """x [B, H, W, C] -> [B, H, W, C + growth]."""
  growth: int
  norm: str = "batch"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.relu(norms.norm(self.norm, x, train))
    y = nn.Conv(4 * self.growth, (1, 1), use_bias=False)(y)
    y = nn.Dropout(self.dropout, deterministic=not train)(y) if self.dropout > 0 else y
    y = nn.relu(norms.norm(self.norm, y, train))
    y = nn.Conv(self.growth, (3, 3), padding="SAME", use_bias=False)(y)
    y = nn.Dropout(self.dropout, deterministic=not train)(y) if self.dropout > 0 else y
    return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
  """x [B, H, W, C] -> [B, H/2, W/2, out]."""
  out: int
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.relu(norms.norm(self.norm, x, train))
    y = nn.Conv(self.out, (1, 1), use_bias=False)(y)
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  """Inputs [B, H, W, C]; returns logits [B, num_classes]."""
  num_classes: int
  depth: int = 100
  growth: int = 12
  compression: float = 0.5
  norm: str = "batch"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    n = (self.depth - 4) // 6
    channels = 2 * self.growth
    x = nn.Conv(channels, (3, 3), padding="SAME", use_bias=False)(x)
    for block in range(3):
      for _ in range(n):
        x = Bottleneck(self.growth, self.norm, self.dropout)(x, train)
      channels += n * self.growth
      if block < 2:
        channels = int(channels * self.compression)
        x = Transition(channels, self.norm)(x, train)
    x = nn.relu(norms.norm(self.norm, x, train))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


def from_config(config: ml_collections.ConfigDict, num_classes: int) -> DenseNet:
  """model.depth (100), model.growth (12), model.compression (0.5), model.norm, model.dropout."""
  depth = int(config.get("depth", 100))
  if depth < 10 or (depth - 4) % 6:
    raise ConfigError(f"model.depth={depth}: DenseNet-BC needs depth = 6n + 4 (e.g. 40, 100); "
                      "set --config.model.depth=100")
  norm = config.get("norm", "batch")
  if norm not in norms.NORMS:
    raise ConfigError(f"model.norm={norm!r}: DenseNet takes one of {list(norms.NORMS)}")
  return DenseNet(num_classes=num_classes, depth=depth, growth=int(config.get("growth", 12)),
                  compression=float(config.get("compression", 0.5)), norm=norm,
                  dropout=float(config.get("dropout", 0.0)))
