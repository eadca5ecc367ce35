"""One audit as data flowing through stages, each writing its output to the workdir.

Training mode (`run`), each stage a function a script can compose (experiments/paper_table.py
does):

  load_inputs (data.load, canaries, models.build, membership.keep_matrix)
  -> plan_dp (DP-SGD only) -> train_models (orbax checkpoints, resumed)
  -> query_models (logits.npz) -> attack_and_report

Attack-only mode (`run_attack_only`, config.logits = a .npz file, e.g. from PyTorch models):

  logits_io.load (checked) -> attack_and_report

`attack_and_report` (mia_jax.attack_stage), the stage both modes share: the post-hoc defense
(`defense.post_hoc`, off by default), every attack on every target, the shadow-scaling curve,
figures/, the analysis stage (`analysis.enabled`, training mode only, off by default:
mia_jax.analysis.stage, written to WORKDIR/analysis/), results.json and report.md.

Everything the config names, the data's content and the logits file are checked before the
workdir is touched; the workdir is then claimed for the run (mia_jax.workdir: its record, its
lock, the disk space): a workdir of another run, another kind of run, or a folder that is not a
mia_jax workdir is refused rather than overwritten. Each long stage logs its own progress.
"""

import os
import time
from typing import Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from mia_jax import attacks, data, inference, logits_io, models, report, validation
from mia_jax import workdir as workdir_lib
from mia_jax.analysis import stage as analysis_stage
from mia_jax.attack_stage import attack_and_report, attack_targets
from mia_jax.data import augment, canaries as canaries_lib, membership
from mia_jax.errors import ConfigError, DataError
from mia_jax.training import dp as dp_lib
from mia_jax.training import from_config


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


def load_inputs(config: ml_collections.ConfigDict):
  """The data (canaries planted), the model and the keep matrix a training run audits, the
  values that depend on the data checked (validation.validate_with_data).

  Returns:
    (ds, canaries int [K] pool indices, model, keep bool [M, N]).
  """
  ds = data.load(config.data)
  ds, canaries = canaries_lib.plant(ds, int(config.audit.num_canaries), int(config.data.seed))
  model = models.build(config.model, ds.num_classes)
  keep = membership.keep_matrix(int(config.membership.seed), int(config.membership.num_models),
                                len(ds.pool_y), float(config.membership.pkeep))
  validation.validate_with_data(config, ds, keep)
  return ds, canaries, model, keep


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print
        ) -> dict:
  """Trains the ensemble, queries it, and audits it; returns the results also written.

  Before any work, and before anything is written: the config (validation.validate), the
  workdir (workdir.inspect), the data's content (data.load checks it), the values that depend
  on it (validation.validate_with_data); then the workdir is claimed (its record and lock,
  a disk-space check for the checkpoints and logits: workdir.claim), and the lock is held until
  the run ends.
  """
  clock = report.StageClock()
  validation.validate(config)
  workdir_lib.inspect(workdir, "train")
  ds, canaries, model, keep = load_inputs(config)
  num_queries = len(augment.view_names(config.data.queries, int(config.train.augment.crop_padding),
                                       bool(config.train.augment.flip), ds.is_image))
  claim = workdir_lib.claim(workdir, "train", training_fingerprint(config, ds), log=log,
                            needed_bytes=validation.bytes_needed(config, model, ds, num_queries),
                            process_index=jax.process_index())
  try:
    return _train_and_audit(config, workdir, ds, canaries, model, keep, clock, log)
  finally:
    claim.release()


def plan_dp(config: ml_collections.ConfigDict, keep: np.ndarray,
            log: Callable[[str], None] = print):
  """(the DP-SGD plan of the run, noise calibrated when dp.target_epsilon > 0, and its
  epsilon), logged; (None, None) without DP."""
  if not config.dp.enabled:
    return None, None
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
  return dp_plan, epsilon


