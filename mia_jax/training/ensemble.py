"""The ensemble trainer as a primitive: a step, a stacked initial state, a sampler, a mapping.

  result = train_ensemble(step, init_state, sampler, mapping, pool_x=x, pool_y=y, epochs=10,
                          seed=0)

`step(state, batch, key)` trains ONE model (steps.train_step, or DP-SGD's step);
`init_state` is the stacked TrainState [M, ...] (steps.init_ensemble); `sampler` gives each
epoch's batches (training.samplers protocol); `mapping` runs the step for every model
(mia_jax.mapping). Every model's batches and keys depend only on (seed, model id, epoch, step),
never on which other models train beside it, so every mapping trains the same models, and a
resumed run is bit-identical. The state the trainer holds is always the stacked [M, ...] pytree.

Early stopping (`EarlyStopping`) keeps each model's best epoch by validation accuracy and stops
a model after `patience` epochs without improvement; checkpoints (`CheckpointPolicy`) are saved
once `every_seconds` of training have passed since the last (every epoch when 0) and after the
last epoch, and training resumes from the latest by default (the epochs after it are trained
again). Config parsing and chunking live above, in training.from_config.
"""

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mia_jax.training import checkpoint as checkpoint_lib
from mia_jax.training import keys as keys_lib
from mia_jax.training import progress, steps
from mia_jax.training.state import TrainState


@dataclasses.dataclass
class TrainResult:
  state: TrainState              # leaves [M, ...] (numpy); the best epoch's under early stopping;
                                 # apply_fn and tx None: a result is compared and saved, not
                                 # stepped (its arrays alone: two runs' results compare equal)
  history: list[dict]            # one record per epoch, per-model lists inside
  epochs_run: int
  resumed_from: int              # epochs already done when this call started (0 = fresh)
  strategy: str = ""             # the resolved strategy, e.g. 'vmap+im2col'


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """Stop each model after `patience` epochs without a better accuracy on (val_x, val_y);
  keep its best epoch. apply_fn: the eval-mode apply (default: the state's)."""
  patience: int
  val_x: np.ndarray
  val_y: np.ndarray
  apply_fn: Callable | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
  """Checkpoint into `directory` once `every_seconds` of training passed (0: every epoch)."""
  directory: str
  every_seconds: float = 0.0


def _pad_models(state, model_ids: np.ndarray, multiple: int):
  """The state and ids padded to a multiple of `multiple` models with copies of the last."""
  pad = (-len(model_ids)) % multiple
  if pad == 0:
    return state, model_ids
  state = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]), state)
  return state, np.concatenate([model_ids, np.full(pad, model_ids[-1])]).astype(np.int32)


@jax.jit
def _select(improved, best, state):
  """best with the models where improved [M] replaced by state's."""
  return jax.tree.map(lambda b, s: jnp.where(improved.reshape((-1,) + (1,) * (s.ndim - 1)), s, b),
                      best, state)


class _Stopper:
  """Early stopping's record: best_val, bad_epochs and active per model (checkpointed)."""

  def __init__(self, num_models: int, num_real: int, patience: int):
    self.patience = patience
    self.record = {"best_val": [-1.0] * num_models, "bad_epochs": [0] * num_models,
                   "active": [True] * num_real + [False] * (num_models - num_real)}

  @property
  def active(self) -> np.ndarray:
    return np.asarray(self.record["active"], bool)

  def update(self, val_acc: np.ndarray) -> np.ndarray:
    """Records an epoch's accuracies [M]; returns the models that improved (bool [M])."""
    rec = self.record
    improved = self.active & (val_acc > np.asarray(rec["best_val"]))
    for m in np.flatnonzero(self.active):
      if improved[m]:
        rec["best_val"][m], rec["bad_epochs"][m] = float(val_acc[m]), 0
      else:
        rec["bad_epochs"][m] += 1
        rec["active"][m] = rec["bad_epochs"][m] < self.patience
    return improved


def _epoch_metrics(step, state, sampler, mapping, pool, epoch, seed, model_ids, active):
  """One epoch of every model: (state, host metrics {loss_sum, correct, count} [M])."""
  idx, mask = sampler.epoch(epoch, model_ids)
  first = epoch * sampler.steps_per_epoch
  step_keys = keys_lib.step_keys(seed, model_ids, first + np.arange(idx.shape[1]))
  state, metrics = mapping.epoch(step, state, *pool, idx, np.asarray(mask, np.float32),
                                 step_keys, np.asarray(active, np.float32))
  return state, mapping.get(metrics)


