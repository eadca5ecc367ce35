"""mia_jax: membership inference attacks and defenses in JAX/Flax.

The packages, each with a curated `__all__` (in the manner of optax):

  data       Dataset, the sources (digits, Fashion-MNIST, Purchase100, tfds, your own .npz)
  models     the registered flax modules and `package.module:Factory` for your own
  training   TrainState, train_step, train_ensemble(step, init_state, sampler, mapping), samplers
  mapping    how the model axis is mapped: vmap, loop (lanes), shared batch, sharded
  kernels    CPU kernels (im2col, forward-convolution gradients, window max) as explicit rewrites
  privacy    DP-SGD in jax_privacy's shape: clipped_grad, gaussian_privatizer, PoissonSampler,
             accounting and the canary audit
  attacks    array-level scores (lira.score, rmia.score, threshold.score, quantile, risk) and the
             registry that runs them on every target (AttackData, run)
  metrics    ROC, AUC, TPR at FPR, advantage, and their intervals
  defenses   post-hoc logit reweighting, ensembles, unlearning
  analysis   per-example leakage against outlierness, significance tests

  import mia_jax
  scores = mia_jax.attacks.lira.score(target_signal, shadow_signal, shadow_in)   # [N]

Subpackages load on first use (`mia_jax.attacks` imports it then), so `import mia_jax` is cheap.
The whole audit: `python -m mia_jax.main --config=configs/default.py --workdir=DIR`.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["analysis", "attacks", "data", "defenses", "errors", "kernels", "mapping", "metrics",
           "models", "privacy", "stats", "training"]


def __getattr__(name: str):
  if name in __all__:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
