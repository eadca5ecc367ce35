"""Machine unlearning: exact (SISA) and approximate (fine-tuning, gradient ascent), and how
well either hides the forgotten examples from a membership inference attack.

SISA (Bourtoule et al. 2021). The training examples are split into S disjoint shards, each
into R disjoint slices; shard s's model trains `epochs` epochs on its slice 0, then `epochs`
more on slices 0..1, ..., with a checkpoint after every slice. The S shard models are one
ensemble (keep [S, N], disjoint rows) trained by `training.train_from_config`, each in its own
chunk (chunk_size 1): a shard model is a function of (seed, shard id, its data) only, and
finished chunks are restored from their checkpoints, never retrained. `forget(indices)` drops
the examples from the keep matrix, rolls each affected shard back to its checkpoint after the
last slice before the first affected one (or to nothing) and trains it on again; every other
shard's parameters stay as they were, bit for bit, and the retrained shard equals a fresh fit on
the retained data. The released prediction aggregates the shards (mean of softmax, or majority
vote) and is returned as log-probabilities, which every attack reads as logits.

Use a constant learning-rate schedule with slices: train_ensemble builds each slice's schedule
from that slice's epochs and steps, so a decaying schedule restarts at every slice.

Approximate unlearning acts on ONE model's params: `finetune` trains k more epochs on the
retained data only; `gradient_ascent` raises the loss on the forgotten data by clipped steps
until it reaches `max_loss` (default log C, a uniform guess) or `max_steps`.

Written by hand: no maintained JAX library implements SISA or these baselines.
"""

import dataclasses
import os
import shutil
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mia_jax import inference, metrics
from mia_jax.attacks import signals
from mia_jax.errors import ConfigError
from mia_jax.training import from_config, losses, samplers, steps

AGGREGATES = ("mean", "vote")


