"""One audit as data flowing through stages, each writing its output to the workdir.

Training mode (`run`):

  data.load -> membership.keep_matrix -> training.train_ensemble (orbax checkpoints)
  -> inference.query_logits (logits.npz) -> attack_and_report

Attack-only mode (`run_attack_only`, config.logits = a .npz file, e.g. from PyTorch models):

  logits_io.load (checked) -> attack_and_report

`attack_and_report`, the stage both modes share: every attack on every target (metrics with
bootstrap intervals, slices per class and per correct/incorrect prediction), the shadow-
scaling curve, figures/, results.json and report.md.

Everything the config names, and the logits file, is checked before the workdir is touched;
a workdir that holds a run of another config is refused rather than overwritten.
"""

import json
import os
import time
from typing import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from mia_jax import attacks, data, figures, inference, logits_io, metrics, models, report
from mia_jax.attacks import evaluate as attack_eval
from mia_jax.data import augment, canaries as canaries_lib, membership
from mia_jax.errors import ConfigError, DataError
from mia_jax.privacy import auditing
from mia_jax.training import dp as dp_lib
from mia_jax.training import curriculum, ensemble, optim

# Config blocks that decide the trained models; a workdir's checkpoints belong to these values.
TRAINING_BLOCKS = ("seed", "data", "model", "membership", "train", "dp")
# Attacks that score an example from the target model alone: the canary audit's choices (its
# scores must not read other models, whose keep rows determine the target's coin flips).
AUDIT_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")
# Attacks that read shadow / reference models: the ones the shadow-scaling curve reruns.
SHADOW_ATTACK_PREFIXES = ("lira_", "rmia_", "shokri")


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
  if config.audit.method not in auditing.METHODS:
    raise ConfigError(f"unknown audit.method {config.audit.method!r}; choose one of "
                      f"{list(auditing.METHODS)}")
  if config.audit.attack not in AUDIT_ATTACKS:
    raise ConfigError(f"audit.attack={config.audit.attack!r}: the canary audit needs an attack "
                      f"that reads only the target model; choose one of {list(AUDIT_ATTACKS)}")
  num_models = int(config.membership.num_models)
  if not 1 <= int(float(config.membership.pkeep) * num_models) < num_models:
    raise ConfigError(f"membership.pkeep={config.membership.pkeep} with {num_models} models puts "
                      "each example in no model or in all; raise --config.membership.num_models")


def training_record(config: ml_collections.ConfigDict) -> dict:
  d = config.to_dict()
  record = {k: d[k] for k in TRAINING_BLOCKS}
  record["audit"] = {"num_canaries": d["audit"]["num_canaries"]}   # canaries change the data
  return json.loads(json.dumps(record, default=str))


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


