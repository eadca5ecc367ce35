"""Train M models together, each only on its own kept pool examples.

The single-model `steps.train_step` is mapped over the leading model axis of the stacked state;
how it is mapped is chosen here and only here (`strategy`):
  vmap   one jitted epoch of the vmapped step over all M models (fastest for MLPs, and on
         accelerators);
  loop   the same jitted epoch on one model at a time (faster for convolutions on a CPU).
Both give the same models: batches, dropout and augmentation keys depend only on
(seed, model index, epoch, step), never on which other models train beside it.

An epoch is one pass of each model over its own kept examples, in batches of `batch_size`
drawn without replacement; the last batch is padded (with the model's own examples, mask 0).
Every epoch is checkpointed; training resumes from the latest checkpoint by default.
"""

import dataclasses
import functools
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mia_jax.errors import ConfigError
from mia_jax.training import checkpoint as ckpt_lib
from mia_jax.training import optim, steps

STRATEGIES = ("vmap", "loop", "auto")


@dataclasses.dataclass
class TrainResult:
  state: steps.ModelState        # leaves [M, ...]; the best epoch's params under early stopping
  history: list[dict]            # one record per epoch, per-model lists inside
  epochs_run: int
  resumed_from: int              # epochs already done when this call started (0 = fresh)


def model_keys(seed: int, num_models: int) -> jax.Array:
  """One key per model [M], a function of (seed, model index) only."""
  base = jax.random.key(seed)
  return jax.vmap(lambda m: jax.random.fold_in(base, m))(jnp.arange(num_models))


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


def make_epoch_fn(model: nn.Module, tx, step_cfg: steps.StepConfig) -> Callable:
  """Jitted `(state[M], pool_x, pool_y, idx[S,M,B], mask[S,M,B], keys[M], step0, active[M])
  -> (state[M], metrics[M])`: one epoch of the vmapped train step under lax.scan."""
  step = functools.partial(steps.train_step, model=model, tx=tx, cfg=step_cfg)
  vstep = jax.vmap(step)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def run_epoch(state, pool_x, pool_y, idx, mask, keys, step0, active):
    def body(carry, batch):
      state, t = carry
      bidx, bmask = batch
      step_keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
      state, metrics = vstep(state, pool_x[bidx], pool_y[bidx], bmask * active[:, None],
                             step_keys)
      return (state, t + 1), metrics

    (state, _), metrics = jax.lax.scan(body, (state, step0), (idx, mask))
    return state, jax.tree.map(lambda a: a.sum(axis=0), metrics)

  return run_epoch


def make_eval_fn(model: nn.Module) -> Callable:
  """Jitted `(params[M], batch_stats[M], x, y) -> accuracy [M]` in eval mode."""
  def accuracy(params, batch_stats, x, y):
    logits = steps.predict(model, steps.variables_of(params, batch_stats), x)
    return jnp.mean(jnp.argmax(logits, -1) == y)
  return jax.jit(jax.vmap(accuracy, in_axes=(0, 0, None, None)))


def init_ensemble(model: nn.Module, tx, seed: int, num_models: int, sample_x) -> steps.ModelState:
  init = jax.jit(jax.vmap(lambda k: steps.init_state(model, tx, k, sample_x)))
  return init(model_keys(seed, num_models))


def resolve_strategy(strategy: str, model: nn.Module) -> str:
  """`auto`: vmap on accelerators and for dense models; a loop for convolutions on a CPU,
  where batched convolutions ran 5-6.5 times slower than sequential steps (DESIGN.md)."""
  if strategy not in STRATEGIES:
    raise ConfigError(f"unknown ensemble strategy {strategy!r}; choose one of {list(STRATEGIES)} "
                      "with --config.train.strategy=NAME")
  if strategy != "auto":
    return strategy
  if jax.default_backend() != "cpu":
    return "vmap"
  is_conv = "CNN" in type(model).__name__ or "Net" in type(model).__name__
  return "loop" if is_conv else "vmap"


def _slice(tree, m):
  return jax.tree.map(lambda a: a[m:m + 1], tree)


