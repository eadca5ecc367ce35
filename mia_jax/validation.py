"""Checks of a run's config before any work: every unknown name and out-of-range value is a
ConfigError (one line: what is wrong and how to mend it).

`validate(config)` needs only the config; `validate_with_data(config, ds, keep)` the values that
depend on the data (the batch against the examples each model trains on, the canaries against
the pool); `bytes_needed` what the run will write, for the workdir's disk-space check.
"""

import math
import numbers

import jax
import ml_collections
import numpy as np

from mia_jax import attacks, data, models
from mia_jax.analysis import stage as analysis_stage
from mia_jax.data import augment
from mia_jax.defenses import post_hoc
from mia_jax.errors import ConfigError
from mia_jax.privacy import auditing
from mia_jax.training import curriculum, from_config, optim, steps
from mia_jax.training import dp as dp_lib

# Attacks that score an example from the target model alone: the canary audit's choices (its
# scores must not read other models, whose keep rows determine the target's coin flips).
AUDIT_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")


def check_numbers(config: ml_collections.ConfigDict, prefix: str = "") -> None:
  """Raises ConfigError for a NaN or infinite number anywhere in `config` (tuples included)."""
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      check_numbers(value, f"{name}.")
      continue
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isfinite(v):
        raise ConfigError(f"{name}={value} is not a finite number; set --config.{name} to a "
                          "finite value")


def _check_model(model: ml_collections.ConfigDict) -> None:
  """Layer widths are positive integers; dropout lies in [0, 1)."""
  for field in ("hidden", "channels"):
    widths = model.get(field)
    if widths is None:
      continue
    widths = widths if isinstance(widths, (tuple, list)) else (widths,)
    if not all(isinstance(w, numbers.Integral) and w >= 1 for w in widths):
      raise ConfigError(f"model.{field}={tuple(widths)} must be positive layer widths, e.g. "
                        f"--config.model.{field}=\"(256,256)\"")
  if model.get("dense") is not None and not int(model.dense) >= 1:
    raise ConfigError(f"model.dense={model.dense} must be a positive width, e.g. 128")
  if not 0.0 <= float(model.get("dropout", 0.0)) < 1.0:
    raise ConfigError(f"model.dropout={model.dropout} must lie in [0, 1)")


def _check_train(train: ml_collections.ConfigDict) -> None:
  for field in ("l2", "weight_decay", "warmup_epochs", "early_stopping_patience", "lanes",
                "chunk_size", "checkpoint_seconds"):
    if field in train and train[field] < 0:
      raise ConfigError(f"train.{field}={train[field]} must be 0 or more")
  if "momentum" in train and not 0.0 <= float(train.momentum) < 1.0:
    raise ConfigError(f"train.momentum={train.momentum} must lie in [0, 1), e.g. 0.9")
  if "lr_decay_factor" in train and not float(train.lr_decay_factor) > 0:
    raise ConfigError(f"train.lr_decay_factor={train.lr_decay_factor} must be positive, e.g. 0.1")
  if int(train.augment.crop_padding) < 0:
    raise ConfigError(f"train.augment.crop_padding={train.augment.crop_padding} must be 0 or more")


def validate_attack(attack: ml_collections.ConfigDict, num_models: int | None = None) -> None:
  """Raises ConfigError for an unknown attack or parameter, or a count out of range (num_targets
  beyond the num_models models, when given)."""
  if not attack.names:
    raise ConfigError("attack.names is empty; name at least one attack, e.g. "
                      "--config.attack.names=\"('loss','lira_online')\"")
  for name in attack.names:
    attacks.get(name)
  for name, params in attack.params.items():
    unknown = sorted(set(dict(params)) - set(attacks.params_of(name)))
    if unknown:
      raise ConfigError(f"attack {name!r} takes no parameter(s) {unknown}; it takes "
                        f"{sorted(attacks.params_of(name)) or 'none'}")
  for field in ("num_targets", "bootstrap", "scaling_targets"):
    if int(attack.get(field, 0)) < 0:
      raise ConfigError(f"attack.{field}={attack.get(field)} must be 0 or more")
  if num_models is not None and int(attack.num_targets) > num_models:
    raise ConfigError(f"attack.num_targets={attack.num_targets} but there are {num_models} "
                      f"models; set --config.attack.num_targets={num_models} (or 0: every model)")


def _check_data_and_model(config: ml_collections.ConfigDict) -> None:
  data.check_name(config.data.name)
  for field in ("val_size", "test_size"):
    if int(config.data[field]) < 0:
      raise ConfigError(f"data.{field}={config.data[field]} must be 0 or more")
  if config.data.queries not in augment.QUERY_KINDS:
    raise ConfigError(f"unknown data.queries {config.data.queries!r}; choose one of "
                      f"{list(augment.QUERY_KINDS)}")
  models.resolve(config.model.name)
  _check_model(config.model)


def _check_membership(membership: ml_collections.ConfigDict) -> None:
  num_models = int(membership.num_models)
  if num_models < 2:
    raise ConfigError(f"membership.num_models={num_models}: an audit needs at least 2 models (a "
                      "target and a shadow); set --config.membership.num_models=16")
  if not 0.0 < float(membership.pkeep) < 1.0:
    raise ConfigError(f"membership.pkeep={membership.pkeep} must lie strictly between 0 "
                      "and 1; set --config.membership.pkeep=0.5")
  if not 1 <= int(float(membership.pkeep) * num_models) < num_models:
    raise ConfigError(f"membership.pkeep={membership.pkeep} with {num_models} models puts "
                      "each example in no model or in all; raise --config.membership.num_models")


