"""DP-SGD for mia_jax in jax_privacy's shape: clipping, noise, sampling, accounting, auditing.

One module per concern; device work (clipping, noise) in JAX, host work (sampling, accounting,
auditing) in NumPy. jax_privacy 2.0 and dp_accounting do the parts they do well (reference
clipping, the DP events and accountants, the one-run auditor); ghost clipping, the step-keyed
noise generator and the padded ensemble Poisson sampler are written here.

  grad_fn = clipped_grad(loss_fn, clip_norm=C)            # loss_fn(logits [B, K], y [B]) -> [B]
  grad_sum, aux = grad_fn(apply_fn, params, (x, y, mask), dropout_key)  # sensitivity C
  tx = optax.chain(gaussian_privatizer(noise_multiplier=sigma,
                                       l2_sensitivity=grad_fn.l2_sensitivity,
                                       expected_batch_size=q * n), optax.adam(1e-3))
  updates, opt_state = tx.update(grad_sum, opt_state, params, noise_key=key)
  sampler = PoissonSampler(keep=keep, expected_batch_size=q * n, seed=0)   # keep [M, N]

Guarantee (batches from the sampler, noise on the clipped SUM): each model's run is
(epsilon, delta)-DP for epsilon = epsilon(sigma, q, steps, delta, max_batch=sampler.max_batch,
num_examples=n). mia_jax.training.dp joins these to the ensemble trainer.
"""

from mia_jax.privacy import accounting, auditing, clipping, ghost, noise, sampling
from mia_jax.privacy.accounting import calibrate_noise, dp_event, epsilon
from mia_jax.privacy.auditing import epsilon_lower_bound
from mia_jax.privacy.clipping import ClipAux, ClippedGrad, check_dp_compatible, clipped_grad
from mia_jax.privacy.noise import PrivatizerState, gaussian_privatizer
from mia_jax.privacy.sampling import PoissonSampler, poisson_max_batch

__all__ = [
    # modules
    "accounting", "auditing", "clipping", "ghost", "noise", "sampling",
    # data types
    "ClipAux", "ClippedGrad", "PoissonSampler", "PrivatizerState",
    # clipping and noise (device), sampling and accounting (host)
    "calibrate_noise", "check_dp_compatible", "clipped_grad", "dp_event", "epsilon",
    "epsilon_lower_bound", "gaussian_privatizer", "poisson_max_batch",
]
