"""Canaries for the empirical privacy audit: pool examples given a wrong label.

A mislabelled example is the easiest to memorise and so the most exposed: a model that trained
on it fits its wrong label, one that did not predicts its true class. The keep matrix already
includes each pool example in a target model by a fair coin, independently across examples
(each column of LiRA's keep matrix is drawn independently), which is what the one-run audit of
Steinke, Nasr and Jagielski (2023) needs.
"""

import dataclasses

import numpy as np

from mia_jax.errors import ConfigError


def plant(dataset, num_canaries: int, seed: int):
  """Relabels `num_canaries` random pool examples to a different random class.

  Returns (dataset with the new pool labels, canary indices int [K] into the pool, sorted).
  Every model trains on, and every attacker sees, the canaries' new labels.
  """
  n = len(dataset.pool_y)
  if num_canaries <= 0:
    return dataset, np.zeros(0, np.int64)
  if num_canaries > n // 2:
    raise ConfigError(f"audit.num_canaries={num_canaries} is more than half the pool ({n}); "
                      "lower it or raise --config.data.pool_size")
  rng = np.random.default_rng([seed, 0xCA])
  idx = np.sort(rng.choice(n, num_canaries, replace=False))
  y = dataset.pool_y.copy()
  y[idx] = (y[idx] + rng.integers(1, dataset.num_classes, num_canaries)) % dataset.num_classes
  return dataclasses.replace(dataset, pool_y=y), idx
