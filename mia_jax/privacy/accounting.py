"""(epsilon, delta) accounting for DP-SGD with dp_accounting (PLD by default, RDP on request).

The DP events are built here directly from dp_accounting (not jax_privacy's DpParams wrapper,
which wants integer batch sizes and has no shuffle sampler); each matches one sampler of the
trainer:

- sampling="poisson" (mia_jax.privacy.sampling.PoissonSampler): PoissonSampledDpEvent(q,
  GaussianDpEvent(sigma)) composed `steps` times, add/remove-one adjacency. With max_batch (and
  num_examples) given, the padded sampler's truncation is accounted exactly by
  TruncatedSubsampledGaussianDpEvent (PLD only).
- sampling="shuffle" (the trainer's uniform sampler, mia_jax.training.samplers): shuffled
  fixed-size batches, each example once per epoch. No amplification by sampling is claimed:
  each epoch is one GaussianDpEvent(sigma) for every example (it lies in exactly one batch;
  sensitivity C under zero-out adjacency), composed over E = ceil(steps / ceil(1 / q)) epochs,
  which is exactly GaussianDpEvent(sigma / sqrt(E)). A valid, conservative bound; treating
  shuffling as Poisson is not justified (Chua et al. 2024 show it can understate epsilon).

Guarantee: the training run is (epsilon, delta)-DP for the returned epsilon, provided the sampler,
the clipping bound C and the noise N(0, (sigma C)^2) on the clipped SUM are as described.
"""

import contextlib
import math
from typing import Callable

from absl import logging as absl_logging
import dp_accounting
from dp_accounting import pld, rdp

from mia_jax.errors import ConfigError

ACCOUNTANTS = ("pld", "rdp")
SAMPLINGS = ("poisson", "shuffle")
_PLD_DISCRETIZATION = 1e-4  # dp_accounting's default; finer is slower for little gain


@contextlib.contextmanager
def quiet_rdp():
  """Silences the RDP accountant's warnings (orders whose series does not converge are left
  out of the bound, which stays valid: dozens of lines per calibration, nothing to act on)."""
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)


def _accountant(accountant: str):
  if accountant == "pld":
    return pld.PLDAccountant(value_discretization_interval=_PLD_DISCRETIZATION)
  if accountant == "rdp":
    return rdp.RdpAccountant()
  raise ConfigError(f"unknown accountant {accountant!r}; choose one of {list(ACCOUNTANTS)} "
                    "with --config.dp.accountant=NAME")


