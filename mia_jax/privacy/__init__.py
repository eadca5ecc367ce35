"""DP-SGD for mia_jax: per-example clipping, noise, sampling, accounting and auditing.

One module per concern; device work (clipping, noise) in JAX, host work (sampling, accounting,
auditing) in NumPy. jax_privacy 2.0 and dp_accounting do the parts they do well (reference
clipping, Poisson index selection, the DP events and accountants, the one-run auditor); ghost
clipping, the stateless step-keyed noise and the padded static-shape samplers are written here.

A DP train step (see clipping.clipped_grad_sum and noise.privatize):

  gsum, aux = clipped_grad_sum(apply_fn, params, x, y, mask, clip_norm=C, method="fast",
                               rng=dropout_key)
  grad = privatize(gsum, noise_key, step=step, noise_multiplier=sigma, clip_norm=C,
                   expected_batch_size=q * n)
  updates, opt_state = tx.update(grad, opt_state, params)

Guarantee (with a matching sampler and accounting): the run is (epsilon, delta)-DP for
epsilon = accounting.epsilon(sigma, q, steps, delta, sampling=...).
"""

from mia_jax.privacy.accounting import calibrate_noise, dp_event, epsilon
from mia_jax.privacy.auditing import epsilon_lower_bound
from mia_jax.privacy.clipping import (ClipAux, ClippedGrad, apply_fn_for, check_dp_compatible,
                                      clipped_grad, clipped_grad_sum, per_example_xent)
from mia_jax.privacy.noise import (PrivatizerState, gaussian_noise, gaussian_privatizer,
                                   privatize, step_key)
from mia_jax.privacy.sampling import PoissonSampler, poisson_max_batch

__all__ = [
    "ClipAux", "ClippedGrad", "PoissonSampler", "PrivatizerState", "apply_fn_for",
    "calibrate_noise", "check_dp_compatible", "clipped_grad", "clipped_grad_sum", "dp_event",
    "epsilon", "epsilon_lower_bound", "gaussian_noise", "gaussian_privatizer",
    "per_example_xent", "poisson_max_batch", "privatize", "step_key",
]
