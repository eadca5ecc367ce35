"""Poisson sampling for an ensemble of DP-SGD runs, with static padded batches (host-side NumPy).

ONE sampler, used by the trainer and matched by the accountant. Model m of an ensemble is its
own DP-SGD run over its own kept examples (keep[m], n_m of them): at every step each of them
joins model m's batch independently with probability q_m = expected_batch_size / n_m, what the
accountants (dp_accounting's PoissonSampledDpEvent, and its truncated variant) assume. The
draws of model m in epoch e come from numpy's PCG64 seeded by (seed, e, model id, 7), so they do
not depend on which other models are trained alongside, on chunking, or on resuming.

Static shapes: a jitted step sees one batch shape throughout, so each step's draw is padded to
`max_batch` slots with a mask (padding slots hold the model's own first example, mask False;
their gradient is zeroed by the mask). By default max_batch is the smallest m with
P[Binomial(n_m, q_m) > m] <= overflow_prob (1e-6) for every model. A draw above max_batch keeps
a uniform random subset of max_batch (truncated Poisson sampling), which
accounting.epsilon(..., max_batch=m, num_examples=n) accounts for exactly (PLD,
dp_accounting.TruncatedSubsampledGaussianDpEvent); `truncation_prob` states the per-step bound.

Where mia_jax departs from jax_privacy's batch_selection.CyclicPoissonSampling (which yields one
run's variable-size index arrays): one sampler draws every model of the ensemble, and it pads
to a static size with a mask. It implements the trainer's sampler protocol
(mia_jax.training.samplers): steps_per_epoch, batch_size, epoch(epoch, model_ids).
"""

import dataclasses
import math

import numpy as np
from scipy import stats

from mia_jax.errors import ConfigError

_STREAM = 7   # the Poisson draws' own seed word, apart from the uniform sampler's permutations


def poisson_max_batch(num_examples: int, expected_batch_size: float,
                      overflow_prob: float = 1e-6) -> int:
  """Smallest m with P[Binomial(n, q) > m] <= overflow_prob, q = expected_batch_size / n."""
  q = expected_batch_size / num_examples
  m = int(stats.binom.isf(overflow_prob, num_examples, q))
  while stats.binom.sf(m, num_examples, q) > overflow_prob:
    m += 1
  return max(m, 1)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class PoissonSampler:
  """Poisson batches of every model of an ensemble, padded to a static max_batch.

  Attributes:
    keep: bool [M, N]: model m trains on pool example i.
    expected_batch_size: q_m * n_m, the same for every model (a public constant).
    seed: the run's seed.
    steps_per_epoch: S; default ceil(max_m n_m / expected_batch_size) (one pass in expectation).
    max_batch: the static padded batch B; default from `overflow_prob` (module docstring).
    overflow_prob: the bound on P[a step's draw exceeds max_batch] used for the default.

  Example:
    >>> sampler = PoissonSampler(keep=np.ones((2, 100), bool), expected_batch_size=10, seed=0)
    >>> idx, mask = sampler.epoch(0, np.arange(2))
    >>> idx.shape == mask.shape == (2, sampler.steps_per_epoch, sampler.batch_size)
    True
  """
  keep: np.ndarray
  expected_batch_size: float
  seed: int
  steps_per_epoch: int | None = None
  max_batch: int | None = None
  overflow_prob: float = 1e-6

  def __post_init__(self):
    keep = np.asarray(self.keep, bool)
    if keep.ndim != 2:
      raise ConfigError(f"keep must be a bool matrix [models, examples], got shape {keep.shape}")
    sizes = keep.sum(axis=1)
    if not 0 < self.expected_batch_size <= sizes.min():
      raise ConfigError(f"expected batch size {self.expected_batch_size} must be in (0, "
                        f"{int(sizes.min())}] (the fewest examples of a model); "
                        "set --config.train.batch_size")
    object.__setattr__(self, "keep", keep)
    if self.steps_per_epoch is None:
      object.__setattr__(self, "steps_per_epoch",
                         max(1, math.ceil(int(sizes.max()) / self.expected_batch_size)))
    if self.max_batch is None:
      object.__setattr__(self, "max_batch", max(
          poisson_max_batch(int(n), self.expected_batch_size, self.overflow_prob)
          for n in np.unique(sizes)))
    elif self.max_batch < 1:
      raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")

  @property
  def batch_size(self) -> int:
    """The static padded batch size B (the sampler protocol's name for max_batch)."""
    return self.max_batch

  @property
  def sampling_rates(self) -> np.ndarray:
    """float [M]: model m's per-example, per-step inclusion probability q_m."""
    return self.expected_batch_size / self.keep.sum(axis=1)

  @property
  def truncation_prob(self) -> float:
    """The largest per-step probability, over models, that a draw exceeds max_batch."""
    sizes = np.unique(self.keep.sum(axis=1))
    return float(max(stats.binom.sf(self.max_batch, n, self.expected_batch_size / n)
                     for n in sizes))

  def epoch(self, epoch: int, model_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of model_ids' batches: idx int32 [m, S, B] into the pool, mask bool [m, S, B].

    Deterministic in (seed, epoch, model id): model_ids are global ids into keep's rows.
    """
    model_ids = np.asarray(model_ids)
    shape = (len(model_ids), self.steps_per_epoch, self.max_batch)
    idx, mask = np.zeros(shape, np.int32), np.zeros(shape, bool)
    for row, model_id in enumerate(model_ids):
      own = np.flatnonzero(self.keep[model_id])
      rng = np.random.default_rng([self.seed, epoch, int(model_id), _STREAM])
      rate = self.expected_batch_size / len(own)
      idx[row] = own[0]
      for step in range(self.steps_per_epoch):
        chosen = own[rng.random(len(own)) < rate]
        if len(chosen) > self.max_batch:
          chosen = rng.choice(chosen, self.max_batch, replace=False)
        idx[row, step, :len(chosen)] = chosen
        mask[row, step, :len(chosen)] = True
    return idx, mask