def attack_targets(num_targets: int, num_models: int) -> list[int]:
  """The first num_targets models (0 or less: every model)."""
  return list(range(num_models if num_targets <= 0 else min(num_targets, num_models)))


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print
        ) -> dict:
  """Trains the ensemble, queries it, and audits it; returns the results also written."""
  t_start = time.perf_counter()
  validate(config)
  ds = data.load(config.data)
  ds, canaries = canaries_lib.plant(ds, int(config.audit.num_canaries), int(config.data.seed))
  model = models.build(config.model, ds.num_classes)
  keep = membership.keep_matrix(int(config.membership.seed), int(config.membership.num_models),
                                len(ds.pool_y), float(config.membership.pkeep))
  dp_plan = None
  if config.dp.enabled:
    dp_plan = dp_lib.plan(config.dp, keep, int(config.train.batch_size), int(config.train.epochs))
    log(f"DP-SGD: noise multiplier {dp_plan.noise_multiplier:.4f}, clip {config.dp.clip_norm}, "
        f"{config.dp.sampling} sampling (expected batch {dp_plan.expected_batch_size:g}, padded "
        f"to {dp_plan.max_batch}), {dp_plan.steps} steps, delta {dp_plan.delta:.2e}")
  claim_workdir(workdir, config)
  np.save(os.path.join(workdir, "keep.npy"), keep)
  log(f"data {ds.name}: pool {len(ds.pool_y)}, val {len(ds.val_y)}, test {len(ds.test_y)}, "
      f"{ds.num_classes} classes, input {ds.input_shape}; {keep.shape[0]} models, "
      f"{int(keep.sum(1).mean())} training examples each")
  t_data = time.perf_counter()

  val = (ds.val_x, ds.val_y) if len(ds.val_y) else None
  difficulty = None
  if config.train.get("curriculum") is not None and config.train.curriculum.enabled:
    difficulty = curriculum.reference_difficulty(
        model, config.train, ds.val_x, ds.val_y, ds.pool_x, ds.pool_y, seed=int(config.seed),
        batch_size=int(config.inference.batch_size), log=log)
  result = ensemble.train_ensemble(
      model, config.train, ds.pool_x, ds.pool_y, keep, seed=int(config.seed), val=val,
      checkpoint_dir=os.path.join(workdir, "checkpoints"), log=log, dp_plan=dp_plan,
      difficulty=difficulty)
  t_train = time.perf_counter()

  dtype = np.float16 if config.inference.dtype == "float16" else np.float32
  bs = int(config.inference.batch_size)
  logits = inference.query_logits(model, result.state, ds.pool_x, config.data.queries, bs, dtype,
                                  augment_cfg=config.train.augment)
  test_logits = inference.query_logits(model, result.state, ds.test_x, config.data.queries, bs,
                                       dtype, augment_cfg=config.train.augment)
  report.save_npz_atomic(os.path.join(workdir, "logits.npz"), logits=logits, labels=ds.pool_y,
                         keep=keep, population_logits=test_logits, population_labels=ds.test_y)
  t_infer = time.perf_counter()

  attack_data = attacks.AttackData(logits=logits, labels=ds.pool_y, keep=keep,
                                   population_logits=test_logits, population_labels=ds.test_y)
  header = {
      "source": {"mode": "train"},
      "dataset": {"name": ds.name, "pool_size": int(len(ds.pool_y)),
                  "val_size": int(len(ds.val_y)), "test_size": int(len(ds.test_y)),
                  "num_classes": int(ds.num_classes), "num_queries": int(logits.shape[2])},
      "models": {"epochs_run": result.epochs_run, "strategy": result.strategy,
                 "history": result.history},
      "timing": {"data_s": t_data - t_start, "train_s": t_train - t_data,
                 "inference_s": t_infer - t_train, "resumed_from_epoch": result.resumed_from},
      "canaries": canaries.tolist(),
  }
  if dp_plan is not None:
    header["privacy"] = {
        "epsilon": dp_plan.epsilon(), "delta": dp_plan.delta,
        "noise_multiplier": dp_plan.noise_multiplier, "clip_norm": float(config.dp.clip_norm),
        "sampling": dp_plan.sampling, "accountant": dp_plan.accountant, "steps": dp_plan.steps,
        "expected_batch_size": dp_plan.expected_batch_size, "max_batch": dp_plan.max_batch,
        "sampling_rate": dp_plan.sampling_rate, "clipping": config.dp.clipping}
  return attack_and_report(attack_data, config, workdir, header, t_start, log)


def run_attack_only(config: ml_collections.ConfigDict, workdir: str,
                    log: Callable[[str], None] = print) -> dict:
  """Audits the models whose logits config.logits holds (logits_io.load), without training.

  The file and the config are checked before the workdir is created or touched; the outputs
  are those of `run` without checkpoints, keep.npy and logits.npz.
  """
  t_start = time.perf_counter()
  path = str(config.get("logits", "") or "")
  if not path:
    raise ConfigError("attack-only mode needs the logits file: pass --config.logits=FILE.npz")
  validate_attack(config.attack)
  attack_data = logits_io.load(path)
  m, n, q, c = attack_data.logits.shape
  for t in attack_targets(int(config.attack.num_targets), m):
    members = int(np.sum(attack_data.keep[t]))
    if members in (0, n):
      raise DataError(f"{path}: target model {t} has {members} members among the {n} examples; "
                      f"each target needs members and non-members (fix keep[{t}], or lower "
                      "--config.attack.num_targets to skip it)")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file; give a folder")
  os.makedirs(workdir, exist_ok=True)
  pop = attack_data.population_labels
  log(f"logits {path}: {m} models, {n} examples, {q} queries, {c} classes, "
      f"{0 if pop is None else len(pop)} population examples")
  header = {
      "source": {"mode": "attack_only", "logits_file": os.path.abspath(path)},
      "dataset": {"name": os.path.basename(path), "pool_size": n,
                  "test_size": 0 if pop is None else int(len(pop)), "num_classes": c,
                  "num_queries": q},
      "models": {},
      "timing": {"load_s": time.perf_counter() - t_start},
  }
  return attack_and_report(attack_data, config, workdir, header, t_start, log)


