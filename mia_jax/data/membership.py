"""Which model trains on which pool example: the membership keep matrix.

Drawn exactly as LiRA's reference code draws it: U ~ Uniform[M, N]; order = argsort(U, axis=0);
keep[m, i] = order[m, i] < pkeep * M. Every example is then IN for exactly int(pkeep * M) models.
"""

import numpy as np

from mia_jax.errors import ConfigError


def keep_matrix(seed: int, num_models: int, num_examples: int, pkeep: float = 0.5) -> np.ndarray:
  """Returns keep: bool [M, N], a pure function of (seed, M, N, pkeep)."""
  if num_models < 2:
    raise ConfigError(f"membership.num_models={num_models}: an audit needs at least 2 models "
                      "(a target and a shadow); set --config.membership.num_models=16")
  if not 0.0 < pkeep < 1.0:
    raise ConfigError(f"membership.pkeep={pkeep} must lie strictly between 0 and 1; "
                      "set --config.membership.pkeep=0.5")
  if not 1 <= int(pkeep * num_models) < num_models:
    raise ConfigError(f"membership.pkeep={pkeep} with {num_models} models puts each example in "
                      f"{int(pkeep * num_models)} models; it must be in at least one and not all; "
                      "raise --config.membership.num_models or set pkeep=0.5")
  rng = np.random.default_rng(seed)
  u = rng.uniform(0.0, 1.0, size=(num_models, num_examples))
  order = u.argsort(axis=0)
  return order < int(pkeep * num_models)


SCHEMES = ("random_halves", "train_test")


def train_test(num_models: int, num_train: int, num_test: int) -> np.ndarray:
  """The study's scheme: keep bool [M, num_train + num_test], every model trained on the train
  split (the first num_train examples of the audited set) and none on the test split.

  Members are the train split and non-members the test split (Khalil et al. 2025: CIFAR-10's
  50,000 / 10,000, Purchase100's 80% / 20%); the M models differ only in their seeds. LiRA and
  RMIA need `keep_matrix`'s random halves instead: here no model holds a member OUT.
  """
  if num_models < 1:
    raise ConfigError(f"membership.num_models={num_models} must be at least 1")
  if num_train < 1 or num_test < 1:
    raise ConfigError(f"the train_test scheme needs members and non-members, got {num_train} "
                      f"train and {num_test} test examples; raise data.pool_size / data.test_size")
  keep = np.zeros((num_models, num_train + num_test), bool)
  keep[:, :num_train] = True
  return keep
