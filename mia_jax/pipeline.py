"""One audit as data flowing through stages, each writing its output to the workdir.

Training mode (`run`):

  data.load -> membership.keep_matrix -> training.train_ensemble (orbax checkpoints)
  -> inference.query_logits (logits.npz) -> attack_and_report

Attack-only mode (`run_attack_only`, config.logits = a .npz file, e.g. from PyTorch models):

  logits_io.load (checked) -> attack_and_report

`attack_and_report`, the stage both modes share: every attack on every target (metrics with
their 95% intervals, slices per class and per correct/incorrect prediction), the shadow-
scaling curve, figures/, results.json and report.md.

Everything the config names, the data's content and the logits file are checked before the
workdir is touched; the workdir is then claimed for the run (mia_jax.workdir: its record, its
lock, the disk space): a workdir of another run, another kind of run, or a folder that is not a
mia_jax workdir is refused rather than overwritten. Each long stage logs its own progress.
"""

import json
import os
import time
from typing import Callable, Mapping

import jax
import ml_collections
import numpy as np

from mia_jax import attacks, data, figures, inference, logits_io, models, report, validation
from mia_jax import workdir as workdir_lib
from mia_jax.attacks import evaluate as attack_eval
from mia_jax.attacks import scaling as scaling_lib
from mia_jax.data import augment, canaries as canaries_lib, membership
from mia_jax.errors import ConfigError, DataError
from mia_jax.privacy import canary_audit
from mia_jax.training import dp as dp_lib
from mia_jax.training import curriculum, ensemble


def attack_targets(num_targets: int, num_models: int) -> list[int]:
  """The first num_targets models (0: every model); more than num_models is a ConfigError."""
  if num_targets > num_models:
    raise ConfigError(f"attack.num_targets={num_targets} but there are {num_models} models; "
                      f"set --config.attack.num_targets={num_models} (or 0: every model)")
  return list(range(num_models if num_targets <= 0 else num_targets))


class Progress:
  """Progress lines of a long stage: at most one every `every_s` seconds, with the time left
  estimated from the part done (`update(done, total)`), and a closing line (`end`)."""

  def __init__(self, log: Callable[[str], None], what: str, every_s: float = 5.0):
    self._log, self._what, self._every = log, what, every_s
    self._t0 = self._last = time.perf_counter()

  @property
  def seconds(self) -> float:
    return time.perf_counter() - self._t0

  def update(self, done: int, total: int | None = None, detail: str = "") -> None:
    """Logs `done` of `total` (None: unknown, no time left), unless a line went out lately."""
    now = time.perf_counter()
    if now - self._last < self._every or (total is not None and done >= total):
      return
    self._last = now
    count = f"{done}/{total}" if total is not None else f"{done}"
    left = (f", about {self.seconds / max(done, 1) * (total - done):.0f}s left"
            if total is not None else "")
    self._log(f"  {self._what}: {count}{detail}, {self.seconds:.0f}s{left}")


def training_fingerprint(config: ml_collections.ConfigDict, ds: data.Dataset) -> dict:
  """What a training workdir's record holds: the config blocks that decide the models and a
  digest of the data they train and are tested on (canaries planted)."""
  arrays = {"pool_x": ds.pool_x, "pool_y": ds.pool_y, "val_x": ds.val_x, "val_y": ds.val_y,
            "test_x": ds.test_x, "test_y": ds.test_y}
  return dict(workdir_lib.training_record(config), data_content=workdir_lib.arrays_digest(arrays))


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print
        ) -> dict:
  """Trains the ensemble, queries it, and audits it; returns the results also written.

  Before any work, and before anything is written: the config (validation.validate), the
  workdir (workdir.inspect), the data's content (data.load checks it), the values that depend
  on it (validation.validate_with_data); then the workdir is claimed (its record and lock,
  a disk-space check for the checkpoints and logits: workdir.claim), and the lock is held until
  the run ends.
  """
  t_start = time.perf_counter()
  validation.validate(config)
  workdir_lib.inspect(workdir, "train")
  ds = data.load(config.data)
  ds, canaries = canaries_lib.plant(ds, int(config.audit.num_canaries), int(config.data.seed))
  model = models.build(config.model, ds.num_classes)
  keep = membership.keep_matrix(int(config.membership.seed), int(config.membership.num_models),
                                len(ds.pool_y), float(config.membership.pkeep))
  validation.validate_with_data(config, ds, keep)
  num_queries = len(augment.view_names(config.data.queries, int(config.train.augment.crop_padding),
                                       bool(config.train.augment.flip), ds.is_image))
  claim = workdir_lib.claim(workdir, "train", training_fingerprint(config, ds), log=log,
                            needed_bytes=validation.bytes_needed(config, model, ds, num_queries),
                            process_index=jax.process_index())
  try:
    return _train_and_audit(config, workdir, ds, canaries, model, keep, t_start, log)
  finally:
    claim.release()


