"""Train M models together, each only on its own kept pool examples.

The single-model `steps.train_step` is mapped over the leading model axis of the stacked state;
how it is mapped (vmap, loop, shared batch, sharded over devices and hosts, auto) is chosen in
`strategies` and only there (`cfg.strategy`). Every strategy trains the same models: batches,
dropout and augmentation keys depend only on (seed, model id, epoch, step), never on which other
models train beside it.

An epoch is one pass of each model over its own kept examples, in batches of `batch_size`
drawn without replacement; the last batch is padded (with the model's own examples, mask 0).
A checkpoint is written once `cfg.checkpoint_seconds` of training have passed since the last one
(every epoch when 0), and after the last epoch: an orbax save costs a few tenths of a second
whatever the state's size, more than an epoch of a small ensemble. Training resumes from the
latest checkpoint by default; the epochs after it are trained again, and since an epoch's
batches and keys depend only on (seed, model id, epoch), the result is bit-identical.

More models than fit in memory train in chunks of `cfg.chunk_size` models (0: all at once),
one after another, each with its own checkpoints under `checkpoint_dir/chunk_XXXX` (a single
chunk checkpoints in `checkpoint_dir` itself); a finished chunk is restored, not retrained.
Chunks pass their global model ids, so a model is the same whatever the chunking.
"""

import dataclasses
import functools
import os
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mia_jax.errors import ConfigError
from mia_jax.training import checkpoint as ckpt_lib
from mia_jax.training import dp as dp_lib
from mia_jax.training import optim, steps, strategies

STRATEGIES = strategies.STRATEGIES


@dataclasses.dataclass
class TrainResult:
  state: steps.ModelState        # leaves [M, ...] (numpy); the best epoch's under early stopping
  history: list[dict]            # one record per epoch, per-model lists inside
  epochs_run: int
  resumed_from: int              # epochs already done when this call started (0 = fresh)
  strategy: str = ""             # the resolved strategy, e.g. 'vmap+im2col'


def model_keys(seed: int, num_models: int, model_ids=None) -> jax.Array:
  """One key per model [M], a function of (seed, model id) only."""
  base = jax.random.key(seed)
  ids = jnp.arange(num_models) if model_ids is None else jnp.asarray(model_ids)
  return jax.vmap(lambda m: jax.random.fold_in(base, m))(ids)


def steps_per_epoch(keep: np.ndarray, batch_size: int) -> int:
  return int(np.ceil(keep.sum(axis=1).max() / batch_size))


