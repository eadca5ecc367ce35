"""Eval-mode queries of every model: the logits store an audit attacks.

`query_logits` returns logits [M, N, Q, C]: model m on example n under query q (q = 0 the
example itself; by default, queries='train', the others are the views the models trained on:
none without augmentation, the mirror when training flips, the augmentation's grid when it
crops; see mia_jax.data.augment), class c. `query_record` names the views for results.json.
Models run in eval mode (no dropout, BatchNorm running statistics): querying in training mode
is a known bug of public MIA code that changes every score.

The store is written one model at a time into its final array: an array in memory, or a .npy
file on disk (`out=path`, a numpy memmap) when M * N * Q * C does not fit; beside it only one
model's logits [N, C] are ever held. float16 halves the store; it moves LiRA's scores most in
the far tails, where LiRA divides by tiny variances (measured in
experiments/results/bench_ensemble.md): keep float32 when the lowest-FPR tail is the result.
"""

import os

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from mia_jax.data import augment
from mia_jax.training import steps
from mia_jax.training.state import TrainState


def query_record(queries: str, augment_cfg, input_ndim: int) -> dict:
  """results.json's dataset.queries: {"kind": the config's kind, "resolved": the concrete kind,
  "views": the Q view names in logits order, "train_augment": the training's crop_padding and
  flip}, for inputs with `input_ndim` axes per example (3 for images [H, W, C])."""
  aug = augment_cfg if augment_cfg is not None else {}
  crop, flip, image = int(aug.get("crop_padding", 0)), bool(aug.get("flip", False)), input_ndim == 3
  return {"kind": queries, "resolved": augment.resolve(queries, crop, flip, image),
          "views": augment.view_names(queries, crop, flip, image),
          "train_augment": {"crop_padding": crop, "flip": flip}}


def query_logits(model: nn.Module, state: TrainState, x: np.ndarray, queries: str = "train",
                 batch_size: int = 1024, dtype=np.float32, out: str | np.ndarray | None = None,
                 augment_cfg=None, progress=None) -> np.ndarray:
  """Logits [M, N, Q, C] of the M stacked models in `state` on x [N, ...].

  queries: a kind of mia_jax.data.augment.queries; 'train' and 'augment' take the training
  augmentation (crop_padding, flip) from `augment_cfg` (the config's train.augment block;
  None: no augmentation).

  out: None (a new array in memory), a path (a new .npy file, returned as a memmap opened
  read-only once complete) or an array [M, N, Q, C] to fill; written one model at a time.
  progress: called as progress(models done, M) after each model.
  """
  aug = augment_cfg if augment_cfg is not None else {}
  qx = augment.queries(jnp.asarray(x), queries, int(aug.get("crop_padding", 0)),
                       bool(aug.get("flip", False)))     # [Q, N, ...]
  predict = jax.jit(lambda variables, inputs: steps.predict(model, variables, inputs, batch_size))
  num_models = jax.tree.leaves(state.params)[0].shape[0]
  variables0 = steps.variables_of(jax.tree.map(lambda a: a[0], state.params),
                                  jax.tree.map(lambda a: a[0], state.batch_stats))
  num_classes = jax.eval_shape(predict, variables0, qx[0][:1]).shape[-1]
  shape = (num_models, x.shape[0], qx.shape[0], num_classes)
  path = out if isinstance(out, (str, os.PathLike)) else None
  if path is not None:
    store = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
  else:
    store = np.zeros(shape, dtype) if out is None else out
  for m in range(num_models):
    variables = steps.variables_of(jax.tree.map(lambda a: a[m], state.params),
                                   jax.tree.map(lambda a: a[m], state.batch_stats))
    for q in range(qx.shape[0]):
      store[m, :, q] = np.asarray(predict(variables, qx[q]))
    if progress is not None:
      progress(m + 1, num_models)
  if path is not None:
    store.flush()
    del store
    return np.load(path, mmap_mode="r")
  return store


def accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Per-model accuracy [M] of the first query of logits [M, N, Q, C], over mask [M, N] if given."""
  correct = np.argmax(logits[:, :, 0], axis=-1) == labels[None]
  if mask is None:
    return correct.mean(axis=1)
  return (correct * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
