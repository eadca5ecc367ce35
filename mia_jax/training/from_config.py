"""The config layer: the ONE place that reads a `train` config block, builds the primitives
(the optimizer, the step, the sampler, the mapping and its CPU kernels) and calls
ensemble.train_ensemble, chunk by chunk.

More models than fit in memory train in chunks of `cfg.chunk_size` models (0: all at once), one
after another, each with its own checkpoints under `checkpoint_dir/chunk_XXXX` (a single chunk
checkpoints in `checkpoint_dir` itself); a finished chunk is restored, not retrained. Chunks
pass their global model ids, so a model is the same whatever the chunking.
"""

import functools
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mia_jax import kernels, mapping
from mia_jax.errors import ConfigError
from mia_jax.training import curriculum, ensemble, keys, losses, optim, samplers, steps
from mia_jax.training import dp as dp_lib

STRATEGIES = mapping.STRATEGIES


def resolve_strategy(cfg: ml_collections.ConfigDict, model: nn.Module, sample_x
                     ) -> mapping.Strategy:
  """The mapping and convolutions of cfg.strategy / cfg.conv / cfg.lanes for `model`."""
  return mapping.resolve(cfg.strategy, model, sample_x, cfg.get("conv", "auto"),
                         lanes=cfg.get("lanes", 0))


def make_sampler(cfg, keep, seed, dp_plan=None, difficulty=None):
  """The sampler of the config: DP-SGD's (Poisson, or uniform batches of the plan's size),
  curriculum or uniform batches; steps per epoch those of the whole ensemble (chunking-invariant)."""
  if dp_plan is not None:
    return dp_lib.make_sampler(dp_plan, keep, seed)
  if cfg.get("curriculum") is not None and bool(cfg.curriculum.enabled):
    return samplers.CurriculumSampler(keep, int(cfg.batch_size), seed, difficulty,
                                      curriculum.schedule_for(cfg.curriculum, int(cfg.epochs)))
  return samplers.UniformSampler(keep, int(cfg.batch_size), seed)


def make_step(cfg, conv: str, tx: optax.GradientTransformation, dp_plan=None
              ) -> tuple[Callable, optax.GradientTransformation]:
  """The train step of the config and the optimizer its states need: (plain step, tx), or
  DP-SGD's (dp.make_step: the privatiser chained before tx); the step's max-pooling rewritten
  (kernels.with_window_max) unless conv is 'lax'."""
  aug = dict(crop_padding=int(cfg.augment.crop_padding), flip=bool(cfg.augment.flip))
  loss_fn = functools.partial(losses.softmax_cross_entropy,
                              label_smoothing=float(cfg.label_smoothing))
  if dp_plan is None:
    step = steps.make_train_step(loss_fn=loss_fn, **aug)
  else:
    step, tx = dp_lib.make_step(dp_plan, loss_fn, tx=tx, **aug)
  if conv != "lax":
    empty = getattr(step, "runs_empty_batches", False)
    step = kernels.with_window_max(step)
    step.runs_empty_batches = empty
  return step, tx


def _check(cfg, keep, val, dp_plan, difficulty) -> None:
  if cfg.get("curriculum") is not None and bool(cfg.curriculum.enabled):
    curriculum.validate(cfg.curriculum)
    if dp_plan is not None:
      raise ConfigError("curriculum learning with DP-SGD is not supported: Poisson sampling "
                        "over a growing subset needs its own accounting; disable one of them")
    if difficulty is None or np.shape(difficulty) != (keep.shape[1],):
      raise ConfigError(f"train.curriculum.enabled needs difficulty [N]=[{keep.shape[1]}] per "
                        "pool example; compute it with from_config.reference_difficulty")
  if int(cfg.early_stopping_patience) > 0 and val is None:
    raise ConfigError("early stopping needs a validation split; set --config.data.val_size>0")
  if int(cfg.get("chunk_size", 0)) < 0:
    raise ConfigError(f"train.chunk_size={cfg.chunk_size} must be >= 0 (0: all models in one "
                      "chunk)")


