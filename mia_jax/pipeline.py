"""One audit as data flowing through stages, each writing its output to the workdir:

  data.load -> membership.keep_matrix -> training.train_ensemble (orbax checkpoints)
  -> inference.query_logits (logits.npz) -> attacks -> metrics -> report (results.json,
  report.md, figures/)

Everything the config names is checked before the workdir is touched; a workdir that holds a
run of another config is refused rather than overwritten.
"""

import json
import os
import time
from typing import Callable

import ml_collections
import numpy as np

from mia_jax import attacks, data, inference, models, report
from mia_jax.attacks import evaluate as attack_eval
from mia_jax.data import augment, membership
from mia_jax.errors import ConfigError
from mia_jax.training import ensemble, optim

# Config blocks that decide the trained models; a workdir's checkpoints belong to these values.
TRAINING_BLOCKS = ("seed", "data", "model", "membership", "train")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for any unknown name or out-of-range value, before any work."""
  data.check_name(config.data.name)
  if config.model.name not in models.names():
    raise ConfigError(f"unknown model {config.model.name!r}; choose one of {models.names()} "
                      "with --config.model.name=NAME")
  for name in config.attack.names:
    attacks.get(name)
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
  num_models = int(config.membership.num_models)
  if not 1 <= int(float(config.membership.pkeep) * num_models) < num_models:
    raise ConfigError(f"membership.pkeep={config.membership.pkeep} with {num_models} models puts "
                      "each example in no model or in all; raise --config.membership.num_models")


def training_record(config: ml_collections.ConfigDict) -> dict:
  d = config.to_dict()
  return json.loads(json.dumps({k: d[k] for k in TRAINING_BLOCKS}, default=str))


def claim_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates the workdir, or checks that the run it holds was trained with this config."""
  path = os.path.join(workdir, "run_config.json")
  record = training_record(config)
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
    if old != record:
      diff = _first_difference(old, record)
      raise ConfigError(f"workdir {workdir} holds a run trained with another config ({diff}); "
                        "use a new --workdir, or delete that folder to start over")
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file; give a folder")
  os.makedirs(workdir, exist_ok=True)
  report.write_json_atomic(path, record)


def _first_difference(old, new, prefix="") -> str:
  if isinstance(old, dict) and isinstance(new, dict):
    for k in sorted(set(old) | set(new)):
      if old.get(k) != new.get(k):
        return _first_difference(old.get(k), new.get(k), f"{prefix}{k}.")
  return f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"


def attack_targets(config: ml_collections.ConfigDict) -> list[int]:
  num_models = int(config.membership.num_models)
  t = int(config.attack.num_targets)
  return list(range(num_models if t <= 0 else min(t, num_models)))


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print
        ) -> dict:
  """Runs the whole audit and returns the results that it also writes to the workdir."""
  t_start = time.perf_counter()
  validate(config)
  ds = data.load(config.data)
  model = models.build(config.model, ds.num_classes)
  keep = membership.keep_matrix(int(config.membership.seed), int(config.membership.num_models),
                                len(ds.pool_y), float(config.membership.pkeep))
  claim_workdir(workdir, config)
  np.save(os.path.join(workdir, "keep.npy"), keep)
  log(f"data {ds.name}: pool {len(ds.pool_y)}, val {len(ds.val_y)}, test {len(ds.test_y)}, "
      f"{ds.num_classes} classes, input {ds.input_shape}; {keep.shape[0]} models, "
      f"{int(keep.sum(1).mean())} training examples each")
  t_data = time.perf_counter()

  val = (ds.val_x, ds.val_y) if len(ds.val_y) else None
  result = ensemble.train_ensemble(
      model, config.train, ds.pool_x, ds.pool_y, keep, seed=int(config.seed), val=val,
      checkpoint_dir=os.path.join(workdir, "checkpoints"), log=log)
  t_train = time.perf_counter()

  dtype = np.float16 if config.inference.dtype == "float16" else np.float32
  bs = int(config.inference.batch_size)
  logits = inference.query_logits(model, result.state, ds.pool_x, config.data.queries, bs, dtype)
  test_logits = inference.query_logits(model, result.state, ds.test_x, config.data.queries, bs,
                                       dtype)
  report.save_npz_atomic(os.path.join(workdir, "logits.npz"), logits=logits, labels=ds.pool_y,
                         keep=keep, population_logits=test_logits, population_labels=ds.test_y)
  t_infer = time.perf_counter()

  attack_data = attacks.AttackData(logits=logits, labels=ds.pool_y, keep=keep,
                                   population_logits=test_logits, population_labels=ds.test_y)
  targets = attack_targets(config)
  summaries, curves = {}, {}
  for name in config.attack.names:
    params = dict(config.attack.params.get(name, {}))
    t0 = time.perf_counter()
    summaries[name], curves[name] = attack_eval.evaluate_attack(
        name, attack_data, targets, params=params, bootstrap=int(config.attack.bootstrap),
        seed=int(config.seed))
    summaries[name]["seconds"] = time.perf_counter() - t0
    log(f"attack {name}: AUC {summaries[name]['auc']['mean']:.4f} ± "
        f"{summaries[name]['auc']['std']:.4f}, TPR@0.1%FPR "
        f"{summaries[name]['tpr_at_fpr']['0.001']['mean']:.4f} over {len(targets)} targets")
  t_attack = time.perf_counter()

  results = {
      "num_models": int(keep.shape[0]),
      "targets": targets,
      "dataset": {"name": ds.name, "pool_size": int(len(ds.pool_y)), "val_size": int(len(ds.val_y)),
                  "test_size": int(len(ds.test_y)), "num_classes": int(ds.num_classes)},
      "models": {
          "train_accuracy": inference.accuracy(logits, ds.pool_y, keep).tolist(),
          "test_accuracy": inference.accuracy(test_logits, ds.test_y).tolist(),
          "epochs_run": result.epochs_run,
          "history": result.history,
      },
      "attacks": summaries,
      "timing": {"data_s": t_data - t_start, "train_s": t_train - t_data,
                 "inference_s": t_infer - t_train, "attack_s": t_attack - t_infer,
                 "resumed_from_epoch": result.resumed_from},
      "config": json.loads(json.dumps(config.to_dict(), default=str)),
  }
  results["models"]["mean_train_accuracy"] = float(np.mean(results["models"]["train_accuracy"]))
  results["models"]["mean_test_accuracy"] = float(np.mean(results["models"]["test_accuracy"]))
  results["timing"]["total_s"] = time.perf_counter() - t_start
  report.write(workdir, results, curves)
  log(f"mean test accuracy {results['models']['mean_test_accuracy']:.4f}; report in "
      f"{os.path.join(workdir, 'report.md')}; total {results['timing']['total_s']:.1f}s")
  return results
