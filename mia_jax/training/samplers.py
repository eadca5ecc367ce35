"""Which pool examples each model trains on at each step: the trainer's sampler protocol and
its uniform and curriculum samplers (DP-SGD's Poisson sampler, mia_jax.privacy.sampling,
implements it too).

  sampler.steps_per_epoch: int      S, the same for every model and every epoch
  sampler.batch_size: int           B, the static padded batch
  sampler.epoch(epoch, model_ids)   -> idx int32 [m, S, B] into the pool, mask bool [m, S, B]

Deterministic in (its seed, epoch, model id): a model's batches do not depend on which other
models train beside it, so chunking and resuming are bit-identical.
"""

from typing import Protocol

import numpy as np

from mia_jax.errors import ConfigError
from mia_jax.training import curriculum


class Sampler(Protocol):
  steps_per_epoch: int
  batch_size: int

  def epoch(self, epoch: int, model_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ...


def steps_per_epoch(keep: np.ndarray, batch_size: int) -> int:
  """Steps for the model with the most kept examples of keep bool [M, N] to see each once."""
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
  num_steps = steps_per_epoch(keep, batch_size)
  idx = np.zeros((num_models, num_steps * batch_size), np.int32)
  mask = np.zeros((num_models, num_steps * batch_size), np.float32)
  for m in range(num_models):
    own = np.flatnonzero(keep[m])
    perm = np.random.default_rng([seed, epoch, int(model_ids[m])]).permutation(own)
    idx[m] = np.resize(perm, num_steps * batch_size)
    mask[m, :len(perm)] = 1.0
  shape = (num_models, num_steps, batch_size)
  return (idx.reshape(shape).transpose(1, 0, 2).copy(),
          mask.reshape(shape).transpose(1, 0, 2).copy())


class UniformSampler:
  """Each epoch a fresh permutation of each model's kept examples, in batches of batch_size.

  keep: bool [M, N] of the whole ensemble (model_ids index its rows); seed: the training seed.
  """

  def __init__(self, keep: np.ndarray, batch_size: int, seed: int):
    self.keep, self.batch_size, self.seed = np.asarray(keep, bool), int(batch_size), int(seed)
    self.steps_per_epoch = steps_per_epoch(self.keep, self.batch_size)

  def epoch(self, epoch: int, model_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx, mask = epoch_batches(self.keep[model_ids], self.batch_size, self.seed, epoch, model_ids)
    return self.per_model(idx, mask)

  def per_model(self, idx: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batches [S', m, B] of some models -> [m, S, B] (mask bool), padded with steps of mask
    0 to the ensemble's S (a chunk of models with fewer examples has fewer real steps)."""
    pad = self.steps_per_epoch - idx.shape[0]
    if pad > 0:
      idx = np.concatenate([idx, np.repeat(idx[:1], pad, axis=0)])
      mask = np.concatenate([mask, np.zeros((pad,) + mask.shape[1:], mask.dtype)])
    return idx.transpose(1, 0, 2), mask.transpose(1, 0, 2) > 0


def curriculum_epoch_batches(keep: np.ndarray, difficulty: np.ndarray, pacing, batch_size: int,
                             seed: int, epoch: int, model_ids: np.ndarray | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
  """Batches of one curriculum epoch: idx int32 [S, M, B] and mask float32 [S, M, B].

  Args:
    keep: bool [M, N]; difficulty: float [N] (higher = harder; curriculum.difficulty).
    pacing: the open fraction per epoch, float [E] (curriculum.pacing_schedule), or one float.
    batch_size, seed, epoch, model_ids: as in epoch_batches.

  S = steps_per_epoch(keep, batch_size) at every epoch. Model m's real batches are a
  permutation (from (seed, epoch, model_ids[m]), as in epoch_batches) of its open examples
  (curriculum.open_keep); every later position repeats its open examples with mask 0.
  """
  frac = np.asarray(pacing, np.float64)
  if frac.ndim == 1:
    if not 0 <= epoch < len(frac):
      raise ConfigError(f"epoch {epoch} is outside the pacing schedule of {len(frac)} epochs; "
                        "build it with pacing_schedule(kind, train.epochs)")
    frac = frac[epoch]
  num_steps = steps_per_epoch(keep, batch_size)
  idx, mask = epoch_batches(curriculum.open_keep(keep, np.asarray(difficulty), float(frac)),
                            batch_size, seed, epoch, model_ids)
  pad = num_steps - idx.shape[0]
  if pad > 0:
    idx = np.concatenate([idx, np.repeat(idx[:1], pad, axis=0)])
    mask = np.concatenate([mask, np.zeros((pad,) + mask.shape[1:], mask.dtype)])
  return idx, mask


class CurriculumSampler(UniformSampler):
  """UniformSampler over each model's easiest examples, opened by `pacing` (float [E]: the open
  fraction per epoch) of difficulty float [N]; steps per epoch those of the full keep."""

  def __init__(self, keep: np.ndarray, batch_size: int, seed: int, difficulty: np.ndarray,
               pacing: np.ndarray):
    super().__init__(keep, batch_size, seed)
    if np.shape(difficulty) != self.keep.shape[1:]:
      raise ConfigError(f"train.curriculum.enabled needs difficulty [N]=[{self.keep.shape[1]}] "
                        "per pool example; compute it with from_config.reference_difficulty")
    self.difficulty = np.asarray(difficulty, np.float64)
    self.pacing = np.asarray(pacing, np.float64)

  def epoch(self, epoch: int, model_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx, mask = curriculum_epoch_batches(self.keep[model_ids], self.difficulty, self.pacing,
                                         self.batch_size, self.seed, epoch, model_ids)
    return self.per_model(idx, mask)