def _check_training(config: ml_collections.ConfigDict) -> None:
  """The train block's values and names, and what curriculum and DP-SGD exclude."""
  train = config.train
  if int(train.epochs) < 1:
    raise ConfigError(f"train.epochs={train.epochs} must be at least 1; "
                      "set --config.train.epochs=30")
  if int(train.batch_size) < 1:
    raise ConfigError(f"train.batch_size={train.batch_size} must be at least 1")
  if float(train.learning_rate) <= 0:
    raise ConfigError(f"train.learning_rate={train.learning_rate} must be positive")
  if not 0.0 <= float(train.label_smoothing) < 1.0:
    raise ConfigError(f"train.label_smoothing={train.label_smoothing} must lie in [0, 1)")
  for field, choices, what in (("optimizer", optim.OPTIMIZERS, "optimizer"),
                               ("schedule", optim.SCHEDULES, "learning-rate schedule"),
                               ("strategy", from_config.STRATEGIES, "ensemble strategy")):
    if train[field] not in choices:
      raise ConfigError(f"unknown {what} {train[field]!r}; choose one of {list(choices)} with "
                        f"--config.train.{field}=NAME")
  if train.get("curriculum") is not None and train.curriculum.enabled:
    curriculum.validate(train.curriculum)
    if int(config.data.val_size) <= 0:
      raise ConfigError("train.curriculum scores difficulty with a reference model trained on "
                        "the validation split; set --config.data.val_size > 0 (e.g. 500)")
    if config.dp.enabled:
      raise ConfigError("train.curriculum with DP-SGD is not supported (Poisson sampling over a "
                        "growing subset needs its own accounting); disable one of them")
  _check_train(train)
  if config.dp.enabled:
    dp_lib.check_config(config.dp)
    if config.model.get("norm", "none") == "batch":
      raise ConfigError("DP-SGD cannot train a model with BatchNorm (its batch statistics mix "
                        "examples); set --config.model.norm=group")


def _check_audit_and_inference(config: ml_collections.ConfigDict) -> None:
  if int(config.inference.batch_size) < 1:
    raise ConfigError(f"inference.batch_size={config.inference.batch_size} must be at least 1")
  if config.inference.dtype not in ("float32", "float16"):
    raise ConfigError(f"inference.dtype={config.inference.dtype!r}; choose float32 or float16")
  if int(config.audit.num_canaries) < 0:
    raise ConfigError(f"audit.num_canaries={config.audit.num_canaries} must be 0 or more")
  auditing.check_config(config.audit)
  if config.audit.attack not in AUDIT_ATTACKS:
    raise ConfigError(f"audit.attack={config.audit.attack!r}: the canary audit needs an attack "
                      f"that reads only the target model; choose one of {list(AUDIT_ATTACKS)}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for any unknown name or out-of-range value, before any work."""
  check_numbers(config)
  _check_data_and_model(config)
  validate_attack(config.attack, int(config.membership.num_models))
  _check_membership(config.membership)
  _check_training(config)
  _check_audit_and_inference(config)
  post_hoc.check_config(config.get("defense"))
  analysis_stage.check_config(config.get("analysis"))


def validate_attack_only(config: ml_collections.ConfigDict) -> None:
  """The checks of an attack-only run's config before its logits file is read: numbers, the
  attack block, the post-hoc defense; the analysis stage needs the training data, so
  analysis.enabled is refused."""
  check_numbers(config)
  validate_attack(config.attack)
  post_hoc.check_config(config.get("defense"))
  if analysis_stage.enabled(config.get("analysis")):
    raise ConfigError("analysis.enabled needs the run's data and models (it trains reference "
                      "models on the test split); run it with a training config, or drop it")


def validate_with_data(config: ml_collections.ConfigDict, ds: "data.Dataset",
                       keep: np.ndarray) -> None:
  """The checks that need the data: the batch against each model's examples, the canaries
  against the pool, the classes the model will have.

  Args:
    config: the run's config.
    ds: the loaded dataset (mia_jax.data.Dataset).
    keep: bool [M, N], the membership matrix.
  """
  per_model = int(keep.sum(axis=1).min())
  batch = int(config.train.batch_size)
  if batch > per_model:
    raise ConfigError(f"train.batch_size={batch} is larger than the {per_model} examples each "
                      f"model trains on (pkeep {config.membership.pkeep} of a pool of "
                      f"{keep.shape[1]}), so every step would be mostly padding; set "
                      f"--config.train.batch_size={min(64, per_model)}")
  if ds.num_classes < 2:
    raise ConfigError(f"dataset {ds.name!r} has {ds.num_classes} class(es); an audit needs 2 or "
                      "more")


def bytes_needed(config: ml_collections.ConfigDict, model, ds: "data.Dataset",
                 num_queries: int) -> int:
  """About what a training run writes: two checkpoints kept plus one being written, each the
  ensemble's state (parameters, optimizer state, batch statistics; twice under early stopping),
  and logits.npz (written to a temporary file, then renamed)."""
  tx = optim.make_optimizer(config.train, 1)
  shapes = jax.eval_shape(lambda k: steps.init_state(model, tx, k, ds.pool_x[:1]),
                          jax.random.key(0))
  one = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
            for a in jax.tree.leaves(shapes))
  num_models = int(config.membership.num_models)
  copies = 2 if int(config.train.early_stopping_patience) > 0 else 1
  logits = num_models * (len(ds.pool_y) + len(ds.test_y)) * num_queries * ds.num_classes * 4
  return 3 * copies * num_models * one + 2 * logits