def epoch_batches(keep: np.ndarray, batch_size: int, seed: int, epoch: int,
                  model_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Batches of one epoch: idx int32 [S, M, B] into the pool and mask float32 [S, M, B].

  Model m's order is a permutation of its kept examples drawn from (seed, epoch, model_ids[m])
  (model_ids defaults to 0..M-1); after its last real batch, positions wrap around to its own
  examples with mask 0.
  """
  num_models = keep.shape[0]
  if model_ids is None:
    model_ids = np.arange(num_models)
  s = steps_per_epoch(keep, batch_size)
  idx = np.zeros((num_models, s * batch_size), np.int32)
  mask = np.zeros((num_models, s * batch_size), np.float32)
  for m in range(num_models):
    own = np.flatnonzero(keep[m])
    perm = np.random.default_rng([seed, epoch, int(model_ids[m])]).permutation(own)
    idx[m] = np.resize(perm, s * batch_size)
    mask[m, :len(perm)] = 1.0
  shape = (num_models, s, batch_size)
  return (idx.reshape(shape).transpose(1, 0, 2).copy(),
          mask.reshape(shape).transpose(1, 0, 2).copy())


def make_eval_fn(model: nn.Module, conv: str = "lax") -> Callable:
  """Jitted `(params[M], batch_stats[M], x, y) -> accuracy [M]` in eval mode."""
  return strategies.Strategy("vmap", conv).eval_fn(model)


def init_ensemble(model: nn.Module, tx, seed: int, num_models: int, sample_x,
                  model_ids=None) -> steps.ModelState:
  init = jax.jit(jax.vmap(lambda k: steps.init_state(model, tx, k, sample_x)))
  return init(model_keys(seed, num_models, model_ids))


def resolve_strategy(strategy: str, model: nn.Module, sample_x=None) -> str:
  """The name of the strategy `auto` (or `strategy`) resolves to (see strategies.resolve)."""
  if sample_x is None:
    sample_x = np.zeros((1, 8, 8, 1), np.float32)
  return strategies.resolve(strategy, model, sample_x).name


@dataclasses.dataclass
class _Chunk:
  """What one chunk of models ended with (host arrays)."""
  state: steps.ModelState
  history: list[dict]
  epochs_run: int
  resumed_from: int


def train_ensemble(model: nn.Module, cfg: ml_collections.ConfigDict, pool_x: np.ndarray,
                   pool_y: np.ndarray, keep: np.ndarray, *, seed: int,
                   val: tuple[np.ndarray, np.ndarray] | None = None,
                   checkpoint_dir: str | None = None,
                   log: Callable[[str], None] = print,
                   dp_plan: "dp_lib.DPPlan | None" = None,
                   difficulty: np.ndarray | None = None) -> TrainResult:
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
      shuffled ones) of the plan's expected size, per-example clipping and Gaussian noise in the
      step. Its epsilon is the plan's (one accountant, logged by the pipeline), not logged per
      epoch: the PLD accountant takes seconds per evaluation.
    difficulty: float [N], higher = harder; required when cfg.curriculum.enabled, which then
      opens each model's examples easiest first by the pacing of cfg.curriculum
      (mia_jax.training.curriculum; e.g. curriculum.reference_difficulty).
  """
  num_models = keep.shape[0]
  batches = epoch_batches          # (keep, batch_size, seed, epoch, model_ids) -> idx, mask
  if cfg.get("curriculum") is not None and bool(cfg.curriculum.enabled):
    from mia_jax.training import curriculum  # pylint: disable=import-outside-toplevel
    curriculum.validate(cfg.curriculum)
    if dp_plan is not None:
      raise ConfigError("curriculum learning with DP-SGD is not supported: Poisson sampling "
                        "over a growing subset needs its own accounting; disable one of them")
    if difficulty is None or np.shape(difficulty) != (keep.shape[1],):
      raise ConfigError(f"train.curriculum.enabled needs difficulty [N]=[{keep.shape[1]}] per "
                        "pool example; compute it with curriculum.reference_difficulty")
    batches = functools.partial(curriculum.curriculum_epoch_batches,
                                difficulty=np.asarray(difficulty, np.float64),
                                pacing=curriculum.schedule_for(cfg.curriculum, int(cfg.epochs)))
  strategy = strategies.resolve(cfg.strategy, model, pool_x[:1], cfg.get("conv", "auto"),
                                lanes=cfg.get("lanes", 0))
  patience = int(cfg.early_stopping_patience)
  if patience > 0 and val is None:
    raise ConfigError("early stopping needs a validation split; set --config.data.val_size>0")
  chunk = int(cfg.get("chunk_size", 0))
  if chunk < 0:
    raise ConfigError(f"train.chunk_size={chunk} must be >= 0 (0: all models in one chunk)")
  chunk = num_models if chunk == 0 else min(chunk, num_models)
  starts = list(range(0, num_models, chunk))
  spe = steps_per_epoch(keep, int(cfg.batch_size))   # of the whole ensemble: chunking-invariant
  if dp_plan is not None:
    spe = dp_plan.steps_per_epoch
  chunks = []
  for c, start in enumerate(starts):
    ids = np.arange(start, min(start + chunk, num_models))
    prefix = f"chunk {c + 1}/{len(starts)} (models {ids[0]}-{ids[-1]})  " if len(starts) > 1 else ""
    cdir = checkpoint_dir
    if checkpoint_dir and len(starts) > 1:
      cdir = os.path.join(checkpoint_dir, f"chunk_{c:04d}")
    chunks.append(_train_chunk(model, cfg, strategy, pool_x, pool_y, keep, ids, spe, seed=seed,
                               val=val, checkpoint_dir=cdir,
                               log=lambda s, p=prefix: log(p + s), dp_plan=dp_plan,
                               batches=batches, chunks_after=len(starts) - 1 - c))
  state = jax.tree.map(lambda *a: np.concatenate(a), *[c.state for c in chunks])
  return TrainResult(state=state, history=_merge_histories([c.history for c in chunks]),
                     epochs_run=max(c.epochs_run for c in chunks),
                     resumed_from=next((c.resumed_from for c in chunks if c.resumed_from), 0),
                     strategy=strategy.name)


def time_left(compute_s: list[float], save_s: list[float], epochs_left: int,
              every_s: float) -> tuple[float, bool]:
  """Seconds the remaining epochs will take, their checkpoints included, and whether that is
  only an upper bound.

  compute_s: the seconds of the epochs run so far in this process (the first includes the
  compilation); save_s: the seconds of its checkpoint saves. An epoch is taken to cost the median
  of the epochs after the first; with only the first measured, its time bounds the others from
  above. Saves: one every `every_s` seconds of training (every epoch when 0), and the last, each
  costing the mean save so far (before the first: the first epoch's time, compilation included,
  which is more than an orbax save of a small state).
  """
  if epochs_left <= 0:
    return 0.0, False
  bound = len(compute_s) < 2
  epoch = compute_s[0] if bound else float(np.median(compute_s[1:]))
  training = epochs_left * epoch
  saves = epochs_left if every_s <= 0 else min(epochs_left, int(training // every_s) + 1)
  save = float(np.mean(save_s)) if save_s else compute_s[0]   # no save yet: the first epoch's
  return training + saves * save, bound


def _merge_histories(histories: list[list[dict]]) -> list[dict]:
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


def _train_chunk(model, cfg, strategy: strategies.Strategy, pool_x, pool_y, keep, ids, spe, *,
                 seed, val, checkpoint_dir, log, dp_plan=None, batches=epoch_batches,
                 chunks_after: int = 0) -> _Chunk:
  """Trains the models `ids` (global ids) of the ensemble; returns host arrays. The time left
  it logs counts the `chunks_after` chunks still to train, each as long as this one."""
  num_real = len(ids)
  # Sharded: pad to a multiple of the devices with copies of the last model, never active.
  pad = (-num_real) % strategy.model_multiple()
  ids_p = np.concatenate([ids, np.full(pad, ids[-1])]).astype(np.int32)
  keep_c = keep[ids_p]
  batch_size = int(cfg.batch_size)
  tx = optim.make_optimizer(cfg, spe)
  dp_step = None
  if dp_plan is not None:
    dp_step = dp_lib.DPStepConfig(clip_norm=dp_plan.clip_norm,
                                  noise_multiplier=dp_plan.noise_multiplier,
                                  expected_batch_size=dp_plan.expected_batch_size,
                                  method=dp_plan.clipping, fault=dp_plan.fault)
  step_cfg = steps.StepConfig(label_smoothing=float(cfg.label_smoothing),
                              crop_padding=int(cfg.augment.crop_padding),
                              flip=bool(cfg.augment.flip), dp=dp_step)
  patience = int(cfg.early_stopping_patience)
  n = len(ids_p)

  state = init_ensemble(model, tx, seed, n, jnp.asarray(pool_x[:1]), ids_p)
  state = jax.tree.map(np.asarray, state)
  best = jax.tree.map(np.copy, state) if patience > 0 else None
  es = {"best_val": [-1.0] * n, "bad_epochs": [0] * n, "active": [True] * num_real + [False] * pad}
  history: list[dict] = []
  start = 0
  ckpt = ckpt_lib.Checkpointer(checkpoint_dir) if checkpoint_dir else None
  if ckpt is not None and ckpt.latest_step() is not None:
    start = ckpt.latest_step()
    (state, best), meta = ckpt.restore(start, (state, best))
    es, history = meta["early_stopping"], meta["history"]
    log(f"resumed from the checkpoint of epoch {start} in {checkpoint_dir}")
  resumed_from = start
  epochs = int(cfg.epochs)
  done = start >= epochs or not any(es["active"])
  if done:
    if ckpt is not None:
      ckpt.close()
    final = best if best is not None else state
    return _Chunk(jax.tree.map(lambda a: a[:num_real], final), history, start, resumed_from)

  state = strategy.running(state)
  best = strategy.running(best) if best is not None else None
  run_epoch = strategy.epoch_fn(model, tx, step_cfg)
  eval_fn = strategy.eval_fn(model) if patience > 0 else None
  select = jax.jit(lambda sel, b, s: jax.tree.map(
      lambda bb, ss: jnp.where(sel.reshape((-1,) + (1,) * (ss.ndim - 1)), ss, bb), b, s))
  px, py = strategy.replicate((np.asarray(pool_x), np.asarray(pool_y)))
  vals = strategy.replicate((np.asarray(val[0]), np.asarray(val[1]))) if eval_fn else None
  model_ids = strategy.put(ids_p)
  epoch = start
  every_s = float(cfg.get("checkpoint_seconds", 0.0))
  last_save = time.perf_counter()
  compute_s, save_s = [], []          # this call's epochs and checkpoint saves
  while not done:
    t0 = time.perf_counter()
    if dp_plan is not None and dp_plan.sampling == "poisson":
      idx, mask = dp_lib.poisson_epoch_batches(keep_c, dp_plan, seed, epoch, model_ids=ids_p)
    else:
      idx, mask = batches(keep_c, batch_size=batch_size, seed=seed, epoch=epoch,
                          model_ids=ids_p)
    active = strategy.put(np.asarray(es["active"], np.float32))
    state, metrics = run_epoch(state, px, py, strategy.put(idx, axis=1),
                               strategy.put(mask, axis=1), model_ids, np.uint32(seed),
                               np.int32(epoch * spe), active)
    metrics = strategy.get(metrics)
    count = np.maximum(metrics["count"], 1)
    record = {"epoch": epoch + 1, "loss": (metrics["loss_sum"] / count)[:num_real].tolist(),
              "accuracy": (metrics["correct"] / count)[:num_real].tolist()}
    if eval_fn is not None:
      # Group by group (the loop's lanes): no stacked copy of the whole ensemble.
      groups = strategy.groups(state)
      val_acc = np.concatenate([strategy.get(eval_fn(g.params, g.batch_stats, *vals))
                                for g in groups])
      improved = np.asarray(es["active"]) & (val_acc > np.asarray(es["best_val"]))
      bounds = strategies.group_starts(groups)
      best = strategy.from_groups([
          select(strategy.put(improved[lo:hi]), b, g)
          for lo, hi, b, g in zip(bounds[:-1], bounds[1:], strategy.groups(best), groups)])
      del groups
      for m in range(n):
        if not es["active"][m]:
          continue
        if improved[m]:
          es["best_val"][m], es["bad_epochs"][m] = float(val_acc[m]), 0
        else:
          es["bad_epochs"][m] += 1
          es["active"][m] = es["bad_epochs"][m] < patience
      record["val_accuracy"] = val_acc[:num_real].tolist()
    compute_s.append(time.perf_counter() - t0)
    record["seconds"] = compute_s[-1]
    history.append(record)
    epoch += 1
    done = epoch >= epochs or not any(es["active"])
    saved = ""
    if ckpt is not None and (done or time.perf_counter() - last_save >= every_s):
      t_save = time.perf_counter()
      ckpt.save(epoch, (strategy.get_stacked(state),
                        strategy.get_stacked(best) if best is not None else None),
                {"early_stopping": es, "history": history})
      last_save = time.perf_counter()
      save_s.append(last_save - t_save)
      saved = f" (checkpoint {save_s[-1]:.1f}s)"
    record["seconds"] = time.perf_counter() - t0     # the epoch's wall time, its save included
    examples = float(metrics["count"].sum())
    left, bound = time_left(compute_s, save_s, epochs - epoch, every_s)
    if chunks_after:
      left += chunks_after * time_left(compute_s, save_s, epochs - start, every_s)[0]
    line = f"epoch {epoch}/{epochs}  loss {np.mean(record['loss']):.4f}  "
    if np.isfinite(np.mean(record["accuracy"])):   # DP-SGD's step computes no accuracy
      line += f"accuracy {np.mean(record['accuracy']):.4f}  "
    if "val_accuracy" in record:
      line += (f"val {np.mean(record['val_accuracy']):.4f}  "
               f"active {sum(es['active'])}/{num_real}  ")
    finished = done and not chunks_after
    if finished:
      eta = "time left 0s"
    elif bound:      # the first epoch of this process compiled the step: no honest estimate yet
      eta = "time left ? (this epoch compiled the step)"
    else:
      eta = f"time left {left:.0f}s"
    log(line + f"{examples / compute_s[-1]:,.0f} examples/s  {record['seconds']:.1f}s{saved}  "
        + eta)
  if ckpt is not None:
    ckpt.close()
  final = strategy.get_stacked(best if best is not None else state)
  return _Chunk(jax.tree.map(lambda a: a[:num_real], final), history, epoch, resumed_from)
