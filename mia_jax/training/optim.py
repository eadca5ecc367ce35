"""Optimizers and learning-rate schedules from `config.train`, built with optax.

Weight decay comes two ways:
  l2            coupled (as the study and PyTorch's `weight_decay`): lambda * w is added to the
                gradient before the optimizer's preconditioning (momentum, Adam moments).
  weight_decay  decoupled (AdamW style): lambda * w is added to the update after preconditioning.
Both are then scaled by the learning rate.
"""

import ml_collections
import optax

from mia_jax.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "piecewise", "warmup_cosine")


def learning_rate_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """constant | cosine (to 0 over all epochs) | piecewise (times `lr_decay_factor` at each epoch
  in `lr_decay_epochs`) | warmup_cosine (`warmup_epochs` of linear warm-up, then cosine)."""
  lr = float(cfg.learning_rate)
  total = max(1, int(cfg.epochs) * steps_per_epoch)
  kind = cfg.schedule
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind == "cosine":
    return optax.cosine_decay_schedule(lr, total)
  if kind == "piecewise":
    boundaries = {int(e) * steps_per_epoch: float(cfg.lr_decay_factor) for e in cfg.lr_decay_epochs}
    return optax.piecewise_constant_schedule(lr, boundaries)
  if kind == "warmup_cosine":
    warmup = max(1, int(float(cfg.warmup_epochs) * steps_per_epoch))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1))
  raise ConfigError(f"unknown learning-rate schedule {kind!r}; choose one of {list(SCHEDULES)} "
                    "with --config.train.schedule=NAME")


def make_optimizer(cfg: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """The optax transformation for `cfg` (the `train` block)."""
  name = cfg.optimizer
  if name == "sgd":
    core = optax.trace(decay=float(cfg.momentum), nesterov=bool(cfg.get("nesterov", False)))
  elif name == "adam":
    core = optax.scale_by_adam()
  else:
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)} "
                      "with --config.train.optimizer=NAME")
  parts = []
  if float(cfg.l2) > 0:
    parts.append(optax.add_decayed_weights(float(cfg.l2)))
  parts.append(core)
  if float(cfg.weight_decay) > 0:
    parts.append(optax.add_decayed_weights(float(cfg.weight_decay)))
  parts.append(optax.scale_by_learning_rate(learning_rate_schedule(cfg, steps_per_epoch)))
  return optax.chain(*parts)