def assign_shards(seed: int, num_examples: int, num_shards: int, num_slices: int = 1,
                  members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Shard and slice of each pool example: (shard int32 [N], slice int32 [N]), -1 for examples
  outside `members` (bool [N], default all). A pure function of its arguments; shards differ
  in size by at most one example, and so do the slices of a shard."""
  if num_shards < 2:
    raise ConfigError(f"SISA needs at least 2 shards, got {num_shards}; set num_shards=4")
  if num_slices < 1:
    raise ConfigError(f"SISA needs at least 1 slice per shard, got {num_slices}; set num_slices=1")
  members = np.ones(num_examples, bool) if members is None else np.asarray(members, bool)
  if members.shape != (num_examples,):
    raise ConfigError(f"members must be bool [N]=[{num_examples}], got {members.shape}")
  ids = np.random.default_rng([seed, 0x515A]).permutation(np.flatnonzero(members))
  if len(ids) < num_shards * num_slices:
    raise ConfigError(f"{len(ids)} training examples cannot fill {num_shards} shards of "
                      f"{num_slices} slices; use fewer shards or slices")
  shard = np.full(num_examples, -1, np.int32)
  slice_ = np.full(num_examples, -1, np.int32)
  for s, part in enumerate(np.array_split(ids, num_shards)):
    shard[part] = s
    for r, piece in enumerate(np.array_split(part, num_slices)):
      slice_[piece] = r
  return shard, slice_


def stage_keep(shard: np.ndarray, slice_: np.ndarray, num_shards: int, upto: int,
               forgotten: np.ndarray | None = None) -> np.ndarray:
  """keep bool [S, N] of slice stage `upto`: shard s's examples of slices 0..upto, less the
  forgotten ones (bool [N])."""
  keep = (shard[None] == np.arange(num_shards)[:, None]) & (slice_ <= upto)[None]
  if forgotten is not None:
    keep &= ~forgotten[None]
  return keep


def aggregate(logits: np.ndarray, how: str = "mean") -> np.ndarray:
  """Released log-probabilities [N, C] from the shard models' logits [S, N, C]: log of the mean
  softmax ('mean'), or log of the vote shares ('vote', floored at 1e-6 and renormalised)."""
  if how not in AGGREGATES:
    raise ConfigError(f"unknown SISA aggregate {how!r}; choose one of {list(AGGREGATES)}")
  logits = np.asarray(logits, np.float64)
  if how == "mean":
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return np.log(p.mean(0)).astype(np.float32)
  c = logits.shape[-1]
  shares = np.eye(c)[logits.argmax(-1)].mean(0) + 1e-6
  return np.log(shares / shares.sum(-1, keepdims=True)).astype(np.float32)


@dataclasses.dataclass
class SISA:
  """S shard models of `model`, trained by SISA on pool examples `members` (default all).

  Call `fit()` once, then `forget(indices)` any number of times; `log_probs(x)` is the released
  prediction. `forgotten` (bool [N]) starts the run with those examples already left out:
  `SISA(..., forgotten=f).fit()` is the retraining from scratch that forget() must equal.

    sisa = SISA(model=m, cfg=config.train, pool_x=x, pool_y=y, workdir=d, num_shards=4).fit()
    sisa.forget([3, 17])            # retrains only the shards of examples 3 and 17
    released = sisa.log_probs(x)    # [N, C]

  `workdir` holds the checkpoints (live/chunk_XXXX: each shard's latest state;
  slice_R/chunk_XXXX: its state after slice R).
  """
  model: nn.Module
  cfg: ml_collections.ConfigDict      # the `train` block; epochs = epochs per slice
  pool_x: np.ndarray
  pool_y: np.ndarray
  workdir: str
  num_shards: int
  num_slices: int = 1
  seed: int = 0
  members: np.ndarray | None = None
  how: str = "mean"
  log: Callable[[str], None] = lambda s: None
  state: steps.TrainState | None = None         # leaves [S, ...] after fit
  forgotten: np.ndarray | None = None           # bool [N]
  seconds: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if int(self.cfg.early_stopping_patience) > 0:
      raise ConfigError("SISA trains fixed epochs per slice; set train.early_stopping_patience=0")
    if self.how not in AGGREGATES:
      raise ConfigError(f"unknown SISA aggregate {self.how!r}; choose one of {list(AGGREGATES)}")
    self.cfg = ml_collections.ConfigDict(self.cfg.to_dict())
    self.cfg.chunk_size = 1        # one chunk per shard: each retrains (and restores) alone
    self.shard, self.slice = assign_shards(self.seed, len(self.pool_y), self.num_shards,
                                           self.num_slices, self.members)
    n = len(self.pool_y)
    self.forgotten = (np.zeros(n, bool) if self.forgotten is None
                      else np.array(self.forgotten, bool))       # a copy: forget() writes it
    if self.forgotten.shape != (n,):
      raise ConfigError(f"forgotten must be bool [N]=[{n}], got {self.forgotten.shape}")

  @property
  def keep(self) -> np.ndarray:
    """bool [S, N]: what each shard model is trained on now."""
    return stage_keep(self.shard, self.slice, self.num_shards, self.num_slices - 1,
                      self.forgotten)

  def _chunk_dir(self, where: str, s: int) -> str:
    return os.path.join(self.workdir, where, f"chunk_{s:04d}")

  def _run_stages(self, first: dict[int, int]) -> None:
    """Trains slice stages min(first)..R-1: shard s (a key of `first`) from its slice first[s]
    on; every other shard is done and restores from its checkpoint."""
    cfg = ml_collections.ConfigDict(self.cfg.to_dict())
    epochs = int(self.cfg.epochs)
    live = os.path.join(self.workdir, "live")
    for r in range(min(first.values()), self.num_slices):
      cfg.epochs = epochs * (r + 1)
      keep = stage_keep(self.shard, self.slice, self.num_shards, r, self.forgotten)
      res = from_config.train_from_config(self.model, cfg, self.pool_x, self.pool_y, keep,
                                          seed=self.seed, checkpoint_dir=live,
                                          log=lambda line, r=r: self.log(f"slice {r}  {line}"))
      if r < self.num_slices - 1:
        for s in [s for s, f in first.items() if f <= r]:
          dst = self._chunk_dir(f"slice_{r:04d}", s)
          shutil.rmtree(dst, ignore_errors=True)
          shutil.copytree(self._chunk_dir("live", s), dst)
    self.state = res.state

  def fit(self) -> "SISA":
    """Trains every shard, resuming from `workdir` where checkpoints exist (they are not
    checked against the config: give each SISA run its own workdir)."""
    t0 = time.perf_counter()
    self._run_stages({s: 0 for s in range(self.num_shards)})
    self.seconds["fit"] = time.perf_counter() - t0
    return self

  def forget(self, indices) -> list[int]:
    """Unlearns pool examples `indices` (int [K]); returns the shards retrained, sorted.

    Each affected shard restarts from its checkpoint after the last slice before its first
    affected slice (from scratch when that is slice 0) and trains on without the examples.
    """
    if self.state is None:
      raise ConfigError("call fit() before forget(); the shards are not trained yet")
    indices = np.unique(np.asarray(indices, np.int64).ravel())
    if indices.size and (indices.min() < 0 or indices.max() >= len(self.pool_y)):
      raise ConfigError(f"indices must lie in [0, {len(self.pool_y)}); check the pool indices")
    hit = indices[(self.shard[indices] >= 0) & ~self.forgotten[indices]]
    t0 = time.perf_counter()
    self.forgotten[hit] = True
    shards = sorted({int(s) for s in self.shard[hit]})
    if not shards:
      return []
    first = {s: int(self.slice[hit[self.shard[hit] == s]].min()) for s in shards}
    for s in shards:
      shutil.rmtree(self._chunk_dir("live", s), ignore_errors=True)
      if first[s] > 0:
        shutil.copytree(self._chunk_dir(f"slice_{first[s] - 1:04d}", s),
                        self._chunk_dir("live", s))
    self._run_stages(first)
    self.seconds["forget"] = time.perf_counter() - t0
    return shards

  def shard_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Eval-mode logits [S, N, C] of every shard model on x [N, ...]."""
    return inference.query_logits(self.model, self.state, x, "none", batch_size)[:, :, 0]

  def log_probs(self, x: np.ndarray) -> np.ndarray:
    """The released prediction: log-probabilities [N, C] aggregated over the shards."""
    return aggregate(self.shard_logits(x), self.how)


def _eval_loss(model, params, batch_stats, x, y):
  logits = model.apply(steps.variables_of(params, batch_stats), x, train=False)
  return jnp.mean(losses.softmax_cross_entropy(logits, y))


def finetune(model: nn.Module, params, batch_stats, x: np.ndarray, y: np.ndarray, *,
             epochs: int, batch_size: int = 64, learning_rate: float = 1e-3,
             seed: int = 0) -> tuple:
  """Approximate unlearning by fine-tuning ONE model on the retained data x [N, ...], y [N]
  for `epochs` epochs of Adam (fresh moments); returns (params, batch_stats)."""
  if epochs < 0 or batch_size < 1 or len(y) == 0:
    raise ConfigError("finetune needs epochs >= 0, batch_size >= 1 and some retained data")
  tx = optax.adam(learning_rate)
  state = steps.TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                                  batch_stats=batch_stats)
  step = jax.jit(steps.train_step)
  keep = np.ones((1, len(y)), bool)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  key = jax.random.key(seed)
  for e in range(epochs):
    idx, mask = samplers.epoch_batches(keep, batch_size, seed, e)
    for i in range(idx.shape[0]):
      b = idx[i, 0]
      state, _ = step(state, steps.Batch(xj[b], yj[b], jnp.asarray(mask[i, 0])),
                      jax.random.fold_in(key, e * idx.shape[0] + i))
  return state.params, state.batch_stats


