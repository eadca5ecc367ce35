"""Normalisation layers shared by the convolutional models: BatchNorm, or GroupNorm for DP-SGD.

DP-SGD needs per-example gradients, which BatchNorm's batch statistics mix across examples;
the study replaces BatchNorm by GroupNorm there (Khalil et al. 2025).
"""

import flax.linen as nn

NORMS = ("batch", "group")


def group_count(channels: int, max_groups: int = 32) -> int:
  """The largest number of groups <= max_groups that divides `channels`."""
  for g in range(min(max_groups, channels), 0, -1):
    if channels % g == 0:
      return g
  return 1


def norm(kind: str, x, train: bool, name: str | None = None):
  """Normalises x [B, H, W, C] with BatchNorm (running statistics in eval mode) or GroupNorm."""
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)(x)
  if kind == "group":
    return nn.GroupNorm(num_groups=group_count(x.shape[-1]), name=name)(x)
  raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")
