"""mia_jax: membership inference attacks and defenses in JAX/Flax.

The functional pieces can be imported on their own:

  from mia_jax import data, models, training, attacks, metrics

Run a whole audit with `python -m mia_jax.main --config=configs/default.py --workdir=DIR`.
"""

__version__ = "0.1.0"