def attack_and_report(attack_data: attacks.AttackData, config: ml_collections.ConfigDict,
                      workdir: str, header: Mapping, t_start: float,
                      log: Callable[[str], None] = print) -> dict:
  """The stage both modes share: attacks, metrics, slices, shadow scaling, figures, report.

  Args:
    attack_data: the models' outputs and keep matrix.
    config: the run's config; its `attack` block and `seed` are read, all of it is recorded.
    workdir: the output folder (it exists).
    header: results entries from the earlier stages: "source", "dataset", "models" (extra
      entries such as epochs_run) and "timing" (their seconds).
    t_start: time.perf_counter() at the start of the run.
    log: takes progress lines.

  Returns:
    The results also written to results.json (see README, "What lands in the workdir").
  """
  acfg = config.attack
  seed = int(config.seed)
  targets = attack_targets(int(acfg.num_targets), attack_data.num_models)
  params_by_name = {name: dict(acfg.params.get(name, {})) for name in acfg.names}
  t_attack = time.perf_counter()
  keep_rows = np.asarray(attack_data.keep)[targets]
  predictions = attacks.target_predictions(attack_data, targets)
  summaries, curves, first_scores, all_scores = {}, {}, {}, {}
  for name in acfg.names:
    t0 = time.perf_counter()
    scores = all_scores[name] = attacks.run(name, attack_data, targets, **params_by_name[name])
    summaries[name], curves[name] = attack_eval.evaluate_scores(
        name, scores, attack_data.keep, targets, params=params_by_name[name],
        bootstrap=int(acfg.bootstrap), seed=seed)
    summaries[name]["slices"] = slice_summary(scores, keep_rows, attack_data.labels, predictions)
    summaries[name]["seconds"] = time.perf_counter() - t0
    first_scores[name] = scores[0]
    log(f"attack {name}: AUC {summaries[name]['auc']['mean']:.4f} ± "
        f"{summaries[name]['auc']['std']:.4f}, TPR@0.1%FPR "
        f"{summaries[name]['tpr_at_fpr']['0.001']['mean']:.4f} over {len(targets)} targets")
  privacy = canary_audit(attack_data, config, header, targets, all_scores, log)
  t_scaling = time.perf_counter()
  scaling_targets = targets[:int(acfg.get("scaling_targets", 0))]
  scaling = (shadow_scaling(attack_data, acfg.names, scaling_targets, params_by_name, seed)
             if scaling_targets else {})
  t_figures = time.perf_counter()
  fig_dir = os.path.join(workdir, "figures")
  figures.roc(os.path.join(fig_dir, "roc.png"), curves)
  figures.score_histograms(os.path.join(fig_dir, "score_hist.png"), first_scores, keep_rows[0],
                           targets[0])
  if scaling.get("attacks"):
    figures.shadow_scaling(os.path.join(fig_dir, "shadow_scaling.png"), scaling)

  models_info = dict(header["models"])
  models_info.update(model_accuracies(attack_data))
  if header["source"]["mode"] == "train":
    models_info["test_accuracy_on"] = "held-out test split"
  timing = dict(header["timing"])
  timing.update(attack_s=t_scaling - t_attack, shadow_scaling_s=t_figures - t_scaling,
                figures_s=time.perf_counter() - t_figures)
  results = {
      "source": header["source"],
      "num_models": attack_data.num_models,
      "targets": targets,
      "dataset": header["dataset"],
      "models": models_info,
      "attacks": summaries,
      "shadow_scaling": scaling,
      **({"privacy": privacy} if privacy else {}),
      "timing": timing,
      "config": json.loads(json.dumps(config.to_dict(), default=str)),
  }
  timing["total_s"] = time.perf_counter() - t_start
  report.write(workdir, results)
  log(f"mean test accuracy {models_info['mean_test_accuracy']:.4f}; report in "
      f"{os.path.join(workdir, 'report.md')}; total {timing['total_s']:.1f}s")
  return results


