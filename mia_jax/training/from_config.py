"""The config layer: the ONE place that reads a `train` config block, builds the primitives
(the optimizer, the step, the sampler, the mapping and its CPU kernels) and calls
ensemble.train_ensemble, chunk by chunk.

More models than fit in memory train in chunks of `cfg.chunk_size` models (0: all at once), one
after another, each with its own checkpoints under `checkpoint_dir/chunk_XXXX` (a single chunk
checkpoints in `checkpoint_dir` itself); a finished chunk is restored, not retrained. Chunks
pass their global model ids, so a model is the same whatever the chunking.
"""

import functools
import math
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mia_jax import kernels, mapping
from mia_jax.data import augment
from mia_jax.errors import ConfigError
from mia_jax.privacy import clipping, noise
from mia_jax.training import curriculum, ensemble, keys, optim, samplers, steps
from mia_jax.training import dp as dp_lib

STRATEGIES = mapping.STRATEGIES


def resolve_strategy(cfg: ml_collections.ConfigDict, model: nn.Module, sample_x
                     ) -> mapping.Strategy:
  """The mapping and convolutions of cfg.strategy / cfg.conv / cfg.lanes for `model`."""
  return mapping.resolve(cfg.strategy, model, sample_x, cfg.get("conv", "auto"),
                         lanes=cfg.get("lanes", 0))


def _dp_step(state, batch, key, *, dp_plan, label_smoothing, crop_padding, flip):
  """DP-SGD's step of today's path: clipped per-example gradients plus Gaussian noise (until
  mia_jax.training.dp builds it from the clipping transform and the privatiser). Every step
  updates, even on an empty batch; `correct` is NaN (no extra forward pass)."""
  if state.batch_stats:
    raise ConfigError("DP-SGD cannot train a model with BatchNorm (its batch statistics mix "
                      "examples); set --config.model.norm=group")
  aug_key, dropout_key = jax.random.split(key)
  x = augment.augment(aug_key, batch.x, crop_padding, flip)
  apply_fn = lambda params, inputs, rng: state.apply_fn(
      {"params": params}, inputs, train=True, rngs={} if rng is None else {"dropout": rng})
  sum_clip = math.inf if dp_plan.fault == "no_clipping" else dp_plan.clip_norm
  total, aux = clipping.clipped_grad_sum(apply_fn, state.params, x, batch.y, batch.mask,
                                         clip_norm=sum_clip, method=dp_plan.clipping,
                                         label_smoothing=label_smoothing, rng=dropout_key)
  sigma = 0.0 if dp_plan.fault == "no_noise" else dp_plan.noise_multiplier
  grads = noise.privatize(total, jax.random.fold_in(key, 0x5EED), step=0, noise_multiplier=sigma,
                          clip_norm=dp_plan.clip_norm,
                          expected_batch_size=dp_plan.expected_batch_size)
  count = jnp.sum(batch.mask)
  return state.apply_gradients(grads), {"loss_sum": jnp.sum(aux.losses * batch.mask),
                                        "correct": jnp.nan * count, "count": count}


class _PoissonBatches:
  """Today's Poisson batches of a DP plan (dp.poisson_epoch_batches) as a sampler."""

  def __init__(self, keep, dp_plan, seed):
    self.keep, self.plan, self.seed = keep, dp_plan, seed
    self.steps_per_epoch, self.batch_size = dp_plan.steps_per_epoch, dp_plan.max_batch

  def epoch(self, epoch, model_ids):
    idx, mask = dp_lib.poisson_epoch_batches(self.keep[model_ids], self.plan, self.seed, epoch,
                                             model_ids=model_ids)
    return idx.transpose(1, 0, 2), mask.transpose(1, 0, 2) > 0


def make_sampler(cfg, keep, seed, dp_plan=None, difficulty=None):
  """The sampler of the config: Poisson (DP-SGD's), curriculum or uniform batches; the steps per
  epoch are those of the whole ensemble (chunking-invariant)."""
  if dp_plan is not None and dp_plan.sampling == "poisson":
    return _PoissonBatches(keep, dp_plan, seed)
  if cfg.get("curriculum") is not None and bool(cfg.curriculum.enabled):
    return samplers.CurriculumSampler(keep, int(cfg.batch_size), seed, difficulty,
                                      curriculum.schedule_for(cfg.curriculum, int(cfg.epochs)))
  return samplers.UniformSampler(keep, int(cfg.batch_size), seed)


def make_step(cfg, conv: str, dp_plan=None) -> Callable:
  """The train step of the config (plain, or DP-SGD's), its pooling rewritten (kernels) unless
  conv is 'lax'."""
  aug = dict(crop_padding=int(cfg.augment.crop_padding), flip=bool(cfg.augment.flip))
  if dp_plan is None:
    step = steps.make_train_step(label_smoothing=float(cfg.label_smoothing), **aug)
  else:
    step = functools.partial(_dp_step, dp_plan=dp_plan,
                             label_smoothing=float(cfg.label_smoothing), **aug)
  rewritten = step if conv == "lax" else kernels.with_window_max(step)
  rewritten.runs_empty_batches = dp_plan is not None
  return rewritten


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
  tx = optim.make_optimizer(cfg, sampler.steps_per_epoch)
  step = make_step(cfg, strategy.conv, dp_plan)
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