def train_ensemble(step: Callable, init_state: TrainState, sampler, mapping, *,
                   pool_x: np.ndarray, pool_y: np.ndarray, epochs: int, seed: int,
                   model_ids: np.ndarray | None = None,
                   early_stopping: EarlyStopping | None = None,
                   checkpoint: CheckpointPolicy | None = None,
                   log: Callable[[str], None] = print, chunks_after: int = 0) -> TrainResult:
  """Trains the M models of init_state (leaves [M, ...]) for `epochs` epochs.

  model_ids: the models' global ids int [M] (default 0..M-1): their batches and keys.
  chunks_after: chunks still to train after this one (counted in the logged time left).
  Returns host (numpy) arrays.
  """
  num_real = jax.tree.leaves(init_state)[0].shape[0]
  ids = np.arange(num_real, dtype=np.int32) if model_ids is None else np.asarray(model_ids)
  state, ids = _pad_models(jax.tree.map(np.asarray, init_state), ids, mapping.model_multiple)
  patience = early_stopping.patience if early_stopping is not None else 0
  stopper = _Stopper(len(ids), num_real, patience)
  best = jax.tree.map(np.copy, state) if patience > 0 else None
  history: list[dict] = []
  ckpt = checkpoint_lib.Checkpointer(checkpoint.directory) if checkpoint else None
  start = ckpt.latest_step() if ckpt is not None else None
  if start is not None:
    (state, best), meta = ckpt.restore(start, (state, best))
    stopper.record, history = meta["early_stopping"], meta["history"]
    log(f"resumed from the checkpoint of epoch {start} in {checkpoint.directory}")
  start = start or 0
  run = _Run(step, sampler, mapping, (mapping.replicate(np.asarray(pool_x)),
                                       mapping.replicate(np.asarray(pool_y))), seed, ids,
             num_real, early_stopping, ckpt, checkpoint, stopper, history, log)
  epoch = start
  if start < epochs and stopper.active.any():
    timer = progress.Timer(epochs, start, chunks_after,
                           checkpoint.every_seconds if checkpoint else 0.0, checkpoint is not None)
    epoch, state, best = run.epochs(mapping.put(state),
                                    mapping.put(best) if best is not None else None, timer)
  if ckpt is not None:
    ckpt.close()
  final = mapping.get(best if best is not None else state).replace(apply_fn=None, tx=None)
  return TrainResult(jax.tree.map(lambda a: a[:num_real], final), history, epoch, start)


@dataclasses.dataclass
class _Run:
  """The epochs of one train_ensemble call (its fixed inputs and the records it updates)."""
  step: Callable
  sampler: Any
  mapping: Any
  pool: tuple
  seed: int
  ids: np.ndarray
  num_real: int
  early_stopping: EarlyStopping | None
  ckpt: Any
  checkpoint: CheckpointPolicy | None
  stopper: _Stopper
  history: list
  log: Callable
  _accuracy: Any = None          # early stopping's (accuracy_fn, placed validation split)

  def evaluate(self, state, best, record: dict):
    """Early stopping's epoch: validation accuracy [M] in `record`, the best state updated."""
    stopping = self.early_stopping
    if self._accuracy is None:
      self._accuracy = (steps.accuracy_fn(stopping.apply_fn or state.apply_fn),
                        self.mapping.replicate((np.asarray(stopping.val_x),
                                                np.asarray(stopping.val_y))))
    accuracy, val = self._accuracy
    val_acc = np.asarray(self.mapping.get(accuracy(state.params, state.batch_stats, *val)))
    improved = self.stopper.update(val_acc)
    record["val_accuracy"] = val_acc[:self.num_real].tolist()
    return _select(self.mapping.put(improved), best, state)

  def epochs(self, state, best, timer: "progress.Timer"):
    """Trains epochs until the last or until every model stopped: (epochs done, state, best)."""
    epoch, done = timer.start, False
    while not done:
      t0 = time.perf_counter()
      state, metrics = _epoch_metrics(self.step, state, self.sampler, self.mapping, self.pool,
                                      epoch, self.seed, self.ids, self.stopper.active)
      count = np.maximum(metrics["count"], 1)
      record = {"epoch": epoch + 1,
                "loss": (metrics["loss_sum"] / count)[:self.num_real].tolist(),
                "accuracy": (metrics["correct"] / count)[:self.num_real].tolist()}
      if best is not None:
        best = self.evaluate(state, best, record)
      record["seconds"] = timer.computed(time.perf_counter() - t0)
      self.history.append(record)
      epoch += 1
      done = epoch >= timer.epochs or not self.stopper.active.any()
      saved = self.save(epoch, state, best, timer, done)
      record["seconds"] = time.perf_counter() - t0    # the epoch's wall time, its save included
      self.log(progress.epoch_line(record, epoch, timer, float(metrics["count"].sum()), saved,
                                   done, int(self.stopper.active[:self.num_real].sum()),
                                   self.num_real))
    return epoch, state, best

  def save(self, epoch, state, best, timer: "progress.Timer", done: bool) -> str:
    """Checkpoints when the policy says so; the log's note of it ('' when not saved)."""
    if self.ckpt is None or not timer.save_due(done):
      return ""
    t_save = time.perf_counter()
    self.ckpt.save(epoch, (self.mapping.get(state),
                           self.mapping.get(best) if best is not None else None),
                   {"early_stopping": self.stopper.record, "history": self.history})
    return f" (checkpoint {timer.saved(time.perf_counter() - t_save):.1f}s)"