def dp_event(noise_multiplier: float, sampling_rate: float, steps: int, *,
             sampling: str = "poisson", max_batch: int | None = None,
             num_examples: int | None = None) -> dp_accounting.DpEvent:
  """The dp_accounting event of a whole DP-SGD run (see the module docstring)."""
  if not 0 < sampling_rate <= 1:
    raise ConfigError(f"sampling rate must be in (0, 1], got {sampling_rate}")
  if noise_multiplier <= 0:
    raise ConfigError(f"noise multiplier must be > 0, got {noise_multiplier}; "
                      "set --config.dp.noise_multiplier")
  if steps < 0:
    raise ConfigError(f"steps must be >= 0, got {steps}")
  if sampling == "poisson":
    if max_batch is None:
      one = dp_accounting.PoissonSampledDpEvent(
          sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    else:
      if num_examples is None:
        raise ConfigError("accounting a truncated Poisson batch (max_batch) needs num_examples")
      one = dp_accounting.TruncatedSubsampledGaussianDpEvent(
          dataset_size=num_examples, sampling_probability=sampling_rate,
          truncated_batch_size=max_batch, noise_multiplier=noise_multiplier)
    return dp_accounting.SelfComposedDpEvent(one, steps)
  if sampling == "shuffle":
    # E Gaussian mechanisms of sensitivity 1 and noise sigma compose exactly into one with
    # noise sigma / sqrt(E): the same value, without PLD's slow E-fold self-convolution.
    epochs = math.ceil(steps / math.ceil(1.0 / sampling_rate - 1e-9))
    return dp_accounting.GaussianDpEvent(noise_multiplier / math.sqrt(epochs))
  raise ConfigError(f"unknown sampling {sampling!r}; choose one of {list(SAMPLINGS)} "
                    "with --config.dp.sampling=NAME")


def epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float, *,
            accountant: str = "pld", sampling: str = "poisson", max_batch: int | None = None,
            num_examples: int | None = None) -> float:
  """Epsilon of `steps` DP-SGD steps at (noise_multiplier, sampling_rate), for `delta`.

  Args:
    noise_multiplier: sigma (noise std / C on the clipped sum).
    sampling_rate: q = expected batch size / n (shuffle: batch size / n).
    steps: optimizer steps taken.
    delta: target delta, e.g. 1 / n.
    accountant: "pld" (tight, default) or "rdp" (faster, looser).
    sampling: "poisson" or "shuffle" (see the module docstring).
    max_batch, num_examples: for a truncated Poisson sampler (PLD only).
  """
  if not 0 < delta < 1:
    raise ConfigError(f"delta must be in (0, 1), got {delta}; set --config.dp.delta")
  if steps == 0:
    return 0.0
  if max_batch is not None and accountant != "pld":
    raise ConfigError("truncated Poisson accounting (max_batch) needs accountant='pld'")
  acc = _accountant(accountant)
  acc.compose(dp_event(noise_multiplier, sampling_rate, steps, sampling=sampling,
                       max_batch=max_batch, num_examples=num_examples))
  with quiet_rdp():
    return float(acc.get_epsilon(delta))


def calibrate_noise(target_epsilon: float, sampling_rate: float, steps: int, delta: float, *,
                    accountant: str = "pld", sampling: str = "poisson",
                    max_batch: int | None = None, num_examples: int | None = None,
                    tol: float = 1e-3,
                    progress: Callable[[str, float], None] | None = None) -> float:
  """Smallest noise multiplier (to within tol) whose epsilon is <= target_epsilon.

  Bisection by dp_accounting.calibrate_dp_mechanism. For PLD the bracket comes from the RDP
  solution first (RDP epsilon >= PLD epsilon, so sigma_rdp is an upper end), which keeps PLD
  away from tiny sigmas, where its discretised distributions need tens of GiB.
  `progress(accountant, sigma)` is called before each accountant evaluation (PLD's take seconds
  each).
  """
  if target_epsilon <= 0:
    raise ConfigError(f"target epsilon must be > 0, got {target_epsilon}")
  _accountant(accountant)  # validates the name
  kw = dict(sampling=sampling, max_batch=max_batch, num_examples=num_examples)
  report = progress or (lambda name, sigma: None)

  def solve(acc_name, bracket):
    def event(sigma):
      report(acc_name, sigma)
      return dp_event(sigma, sampling_rate, steps, **kw)
    with quiet_rdp():
      return float(dp_accounting.calibrate_dp_mechanism(
          lambda: _accountant(acc_name), event, target_epsilon, delta, bracket_interval=bracket,
          tol=tol))

  if accountant == "rdp":
    return solve("rdp", dp_accounting.LowerEndpointAndGuess(1e-3, 1.0))
  rdp_kw = dict(kw, max_batch=None)  # RDP has no truncated event; untruncated is close
  with quiet_rdp():
    upper = float(dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant, lambda sigma: dp_event(sigma, sampling_rate, steps, **rdp_kw),
        target_epsilon, delta, bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=tol))
  report("pld", upper)
  if epsilon(upper, sampling_rate, steps, delta, accountant="pld", **kw) > target_epsilon:
    upper *= 1.5  # truncation can make the RDP (untruncated) end too small
  lower = 0.8 * upper  # PLD is typically 5-20% below RDP
  report("pld", lower)
  while epsilon(lower, sampling_rate, steps, delta, accountant="pld", **kw) <= target_epsilon:
    lower *= 0.8
    report("pld", lower)
  return solve("pld", dp_accounting.ExplicitBracketInterval(lower, upper))
