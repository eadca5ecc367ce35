"""Checks of a run's config before any work: every unknown name and out-of-range value is a
ConfigError (one line: what is wrong and how to mend it)."""

import ml_collections

from mia_jax import attacks, data, models
from mia_jax.data import augment
from mia_jax.errors import ConfigError
from mia_jax.privacy import auditing
from mia_jax.training import curriculum, ensemble, optim
from mia_jax.training import dp as dp_lib

# Attacks that score an example from the target model alone: the canary audit's choices (its
# scores must not read other models, whose keep rows determine the target's coin flips).
AUDIT_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")


def validate_attack(attack: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for an unknown attack or parameter, or a count out of range."""
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


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for any unknown name or out-of-range value, before any work."""
  data.check_name(config.data.name)
  if config.model.name not in models.names():
    raise ConfigError(f"unknown model {config.model.name!r}; choose one of {models.names()} "
                      "with --config.model.name=NAME")
  validate_attack(config.attack)
  if int(config.train.epochs) < 1:
    raise ConfigError(f"train.epochs={config.train.epochs} must be at least 1; "
                      "set --config.train.epochs=30")
  if int(config.train.batch_size) < 1:
    raise ConfigError(f"train.batch_size={config.train.batch_size} must be at least 1")
  if float(config.train.learning_rate) <= 0:
    raise ConfigError(f"train.learning_rate={config.train.learning_rate} must be positive")
  if not 0.0 <= float(config.train.label_smoothing) < 1.0:
    raise ConfigError(f"train.label_smoothing={config.train.label_smoothing} must lie in [0, 1)")
  if int(config.membership.num_models) < 2:
    raise ConfigError(f"membership.num_models={config.membership.num_models}: an audit needs at "
                      "least 2 models (a target and a shadow); set --config.membership.num_models=16")
  if not 0.0 < float(config.membership.pkeep) < 1.0:
    raise ConfigError(f"membership.pkeep={config.membership.pkeep} must lie strictly between 0 "
                      "and 1; set --config.membership.pkeep=0.5")
  if config.data.queries not in augment.QUERY_KINDS:
    raise ConfigError(f"unknown data.queries {config.data.queries!r}; choose one of "
                      f"{list(augment.QUERY_KINDS)}")
  if config.train.get("curriculum") is not None and config.train.curriculum.enabled:
    curriculum.validate(config.train.curriculum)
    if int(config.data.val_size) <= 0:
      raise ConfigError("train.curriculum scores difficulty with a reference model trained on "
                        "the validation split; set --config.data.val_size > 0 (e.g. 500)")
    if config.dp.enabled:
      raise ConfigError("train.curriculum with DP-SGD is not supported (Poisson sampling over a "
                        "growing subset needs its own accounting); disable one of them")
  if config.inference.dtype not in ("float32", "float16"):
    raise ConfigError(f"inference.dtype={config.inference.dtype!r}; choose float32 or float16")
  if config.train.optimizer not in optim.OPTIMIZERS:
    raise ConfigError(f"unknown optimizer {config.train.optimizer!r}; choose one of "
                      f"{list(optim.OPTIMIZERS)} with --config.train.optimizer=NAME")
  if config.train.schedule not in optim.SCHEDULES:
    raise ConfigError(f"unknown learning-rate schedule {config.train.schedule!r}; choose one of "
                      f"{list(optim.SCHEDULES)} with --config.train.schedule=NAME")
  if config.train.strategy not in ensemble.STRATEGIES:
    raise ConfigError(f"unknown ensemble strategy {config.train.strategy!r}; choose one of "
                      f"{list(ensemble.STRATEGIES)} with --config.train.strategy=NAME")
  if config.dp.enabled:
    dp_lib.check_config(config.dp)
    if config.model.get("norm", "none") == "batch":
      raise ConfigError("DP-SGD cannot train a model with BatchNorm (its batch statistics mix "
                        "examples); set --config.model.norm=group")
  if int(config.audit.num_canaries) < 0:
    raise ConfigError(f"audit.num_canaries={config.audit.num_canaries} must be 0 or more")
  auditing.check_config(config.audit)
  if config.audit.attack not in AUDIT_ATTACKS:
    raise ConfigError(f"audit.attack={config.audit.attack!r}: the canary audit needs an attack "
                      f"that reads only the target model; choose one of {list(AUDIT_ATTACKS)}")
  num_models = int(config.membership.num_models)
  if not 1 <= int(float(config.membership.pkeep) * num_models) < num_models:
    raise ConfigError(f"membership.pkeep={config.membership.pkeep} with {num_models} models puts "
                      "each example in no model or in all; raise --config.membership.num_models")