def gradient_ascent(model: nn.Module, params, batch_stats, x: np.ndarray, y: np.ndarray, *,
                    max_steps: int = 20, learning_rate: float = 1e-2, clip_norm: float = 1.0,
                    max_loss: float | None = None):
  """Approximate unlearning by gradient ASCENT of ONE model's mean eval-mode loss on the
  forgotten data x [K, ...], y [K]: each step moves params by at most learning_rate *
  clip_norm (global norm); stops after `max_steps` or once the loss reaches `max_loss`
  (default log C: no better than a uniform guess). Returns (params, steps taken)."""
  if max_steps < 0 or learning_rate <= 0 or clip_norm <= 0 or len(y) == 0:
    raise ConfigError("gradient_ascent needs max_steps >= 0, learning_rate > 0, clip_norm > 0 "
                      "and some forgotten data")
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  if max_loss is None:
    num_classes = jax.eval_shape(lambda p: model.apply(steps.variables_of(p, batch_stats),
                                                       xj[:1], train=False), params).shape[-1]
    max_loss = float(np.log(num_classes))
  loss_and_grad = jax.value_and_grad(lambda p: _eval_loss(model, p, batch_stats, xj, yj))

  def cond(carry):
    i, _, loss = carry
    return (i < max_steps) & (loss < max_loss)

  def body(carry):
    i, p, _ = carry
    _, g = loss_and_grad(p)
    g = optax.clip_by_global_norm(clip_norm).update(g, optax.EmptyState())[0]
    p = jax.tree.map(lambda a, b: a + learning_rate * b, p, g)
    return i + 1, p, _eval_loss(model, p, batch_stats, xj, yj)

  init = (jnp.int32(0), params, _eval_loss(model, params, batch_stats, xj, yj))
  taken, params, _ = jax.jit(lambda c: jax.lax.while_loop(cond, body, c))(init)
  return params, int(taken)