def train_models(config: ml_collections.ConfigDict, model, ds: data.Dataset, keep: np.ndarray,
                 checkpoint_dir: str, dp_plan=None, log: Callable[[str], None] = print):
  """Trains the M models of keep [M, N] on the N pool examples of ds (checkpoints in
  checkpoint_dir, resumed; ds.val for early stopping), the curriculum's reference difficulty
  first when train.curriculum is on; returns the trainer's TrainResult (state stacked [M, ...],
  history, epochs_run)."""
  val = (ds.val_x, ds.val_y) if len(ds.val_y) else None
  difficulty = None
  if config.train.get("curriculum") is not None and config.train.curriculum.enabled:
    difficulty = from_config.reference_difficulty(
        model, config.train, ds.val_x, ds.val_y, ds.pool_x, ds.pool_y, seed=int(config.seed),
        batch_size=int(config.inference.batch_size), log=log)
  result = from_config.train_from_config(
      model, config.train, ds.pool_x, ds.pool_y, keep, seed=int(config.seed), val=val,
      checkpoint_dir=checkpoint_dir, log=log, dp_plan=dp_plan,
      difficulty=difficulty)
  return result


def query_models(config: ml_collections.ConfigDict, model, state, inputs: Sequence[np.ndarray],
                 log: Callable[[str], None] = print) -> list[np.ndarray]:
  """Eval-mode logits [M, n, Q, C] of every model on each array of inputs ([n, ...] each), Q
  the views of data.queries (config.train.augment decides them), in config.inference.dtype."""
  dtype = np.float16 if config.inference.dtype == "float16" else np.float32
  batch_size = int(config.inference.batch_size)
  log(f"inference: {jax.tree.leaves(state.params)[0].shape[0]} models on "
      f"{' + '.join(str(len(x)) for x in inputs)} examples, eval mode ...")
  querying = Progress(log, "inference")
  outputs = []
  for k, x in enumerate(inputs):
    outputs.append(inference.query_logits(
        model, state, x, config.data.queries, batch_size, dtype,
        augment_cfg=config.train.augment,
        progress=lambda m, total, k=k: querying.update(k * total + m, len(inputs) * total,
                                                       " model passes")))
  log(f"inference: logits [M, N, Q, C] = {list(outputs[0].shape)} in {querying.seconds:.1f}s")
  return outputs


def privacy_header(config: ml_collections.ConfigDict, dp_plan, epsilon: float) -> dict:
  """results.json's "privacy" block of a DP-SGD run: the plan and its accounting."""
  return {
      "epsilon": epsilon, "delta": dp_plan.delta,
      "noise_multiplier": dp_plan.noise_multiplier, "clip_norm": float(config.dp.clip_norm),
      "sampling": dp_plan.sampling, "accountant": dp_plan.accountant, "steps": dp_plan.steps,
      "expected_batch_size": dp_plan.expected_batch_size, "max_batch": dp_plan.max_batch,
      "sampling_rate": dp_plan.sampling_rate, "clipping": config.dp.clipping,
      "fault": dp_plan.fault, "private": not dp_plan.fault}


def _training_header(config, ds, result, num_queries, canaries) -> dict:
  """The results entries of a training run's earlier stages (attack_and_report's header; the
  run's StageClock holds their seconds)."""
  return {
      "source": {"mode": "train"},
      "dataset": {"name": ds.name, "pool_size": int(len(ds.pool_y)),
                  "val_size": int(len(ds.val_y)), "test_size": int(len(ds.test_y)),
                  "num_classes": int(ds.num_classes), "num_queries": int(num_queries),
                  "queries": inference.query_record(config.data.queries, config.train.augment,
                                                    ds.pool_x.ndim - 1)},
      "models": {"epochs_run": result.epochs_run, "strategy": result.strategy,
                 "history": result.history},
      "timing": {"resumed_from_epoch": result.resumed_from},
      "canaries": canaries.tolist(),
  }


def _example_features(config: ml_collections.ConfigDict, ds: data.Dataset) -> dict:
  """AttackData's example features for the attacks that read inputs (quantile_regression:
  attacks.quantile.input_features, the population's principal components + the label), else
  none (their cost is paid only when such an attack runs)."""
  if "quantile_regression" not in tuple(config.attack.names):
    return {}
  features, population_features = attacks.quantile.input_features(
      ds.test_x, ds.test_y, ds.pool_x, ds.pool_y, ds.num_classes)
  return {"features": features, "population_features": population_features}


