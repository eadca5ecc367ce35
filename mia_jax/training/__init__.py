"""Training: optimizers, the pure single-model train step, and the ensemble trainer.

  from mia_jax.training import optim, steps, ensemble
"""