def train_from_config(model: nn.Module, cfg: ml_collections.ConfigDict, pool_x: np.ndarray,
                      pool_y: np.ndarray, keep: np.ndarray, *, seed: int,
                      val: tuple[np.ndarray, np.ndarray] | None = None,
                      checkpoint_dir: str | None = None,
                      log: Callable[[str], None] = print,
                      dp_plan: "dp_lib.DPPlan | None" = None,
                      difficulty: np.ndarray | None = None) -> ensemble.TrainResult:
  """Trains M = keep.shape[0] models; model m sees only pool examples i with keep[m, i].

  Args:
    model: the flax module (one model; parameters get a leading model axis).
    cfg: the `train` config block (epochs, batch_size, optimizer, ..., strategy, and optionally
      chunk_size (models per chunk; 0 = all), conv ('auto', 'lax', 'im2col', 'forward') and
      lanes (the loop's groups of models trained at once, in threads; 0 = auto)).
    pool_x, pool_y: the pool [N, ...], [N].
    keep: bool [M, N].
    seed: the training seed (initialisation, batches, dropout, augmentation).
    val: (x, y) held out from every model, for early stopping when cfg.early_stopping_patience.
    checkpoint_dir: where to checkpoint (cfg.checkpoint_seconds) and resume from; None disables
      both.
    log: receives one progress line per epoch.
    dp_plan: train every model with DP-SGD (mia_jax.training.dp.plan): Poisson batches (or
      shuffled ones) of the plan's expected size, per-example clipping and Gaussian noise.
    difficulty: float [N], higher = harder; required when cfg.curriculum.enabled, which then
      opens each model's examples easiest first by the pacing of cfg.curriculum.
  """
  _check(cfg, keep, val, dp_plan, difficulty)
  strategy = resolve_strategy(cfg, model, pool_x[:1])
  sampler = make_sampler(cfg, keep, seed, dp_plan, difficulty)
  step, tx = make_step(cfg, strategy.conv, optim.make_optimizer(cfg, sampler.steps_per_epoch),
                       dp_plan)
  apply_fn = kernels.with_convolutions(model.apply, strategy.conv)
  # Vmapped over the models, a forward convolution becomes a grouped one (slow on a CPU):
  # evaluation, which has no gradients, runs forward's convolutions as im2col's matmuls.
  eval_apply = kernels.with_convolutions(apply_fn, "im2col" if strategy.conv == "forward"
                                         else strategy.conv)
  stopping = None
  if int(cfg.early_stopping_patience) > 0:
    stopping = ensemble.EarlyStopping(int(cfg.early_stopping_patience), val[0], val[1],
                                      eval_apply)
  num_models = keep.shape[0]
  size = int(cfg.get("chunk_size", 0)) or num_models
  starts = list(range(0, num_models, min(size, num_models)))
  results = []
  for c, start in enumerate(starts):
    ids = np.arange(start, min(start + size, num_models), dtype=np.int32)
    prefix = f"chunk {c + 1}/{len(starts)} (models {ids[0]}-{ids[-1]})  " if len(starts) > 1 else ""
    policy = None
    if checkpoint_dir:
      folder = os.path.join(checkpoint_dir, f"chunk_{c:04d}") if len(starts) > 1 else checkpoint_dir
      policy = ensemble.CheckpointPolicy(folder, float(cfg.get("checkpoint_seconds", 0.0)))
    init = steps.init_ensemble(model, tx, keys.model_keys(seed, ids), jnp.asarray(pool_x[:1]),
                               apply_fn)
    results.append(ensemble.train_ensemble(
        step, init, sampler, strategy.mapping, pool_x=pool_x, pool_y=pool_y,
        epochs=int(cfg.epochs), seed=seed, model_ids=ids, early_stopping=stopping,
        checkpoint=policy, log=lambda s, p=prefix: log(p + s), chunks_after=len(starts) - 1 - c))
  return _merged(results, strategy.name)


def _merged(results: list, strategy: str) -> ensemble.TrainResult:
  """One TrainResult of the chunks' results (states concatenated, histories merged)."""
  state = jax.tree.map(lambda *a: np.concatenate(a), *[r.state for r in results])
  return ensemble.TrainResult(
      state=state, history=merge_histories([r.history for r in results]),
      epochs_run=max(r.epochs_run for r in results),
      resumed_from=next((r.resumed_from for r in results if r.resumed_from), 0),
      strategy=strategy)


def merge_histories(histories: list[list[dict]]) -> list[dict]:
  """Per epoch, the chunks' per-model lists concatenated (None for a chunk already stopped)."""
  if len(histories) == 1:
    return histories[0]
  merged = []
  for e in range(max(len(h) for h in histories)):
    record = {"epoch": e + 1, "seconds": 0.0}
    for h in histories:
      size = len(h[0]["loss"])
      rec = h[e] if e < len(h) else {}
      record["seconds"] += rec.get("seconds", 0.0)
      for k in ("loss", "accuracy", "val_accuracy"):
        if k in h[0]:
          record.setdefault(k, []).extend(rec.get(k, [None] * size))
    merged.append(record)
  return merged


def reference_difficulty(model: nn.Module, train_cfg: ml_collections.ConfigDict,
                         ref_x: np.ndarray, ref_y: np.ndarray, x: np.ndarray, y: np.ndarray, *,
                         seed: int, batch_size: int = 1024,
                         log: Callable[[str], None] = lambda s: None) -> np.ndarray:
  """Difficulty [N] of (x, y) by train_cfg.curriculum.difficulty of ONE reference model of the
  same architecture trained for curriculum.reference_epochs epochs on (ref_x, ref_y), data that
  no audited model trains on (e.g. the validation split); queried in eval mode."""
  cur = train_cfg.curriculum
  if len(ref_y) == 0:
    raise ConfigError("curriculum learning scores difficulty with a reference model trained on "
                      "the validation split; set --config.data.val_size > 0")
  cfg = ml_collections.ConfigDict(train_cfg.to_dict())
  cfg.curriculum.enabled = False
  cfg.early_stopping_patience = 0
  cfg.epochs = int(cur.reference_epochs)
  cfg.chunk_size = 0
  res = train_from_config(model, cfg, ref_x, ref_y, np.ones((1, len(ref_y)), bool),
                          seed=seed + 7919, log=lambda s: log(f"curriculum reference  {s}"))
  variables = steps.variables_of(jax.tree.map(lambda a: a[0], res.state.params),
                                 jax.tree.map(lambda a: a[0], res.state.batch_stats))
  logits = jax.jit(lambda v, inputs: steps.predict(model, v, inputs, batch_size))(
      variables, jnp.asarray(x))
  return curriculum.difficulty(np.asarray(logits, np.float32), y, str(cur.difficulty))