def _train_and_audit(config: ml_collections.ConfigDict, workdir: str, ds: data.Dataset,
                     canaries: np.ndarray, model, keep: np.ndarray,
                     clock: report.StageClock, log: Callable[[str], None]) -> dict:
  """run's stages once the workdir is claimed: DP calibration, training, inference, audit,
  and the analysis when analysis.enabled."""
  log(f"data {ds.name}: pool {len(ds.pool_y)}, val {len(ds.val_y)}, test {len(ds.test_y)}, "
      f"{ds.num_classes} classes, input {ds.input_shape}; {keep.shape[0]} models, "
      f"{int(keep.sum(1).mean())} training examples each")
  clock.lap("data")
  dp_plan, epsilon = plan_dp(config, keep, log)
  np.save(os.path.join(workdir, "keep.npy"), keep)
  clock.lap("dp_calibration" if dp_plan is not None else "data")
  result = train_models(config, model, ds, keep, os.path.join(workdir, "checkpoints"), dp_plan,
                        log)
  clock.lap("train")
  if dp_plan is not None:
    log(f"DP-SGD: epsilon {epsilon:.3f} ({dp_plan.accountant.upper()}) at delta "
        f"{dp_plan.delta:.2e} for the {dp_plan.steps} planned steps of each model")
  logits, test_logits = query_models(config, model, result.state, (ds.pool_x, ds.test_x), log)
  report.save_npz_atomic(os.path.join(workdir, "logits.npz"), logits=logits, labels=ds.pool_y,
                         keep=keep, population_logits=test_logits, population_labels=ds.test_y)
  clock.lap("inference")
  attack_data = attacks.AttackData(logits=logits, labels=ds.pool_y, keep=keep,
                                   population_logits=test_logits, population_labels=ds.test_y,
                                   **_example_features(config, ds))
  header = _training_header(config, ds, result, logits.shape[2], canaries)
  if dp_plan is not None:
    header["privacy"] = privacy_header(config, dp_plan, epsilon)
  analyse = None
  if analysis_stage.enabled(config.get("analysis")):
    include = np.ones(len(ds.pool_y), bool)
    include[canaries] = False

    def analyse(attacked: attacks.AttackData, scores: Mapping[str, np.ndarray]) -> dict:
      res = analysis_stage.analyse(config, ds, model, attacked, os.path.join(workdir, "analysis"),
                                   include, scores, log)
      return analysis_stage.summary(res, "analysis/analysis.md")

  return attack_and_report(attack_data, config, workdir, header, clock, log, analyse=analyse)


def _check_targets_of_file(path: str, attack_data: attacks.AttackData, num_targets: int) -> None:
  """DataError unless every target of the logits file has members and non-members."""
  n = attack_data.logits.shape[1]
  for t in attack_targets(num_targets, attack_data.num_models):
    members = int(np.sum(attack_data.keep[t]))
    if members in (0, n):
      raise DataError(f"{path}: target model {t} has {members} members among the {n} examples; "
                      f"each target needs members and non-members (fix keep[{t}], or lower "
                      "--config.attack.num_targets to skip it)")


def run_attack_only(config: ml_collections.ConfigDict, workdir: str,
                    log: Callable[[str], None] = print) -> dict:
  """Audits the models whose logits config.logits holds (logits_io.load), without training.

  The file and the config are checked before the workdir is created or touched; the outputs
  are those of `run` without checkpoints, keep.npy and logits.npz.
  """
  clock = report.StageClock()
  path = str(config.get("logits", "") or "")
  if not path:
    raise ConfigError("attack-only mode needs the logits file: pass --config.logits=FILE.npz")
  validation.validate_attack_only(config)
  if "quantile_regression" in tuple(config.attack.names):
    raise ConfigError("attack quantile_regression reads the examples' inputs, which a logits "
                      "file does not hold; leave it out of --config.attack.names (or run the "
                      "training pipeline)")
  workdir_lib.inspect(workdir, "attack_only")
  attack_data = logits_io.load(path)
  m, n, q, c = attack_data.logits.shape
  validation.validate_attack(config.attack, m)
  _check_targets_of_file(path, attack_data, int(config.attack.num_targets))
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
      "timing": {},
  }
  clock.lap("load")
  try:
    return attack_and_report(attack_data, config, workdir, header, clock, log)
  finally:
    claim.release()