def loss_scores(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The `loss` attack's membership score [N] (higher = member): -cross-entropy of logits
  [N, C] (or log-probabilities) against labels [N]."""
  return -signals.loss(np.asarray(log_probs, np.float32), np.asarray(labels)).astype(np.float64)


def evaluate_unlearning(predict: Callable[[np.ndarray], np.ndarray], forgotten, retained, unseen,
                        *, score: Callable = loss_scores, seconds: float | None = None,
                        retrain_seconds: float | None = None) -> dict:
  """How unlearned the forgotten examples look.

  Args:
    predict: x [N, ...] -> logits or log-probabilities [N, C] of the released model.
    forgotten, retained, unseen: (x, y) pairs: unlearned, still trained on, never trained on.
    score: (logits [N, C], labels [N]) -> membership scores [N], higher = member.
    seconds, retrain_seconds: wall time of the unlearning and of retraining from scratch.

  Returns:
    {auc_forgotten_vs_unseen (0.5: the forgotten look like non-members),
     auc_retained_vs_unseen, accuracy_{forgotten,retained,unseen}, seconds, retrain_seconds,
     speedup}.
  """
  out, scores = {}, {}
  for name, (x, y) in (("forgotten", forgotten), ("retained", retained), ("unseen", unseen)):
    z = np.asarray(predict(x))
    scores[name] = np.asarray(score(z, y), np.float64)
    out[f"accuracy_{name}"] = float(np.mean(z.argmax(-1) == np.asarray(y)))
  for name in ("forgotten", "retained"):
    s = np.concatenate([scores[name], scores["unseen"]])
    member = np.r_[np.ones(len(scores[name]), bool), np.zeros(len(scores["unseen"]), bool)]
    out[f"auc_{name}_vs_unseen"] = metrics.auc(*metrics.roc_curve(s, member)[:2])
  out["seconds"], out["retrain_seconds"] = seconds, retrain_seconds
  out["speedup"] = (retrain_seconds / seconds) if seconds and retrain_seconds else None
  return out