def _train_and_audit(config: ml_collections.ConfigDict, workdir: str, ds: data.Dataset,
                     canaries: np.ndarray, model, keep: np.ndarray, t_start: float,
                     log: Callable[[str], None]) -> dict:
  """run's stages once the workdir is claimed: DP calibration, training, inference, audit."""
  log(f"data {ds.name}: pool {len(ds.pool_y)}, val {len(ds.val_y)}, test {len(ds.test_y)}, "
      f"{ds.num_classes} classes, input {ds.input_shape}; {keep.shape[0]} models, "
      f"{int(keep.sum(1).mean())} training examples each")
  t_claimed = time.perf_counter()
  dp_plan, epsilon = None, None
  if config.dp.enabled:
    calibration = Progress(log, "DP-SGD noise calibration")
    if float(config.dp.target_epsilon) > 0:
      log(f"DP-SGD: calibrating the noise for epsilon {float(config.dp.target_epsilon):g} "
          f"({config.dp.accountant.upper()} accountant; seconds per evaluation) ...")
    evaluations = []

    def calibrating(accountant: str, sigma: float) -> None:
      evaluations.append(sigma)
      calibration.update(len(evaluations), None,
                         f" {accountant.upper()} evaluations (sigma {sigma:.4f})")

    dp_plan = dp_lib.plan(config.dp, keep, int(config.train.batch_size), int(config.train.epochs),
                          progress=calibrating)
    epsilon = dp_plan.epsilon()
    log(f"DP-SGD: noise multiplier {dp_plan.noise_multiplier:.4f}, clip {config.dp.clip_norm}, "
        f"{config.dp.sampling} sampling (expected batch {dp_plan.expected_batch_size:g}, padded "
        f"to {dp_plan.max_batch}), {dp_plan.steps} steps: epsilon {epsilon:.3f} "
        f"({dp_plan.accountant.upper()}) at delta {dp_plan.delta:.2e}; planned in "
        f"{calibration.seconds:.1f}s")
  np.save(os.path.join(workdir, "keep.npy"), keep)
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

  if dp_plan is not None:
    log(f"DP-SGD: epsilon {epsilon:.3f} ({dp_plan.accountant.upper()}) at delta "
        f"{dp_plan.delta:.2e} for the {dp_plan.steps} planned steps of each model")

  dtype = np.float16 if config.inference.dtype == "float16" else np.float32
  bs = int(config.inference.batch_size)
  num_models = keep.shape[0]
  log(f"inference: {num_models} models on {len(ds.pool_y)} pool and {len(ds.test_y)} test "
      "examples, eval mode ...")
  querying = Progress(log, "inference")
  logits = inference.query_logits(
      model, result.state, ds.pool_x, config.data.queries, bs, dtype,
      augment_cfg=config.train.augment,
      progress=lambda m, total: querying.update(m, 2 * total, " model passes"))
  test_logits = inference.query_logits(
      model, result.state, ds.test_x, config.data.queries, bs, dtype,
      augment_cfg=config.train.augment,
      progress=lambda m, total: querying.update(total + m, 2 * total, " model passes"))
  report.save_npz_atomic(os.path.join(workdir, "logits.npz"), logits=logits, labels=ds.pool_y,
                         keep=keep, population_logits=test_logits, population_labels=ds.test_y)
  log(f"inference: logits [M, N, Q, C] = {list(logits.shape)} in {querying.seconds:.1f}s")
  t_infer = time.perf_counter()

  attack_data = attacks.AttackData(logits=logits, labels=ds.pool_y, keep=keep,
                                   population_logits=test_logits, population_labels=ds.test_y)
  header = {
      "source": {"mode": "train"},
      "dataset": {"name": ds.name, "pool_size": int(len(ds.pool_y)),
                  "val_size": int(len(ds.val_y)), "test_size": int(len(ds.test_y)),
                  "num_classes": int(ds.num_classes), "num_queries": int(logits.shape[2]),
                  "queries": inference.query_record(config.data.queries, config.train.augment,
                                                    ds.pool_x.ndim - 1)},
      "models": {"epochs_run": result.epochs_run, "strategy": result.strategy,
                 "history": result.history},
      "timing": {"data_s": t_claimed - t_start,
                 **({"dp_calibration_s": t_data - t_claimed} if dp_plan is not None else {}),
                 "train_s": t_train - t_data,
                 "inference_s": t_infer - t_train, "resumed_from_epoch": result.resumed_from},
      "canaries": canaries.tolist(),
  }
  if dp_plan is not None:
    header["privacy"] = {
        "epsilon": epsilon, "delta": dp_plan.delta,
        "noise_multiplier": dp_plan.noise_multiplier, "clip_norm": float(config.dp.clip_norm),
        "sampling": dp_plan.sampling, "accountant": dp_plan.accountant, "steps": dp_plan.steps,
        "expected_batch_size": dp_plan.expected_batch_size, "max_batch": dp_plan.max_batch,
        "sampling_rate": dp_plan.sampling_rate, "clipping": config.dp.clipping,
        "fault": dp_plan.fault, "private": not dp_plan.fault}
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
  validation.check_numbers(config)
  validation.validate_attack(config.attack)
  workdir_lib.inspect(workdir, "attack_only")
  attack_data = logits_io.load(path)
  m, n, q, c = attack_data.logits.shape
  validation.validate_attack(config.attack, m)
  for t in attack_targets(int(config.attack.num_targets), m):
    members = int(np.sum(attack_data.keep[t]))
    if members in (0, n):
      raise DataError(f"{path}: target model {t} has {members} members among the {n} examples; "
                      f"each target needs members and non-members (fix keep[{t}], or lower "
                      "--config.attack.num_targets to skip it)")
  fingerprint = {"logits_content": workdir_lib.file_digest(path)}
  claim = workdir_lib.claim(workdir, "attack_only", fingerprint, log=log,
                            process_index=jax.process_index())
  if claim.resumed:
    log(f"workdir {workdir} holds an audit of the same logits; its report is rewritten")
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
  try:
    return attack_and_report(attack_data, config, workdir, header, t_start, log)
  finally:
    claim.release()


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
  log(f"attacks: {len(acfg.names)} on {len(targets)} targets, each scored, evaluated with "
      "its 95% intervals and sliced ...")
  for k, name in enumerate(acfg.names):
    t0 = time.perf_counter()
    scores = all_scores[name] = attacks.run(name, attack_data, targets, **params_by_name[name])
    summaries[name], curves[name] = attack_eval.evaluate_scores(
        name, scores, attack_data.keep, targets, params=params_by_name[name],
        bootstrap=int(acfg.bootstrap), seed=seed)
    summaries[name]["slices"] = attack_eval.slice_summary(scores, keep_rows, attack_data.labels,
                                                          predictions)
    summaries[name]["seconds"] = time.perf_counter() - t0
    first_scores[name] = scores[0]
    elapsed = time.perf_counter() - t_attack
    left = elapsed / (k + 1) * (len(acfg.names) - k - 1)
    s, fpr = summaries[name], report.headline_fpr([summaries[name]])
    num_non = s["per_target"][0]["num_nonmembers"]
    log(f"attack {name} (percent): AUC {100 * s['auc']['mean']:.2f}{report.interval_text(s.get('auc_ci95'))}"
        f", TPR at {report.alpha_text(fpr)} FPR {report.tpr_cell(s, fpr, num_non, spread=False)}"
        f" over {len(targets)} targets  "
        f"[{k + 1}/{len(acfg.names)}, {s['seconds']:.1f}s"
        + (f", about {left:.0f}s left]" if k + 1 < len(acfg.names) else "]"))
  privacy = canary_audit.run(attack_data, config, header, targets, all_scores, log)
  t_scaling = time.perf_counter()
  scaling_targets = targets[:int(acfg.get("scaling_targets", 0))]
  if scaling_targets:
    log(f"shadow-scaling curve: the shadow-based attacks with K references per example, on "
        f"{len(scaling_targets)} targets ...")
  scaling = (scaling_lib.shadow_scaling(attack_data, acfg.names, scaling_targets, params_by_name,
                                        seed) if scaling_targets else {})
  t_figures = time.perf_counter()
  if scaling_targets:
    log(f"shadow-scaling curve: done in {t_figures - t_scaling:.1f}s")
  log("figures and report ...")
  fig_dir = os.path.join(workdir, "figures")
  figures.roc(os.path.join(fig_dir, "roc.png"), curves, summaries)
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
  log(f"figures and report: done in {time.perf_counter() - t_figures:.1f}s")
  test_acc = models_info["test_accuracy"]
  log(f"test accuracy {models_info['mean_test_accuracy']:.4f} mean over the {len(test_acc)} "
      f"models (range {min(test_acc):.4f}-{max(test_acc):.4f}); report in "
      f"{os.path.join(workdir, 'report.md')}; total {timing['total_s']:.1f}s")
  return results


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


