"""DP-SGD in the ensemble trainer: the DP step, its optimiser, its sampler and its accounting.

The privacy primitives live in mia_jax.privacy; this module joins them to the trainer. Each
model m of an ensemble is its own DP-SGD run over its own kept examples (n_m of them): every
step, each of them joins model m's batch independently with rate q_m = expected_batch_size / n_m
(privacy.sampling.PoissonSampler, padded to a static max_batch with a mask); the clipped
per-example gradients are summed (privacy.clipping.clipped_grad), N(0, (sigma C)^2 I) is added
to the sum and the result divided by the expected batch size (privacy.noise.gaussian_privatizer,
the first link of the optimiser's chain). The accountant is told exactly that (`plan`).

  dp_plan = plan(config.dp, keep, batch_size, epochs)
  step, tx = make_step(dp_plan, losses.softmax_cross_entropy, tx=optax.adam(1e-3))
  sampler = make_sampler(dp_plan, keep, seed)
  # step(state, batch, key) -> (state, metrics): the trainer's step protocol; state.tx is tx

Keys: the step key (one per (model, step), training.keys) is split as the plain step splits it
(augmentation, dropout), and fold_in(step key, NOISE_STREAM) is the privatiser's noise key, on
which it folds its own step count.

Fault injection (`dp.fault`), for the canary audit's power checks only: 'no_noise' adds no noise,
'no_clipping' sums the per-example gradients unclipped (the noise stays scaled to the claimed
clip norm). Either breaks the guarantee while the accountant still reports the epsilon of the
correct mechanism; the pipeline marks such a run NOT private in results.json and report.md, and
the audit should then find a bound far above the claimed epsilon.
"""

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from dp_accounting import rdp

from mia_jax.data import augment
from mia_jax.errors import ConfigError
from mia_jax.privacy import accounting, clipping, noise, sampling
from mia_jax.training import samplers
from mia_jax.training.state import Batch, TrainState

NOISE_STREAM = 0x5EED   # fold_in(step key, NOISE_STREAM): the privatiser's key
FAULTS = ("", "no_noise", "no_clipping")