def _concat(trees):
  return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def train_ensemble(model: nn.Module, cfg: ml_collections.ConfigDict, pool_x: np.ndarray,
                   pool_y: np.ndarray, keep: np.ndarray, *, seed: int,
                   val: tuple[np.ndarray, np.ndarray] | None = None,
                   checkpoint_dir: str | None = None,
                   log: Callable[[str], None] = print) -> TrainResult:
  """Trains M = keep.shape[0] models; model m sees only pool examples i with keep[m, i].

  Args:
    model: the flax module (one model; parameters get a leading model axis).
    cfg: the `train` config block (epochs, batch_size, optimizer, ..., strategy).
    pool_x, pool_y: the pool [N, ...], [N].
    keep: bool [M, N].
    seed: the training seed (initialisation, batches, dropout, augmentation).
    val: (x, y) held out from every model, for early stopping when cfg.early_stopping_patience.
    checkpoint_dir: where to checkpoint every epoch and resume from; None disables both.
    log: receives one progress line per epoch.
  """
  num_models = keep.shape[0]
  batch_size = int(cfg.batch_size)
  spe = steps_per_epoch(keep, batch_size)
  tx = optim.make_optimizer(cfg, spe)
  strategy = resolve_strategy(cfg.strategy, model)
  step_cfg = steps.StepConfig(label_smoothing=float(cfg.label_smoothing),
                              crop_padding=int(cfg.augment.crop_padding),
                              flip=bool(cfg.augment.flip))
  patience = int(cfg.early_stopping_patience)
  if patience > 0 and val is None:
    raise ConfigError("early stopping needs a validation split; set --config.data.val_size>0")

  state = init_ensemble(model, tx, seed, num_models, jnp.asarray(pool_x[:1]))
  best = jax.tree.map(jnp.copy, state) if patience > 0 else None
  es = {"best_val": [-1.0] * num_models, "bad_epochs": [0] * num_models,
        "active": [True] * num_models}
  history: list[dict] = []
  start = 0
  ckpt = ckpt_lib.Checkpointer(checkpoint_dir) if checkpoint_dir else None
  if ckpt is not None and ckpt.latest_step() is not None:
    start = ckpt.latest_step()
    (state, best), meta = ckpt.restore(start, (state, best))
    state = jax.tree.map(jnp.asarray, state)
    best = jax.tree.map(jnp.asarray, best) if best is not None else None
    es, history = meta["early_stopping"], meta["history"]
    log(f"resumed from the checkpoint of epoch {start} in {checkpoint_dir}")
  resumed_from = start

  run_epoch = make_epoch_fn(model, tx, step_cfg)
  eval_fn = make_eval_fn(model) if patience > 0 else None
  keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(model_keys(seed, num_models))
  px, py = jnp.asarray(pool_x), jnp.asarray(pool_y)
  epochs = int(cfg.epochs)
  done = start >= epochs or not any(es["active"])
  epoch = start
  while not done:
    t0 = time.perf_counter()
    idx, mask = epoch_batches(keep, batch_size, seed, epoch)
    active = jnp.asarray(es["active"], jnp.float32)
    step0 = jnp.int32(epoch * spe)
    if strategy == "vmap":
      state, metrics = run_epoch(state, px, py, idx, mask, keys, step0, active)
    else:
      outs = [run_epoch(_slice(state, m), px, py, idx[:, m:m + 1], mask[:, m:m + 1],
                        keys[m:m + 1], step0, active[m:m + 1]) for m in range(num_models)]
      state = _concat([o[0] for o in outs])
      metrics = _concat([o[1] for o in outs])
    metrics = jax.device_get(metrics)
    count = np.maximum(metrics["count"], 1)
    record = {"epoch": epoch + 1, "loss": (metrics["loss_sum"] / count).tolist(),
              "accuracy": (metrics["correct"] / count).tolist()}
    if eval_fn is not None:
      val_acc = np.asarray(eval_fn(state.params, state.batch_stats, val[0], val[1]))
      improved = np.asarray(es["active"]) & (val_acc > np.asarray(es["best_val"]))
      sel = jnp.asarray(improved)
      best = jax.tree.map(
          lambda b, s: jnp.where(sel.reshape((-1,) + (1,) * (s.ndim - 1)), s, b), best, state)
      for m in range(num_models):
        if not es["active"][m]:
          continue
        if improved[m]:
          es["best_val"][m], es["bad_epochs"][m] = float(val_acc[m]), 0
        else:
          es["bad_epochs"][m] += 1
          es["active"][m] = es["bad_epochs"][m] < patience
      record["val_accuracy"] = val_acc.tolist()
    seconds = time.perf_counter() - t0
    record["seconds"] = seconds
    history.append(record)
    epoch += 1
    done = epoch >= epochs or not any(es["active"])
    if ckpt is not None:
      ckpt.save(epoch, (state, best), {"early_stopping": es, "history": history})
    examples = float(metrics["count"].sum())
    left = (epochs - epoch) * np.mean([h["seconds"] for h in history[resumed_from:]])
    line = (f"epoch {epoch}/{epochs}  loss {np.mean(record['loss']):.4f}  "
            f"accuracy {np.mean(record['accuracy']):.4f}  ")
    if "val_accuracy" in record:
      line += f"val {np.mean(record['val_accuracy']):.4f}  active {sum(es['active'])}/{num_models}  "
    log(line + f"{examples / seconds:,.0f} examples/s  {seconds:.1f}s  "
        f"time left {0 if done else left:.0f}s")
  if ckpt is not None:
    ckpt.close()
  final = best if best is not None else state
  return TrainResult(state=final, history=history, epochs_run=epoch, resumed_from=resumed_from)