def canary_audit(attack_data: attacks.AttackData, config: ml_collections.ConfigDict,
                 header: Mapping, targets: Sequence[int], scores_by_name: Mapping,
                 log: Callable[[str], None]) -> dict:
  """results["privacy"]: the accountant's figures (DP runs) and, with canaries, the one-run
  empirical lower bound on epsilon of each target beside them."""
  privacy = dict(header.get("privacy", {}))
  canaries = np.asarray(header.get("canaries", []), np.int64)
  if len(canaries) == 0:
    return privacy
  name = config.audit.attack
  scores = scores_by_name.get(name)
  if scores is None:
    scores = attacks.run(name, attack_data, targets)
  keep = np.asarray(attack_data.keep)[targets]
  delta = privacy.get("delta") or 1.0 / float(keep.sum(axis=1).min())
  audit = auditing.audit_targets(scores, keep, canaries, delta,
                                 float(config.audit.confidence), method=config.audit.method)
  audit["attack"] = name
  privacy["audit"] = audit
  privacy["epsilon_lower_bound"] = audit["max"]
  privacy.setdefault("delta", delta)
  log(f"canary audit ({len(canaries)} canaries, {name} scores): epsilon lower bound "
      f"{audit['mean']:.3f} mean, {audit['max']:.3f} max over {len(targets)} targets"
      + (f"; accountant's epsilon {privacy['epsilon']:.3f}" if "epsilon" in privacy else ""))
  return privacy


def model_accuracies(d: attacks.AttackData) -> dict:
  """Each model's accuracy (first query) on its members and on unseen examples.

  Unseen: the population when given, else each model's non-members of the pool.
  """
  out = {"train_accuracy": inference.accuracy(d.logits, d.labels, d.keep).tolist()}
  if d.population_logits is not None:
    out["test_accuracy"] = inference.accuracy(d.population_logits, d.population_labels).tolist()
    out["test_accuracy_on"] = "population examples"
  else:
    out["test_accuracy"] = inference.accuracy(d.logits, d.labels, ~d.keep).tolist()
    out["test_accuracy_on"] = "each model's non-members of the pool"
  out["mean_train_accuracy"] = float(np.mean(out["train_accuracy"]))
  out["mean_test_accuracy"] = float(np.mean(out["test_accuracy"]))
  return out