def check_config(dp: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (one line: what is wrong, how to mend it) for a bad config.dp."""
  if dp.get("fault", "") not in FAULTS:
    raise ConfigError(f"unknown dp.fault {dp.fault!r}; choose one of {list(FAULTS)} ('' for a "
                      "correct DP-SGD; the others break it on purpose, for audit power checks)")
  if dp.clipping not in clipping.METHODS:
    raise ConfigError(f"unknown dp.clipping {dp.clipping!r}; choose one of "
                      f"{list(clipping.METHODS)}")
  if dp.sampling not in sampling_kinds():
    raise ConfigError(f"unknown dp.sampling {dp.sampling!r}; choose one of {sampling_kinds()}")
  if dp.accountant not in accounting.ACCOUNTANTS:
    raise ConfigError(f"unknown dp.accountant {dp.accountant!r}; choose one of "
                      f"{list(accounting.ACCOUNTANTS)}")
  if not float(dp.clip_norm) > 0:
    raise ConfigError(f"dp.clip_norm={dp.clip_norm} must be positive; "
                      "set --config.dp.clip_norm=1.0")
  if float(dp.target_epsilon) < 0:
    raise ConfigError(f"dp.target_epsilon={dp.target_epsilon} must be positive (or 0: use "
                      "dp.noise_multiplier as given); set --config.dp.target_epsilon=8")
  if float(dp.noise_multiplier) < 0:
    raise ConfigError(f"dp.noise_multiplier={dp.noise_multiplier} must be positive")
  if not 0.0 <= float(dp.delta) < 1.0:
    raise ConfigError(f"dp.delta={dp.delta} must lie in [0, 1) (0: 1 / examples per model)")
  if float(dp.target_epsilon) <= 0 and not float(dp.noise_multiplier) > 0:
    raise ConfigError("DP-SGD needs dp.noise_multiplier > 0 or dp.target_epsilon > 0; "
                      "set --config.dp.target_epsilon=8")


def sampling_kinds() -> list[str]:
  return list(accounting.SAMPLINGS)


@dataclasses.dataclass(frozen=True)
class DPPlan:
  """What one run of DP-SGD per model will do, decided before training (public values only)."""
  noise_multiplier: float
  expected_batch_size: float
  max_batch: int
  steps_per_epoch: int
  steps: int
  num_examples: int        # the smallest n_m (the least amplification: the largest epsilon)
  delta: float
  sampling: str
  accountant: str
  clip_norm: float = 1.0
  clipping: str = "fast"
  fault: str = ""          # dp.fault: '' or a deliberate break (the run is then NOT private)

  @property
  def sampling_rate(self) -> float:
    return self.expected_batch_size / self.num_examples

  def epsilon(self, steps: int | None = None) -> float:
    steps = self.steps if steps is None else steps
    if steps == 0:
      return 0.0
    kw = {}
    if self.sampling == "poisson" and self.accountant == "pld":
      kw = {"max_batch": self.max_batch, "num_examples": self.num_examples}
    return accounting.epsilon(self.noise_multiplier, self.sampling_rate, steps, self.delta,
                              accountant=self.accountant, sampling=self.sampling, **kw)


def plan(dp: ml_collections.ConfigDict, keep: np.ndarray, batch_size: int, epochs: int,
         progress=None) -> DPPlan:
  """Fixes sigma (given, or calibrated for dp.target_epsilon), the padded batch and the steps.

  Epsilon is accounted for the model with the fewest kept examples (the smallest n gives the
  largest sampling rate and so the largest epsilon); delta defaults to 1 / n. `progress` goes
  to accounting.calibrate_noise.
  """
  check_config(dp)
  n = int(keep.sum(axis=1).min())
  steps_per_epoch = max(1, math.ceil(int(keep.sum(axis=1).max()) / batch_size))
  steps = steps_per_epoch * epochs
  delta = float(dp.delta) if float(dp.delta) > 0 else 1.0 / n
  if dp.sampling == "poisson":
    max_batch = sampling.poisson_max_batch(int(keep.sum(axis=1).max()), batch_size)
  else:
    max_batch = batch_size
  sigma = float(dp.noise_multiplier)
  if float(dp.target_epsilon) > 0:
    kw = {"max_batch": max_batch, "num_examples": n} if (
        dp.sampling == "poisson" and dp.accountant == "pld") else {}
    sigma = accounting.calibrate_noise(float(dp.target_epsilon), batch_size / n, steps, delta,
                                       accountant=dp.accountant, sampling=dp.sampling,
                                       progress=progress, **kw)
  return DPPlan(noise_multiplier=sigma, expected_batch_size=float(batch_size),
                max_batch=max_batch, steps_per_epoch=steps_per_epoch, steps=steps,
                num_examples=n, delta=delta, sampling=dp.sampling, accountant=dp.accountant,
                clip_norm=float(dp.clip_norm), clipping=dp.clipping, fault=dp.get("fault", ""))


def epsilon_by_epoch(p: DPPlan, epochs: int) -> list[float]:
  """Epsilon spent after each of `epochs` epochs, for the progress log and the history.

  RDP accounting of the same sampling, composed incrementally (one accountant, cheap per
  epoch): an upper bound, looser than the PLD figure that `p.epsilon()` gives for the whole run
  and results.json reports.
  """
  accountant = rdp.RdpAccountant()
  one_epoch = accounting.dp_event(p.noise_multiplier, p.sampling_rate, p.steps_per_epoch,
                                  sampling=p.sampling)
  out = []
  with accounting.quiet_rdp():
    for _ in range(epochs):
      accountant.compose(one_epoch)
      out.append(float(accountant.get_epsilon(p.delta)))
  return out


def dp_train_step(state: TrainState, batch: Batch, key: jax.Array, *,
                  grad_fn: clipping.ClippedGrad, crop_padding: int = 0, flip: bool = False
                  ) -> tuple[TrainState, dict]:
  """One DP-SGD step of one model on a padded batch x [B, ...], y [B], mask [B].

  The clipped sum of per-example gradients (grad_fn) goes to state.tx, whose first link is the
  privatiser (make_step), with noise_key fold_in(key, NOISE_STREAM). Every step updates, even on
  an empty batch: under Poisson sampling a step whose batch is empty still releases its noisy
  update (skipping it would reveal that the batch was empty). Train accuracy is not computed
  (it would cost a forward pass): `correct` is NaN. Metrics {loss_sum, correct, count} over
  the real examples. BatchNorm is refused (its statistics mix examples).
  """
  if state.batch_stats:
    raise ConfigError("DP-SGD cannot train a model with BatchNorm (its batch statistics mix "
                      "examples); set --config.model.norm=group")
  aug_key, dropout_key = jax.random.split(key)
  x = augment.augment(aug_key, batch.x, crop_padding, flip)
  logits_fn = lambda params, inputs, rng: state.apply_fn(
      {"params": params}, inputs, train=True, rngs={} if rng is None else {"dropout": rng})
  grad_sum, aux = grad_fn(logits_fn, state.params, (x, batch.y, batch.mask), dropout_key)
  new_state = state.apply_gradients(grad_sum, noise_key=jax.random.fold_in(key, NOISE_STREAM))
  count = jnp.sum(batch.mask)
  return new_state, {"loss_sum": jnp.sum(aux.losses * batch.mask), "correct": jnp.nan * count,
                     "count": count}


def make_step(p: DPPlan, loss_fn: Callable, *, tx: optax.GradientTransformation,
              crop_padding: int = 0, flip: bool = False, microbatch_size: int | None = None,
              conv_norm: str = "auto") -> tuple[Callable, optax.GradientTransformationExtraArgs]:
  """The DP-SGD step of plan p and its optimiser: (step, optax.chain(privatiser, tx)).

  Args:
    p: the plan (clip norm, noise multiplier, expected batch size, clipping method, fault).
    loss_fn: (logits [B, C], labels [B]) -> per-example losses [B] (training.losses).
    tx: the user's optax transformation, applied to the privatised mean gradient.
    crop_padding, flip: augmentation, as the plain step's.
    microbatch_size, conv_norm: clipping.clipped_grad's.

  Returns:
    step(state, batch, key) -> (state, metrics), with `runs_empty_batches = True` (the mapping
    must not skip steps without real examples); build the state with the returned tx (its
    opt_state is (PrivatizerState, tx's state)).
  """
  clip_norm = math.inf if p.fault == "no_clipping" else p.clip_norm
  grad_fn = clipping.clipped_grad(loss_fn, clip_norm=clip_norm, method=p.clipping,
                                  microbatch_size=microbatch_size, conv_norm=conv_norm)
  privatizer = noise.gaussian_privatizer(
      noise_multiplier=0.0 if p.fault == "no_noise" else p.noise_multiplier,
      l2_sensitivity=p.clip_norm, expected_batch_size=p.expected_batch_size)
  step = functools.partial(dp_train_step, grad_fn=grad_fn, crop_padding=crop_padding, flip=flip)
  step.runs_empty_batches = True
  return step, optax.chain(privatizer, tx)


def make_sampler(p: DPPlan, keep: np.ndarray, seed: int) -> samplers.Sampler:
  """The sampler plan p was accounted for, over keep bool [M, N]: privacy's PoissonSampler
  (sampling 'poisson') or the trainer's UniformSampler of p.max_batch (shuffle: each example
  once per epoch)."""
  if p.sampling == "poisson":
    return sampling.PoissonSampler(keep=keep, expected_batch_size=p.expected_batch_size,
                                   seed=seed, steps_per_epoch=p.steps_per_epoch,
                                   max_batch=p.max_batch)
  return samplers.UniformSampler(keep, p.max_batch, seed)