def _spread(values: Sequence[float], per_target: bool = True) -> dict:
  values = [float(v) for v in values]
  out = {"mean": float(np.mean(values)),
         "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
  if per_target:
    out["per_target"] = values
  return out


def _combine(items: Sequence[dict], per_target: bool) -> dict:
  """Mean and std over targets of metrics.evaluate dicts (skipped ones only counted)."""
  ok = [s for s in items if "skipped" not in s]
  out = {"num_targets": len(ok),
         "num_members": float(np.mean([s["num_members"] for s in items])),
         "num_nonmembers": float(np.mean([s["num_nonmembers"] for s in items]))}
  if not ok:
    out["skipped"] = next((s["skipped"] for s in items), "no targets")
    return out
  for key in ("auc", "advantage", "balanced_accuracy"):
    out[key] = _spread([s[key] for s in ok], per_target)
  out["tpr_at_fpr"] = {a: _spread([s["tpr_at_fpr"][a] for s in ok], per_target)
                       for a in ok[0]["tpr_at_fpr"]}
  return out


def slice_summary(scores: np.ndarray, keep_rows: np.ndarray, labels: np.ndarray,
                  predictions: np.ndarray) -> dict:
  """metrics.evaluate_slices for each target, as mean and std over targets.

  Args:
    scores: float [T, N]; keep_rows: bool [T, N], the targets' keep rows; labels: int [N];
      predictions: int [T, N], each target's predicted classes.

  Returns:
    {"class": {str(c): s}, "correct": s, "incorrect": s}, s = {"num_targets" (those whose
    slice has members and non-members), "num_members", "num_nonmembers" (means over all
    targets), "auc", "advantage", "balanced_accuracy": {"mean", "std"},
    "tpr_at_fpr": {alpha: {"mean", "std"}}}.
  """
  per = [metrics.evaluate_slices(scores[r], keep_rows[r], labels, predictions[r])
         for r in range(len(scores))]
  classes = sorted({c for s in per for c in s["class"]}, key=int)
  return {"class": {c: _combine([s["class"][c] for s in per if c in s["class"]], False)
                    for c in classes},
          "correct": _combine([s["correct"] for s in per], False),
          "incorrect": _combine([s["incorrect"] for s in per], False)}


def scaling_sizes(num_models: int) -> list[int]:
  """Shadow counts for the scaling curve: 2, 4, 8, ... below M - 1, then M - 1 (all)."""
  full = num_models - 1
  return [2 ** k for k in range(1, full.bit_length()) if 2 ** k < full] + [full]


def shadow_subset(d: attacks.AttackData, target: int, shadows: Sequence[int]
                  ) -> tuple[attacks.AttackData, int]:
  """AttackData over model `target` and the given shadows, kept in index order.

  Returns:
    (data over the M' = len(shadows) + 1 models, the target's row in it). With every other
    model as shadows it is `d` itself (copied) and the row is `target`, so attacks give the
    same scores as on `d`.
  """
  chosen = np.union1d([int(target)], np.asarray(shadows, int))
  pick = lambda a: None if a is None else np.asarray(a)[chosen]
  sub = attacks.AttackData(logits=pick(d.logits), labels=d.labels, keep=pick(d.keep),
                           population_logits=pick(d.population_logits),
                           population_labels=d.population_labels)
  return sub, int(np.searchsorted(chosen, target))


def shadow_scaling(d: attacks.AttackData, names: Sequence[str], targets: Sequence[int],
                   params_by_name: Mapping[str, Mapping] | None = None, seed: int = 0,
                   sizes: Sequence[int] | None = None) -> dict:
  """Shadow-based attacks rerun on random subsets of each target's shadows.

  For each target t and size k, k of the other models are drawn (numpy default_rng of
  [seed, t, k]; all of them at k = M - 1) and every attack in `names` that reads shadows
  (SHADOW_ATTACK_PREFIXES) is run on AttackData of t and those shadows, then evaluated
  against keep[t].

  Returns:
    {"sizes": [K], "targets": [T], "attacks": {name: [point per size]}}, a point being
    {"num_shadows": k, "auc": {"mean", "std", "per_target"}, "tpr_at_fpr": {alpha: ...}} or
    {"num_shadows": k, "skipped": reason} where the attack cannot run with k shadows.
  """
  params_by_name = dict(params_by_name or {})
  names = [n for n in names if n.startswith(SHADOW_ATTACK_PREFIXES)]
  sizes = list(sizes or scaling_sizes(d.num_models))
  keep = np.asarray(d.keep)
  per = {n: {k: [] for k in sizes} for n in names}
  for t in targets:
    pool = attacks.others(d.num_models, t)
    for k in sizes:
      rng = np.random.default_rng([seed, int(t), k])
      shadows = pool if k >= pool.size else rng.choice(pool, size=k, replace=False)
      sub, row = shadow_subset(d, t, shadows)
      for name in names:
        try:
          scores = attacks.run(name, sub, [row], **dict(params_by_name.get(name, {})))[0]
          per[name][k].append(metrics.evaluate(scores, keep[t]))
        except ConfigError as e:
          per[name][k].append({"num_members": int(keep[t].sum()),
                               "num_nonmembers": int((~keep[t]).sum()), "skipped": str(e)})
  points = {n: [{"num_shadows": k, **_combine(per[n][k], True)} for k in sizes] for n in names}
  return {"sizes": sizes, "targets": [int(t) for t in targets], "attacks": points}
