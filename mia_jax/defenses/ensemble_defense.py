"""Ensemble defense: the released model averages K sub-models, each trained on its own part of
the training set, so any one example sways only the sub-models that saw it.

  partition_keep  K disjoint parts of the training examples (each example in ONE sub-model)
  bagging_keep    K bootstrap samples (with replacement; train_ensemble trains on the distinct
                  examples drawn, about 63% of the set for fraction 1)
  combine         released log-probabilities [N, Q, C] = log of the mean softmax of the K
                  sub-models' logits [K, N, Q, C]; attacks read them as logits

To audit the defense, train G released models of K sub-models each as ONE ensemble of G * K
models (`stack_keeps` of G keep matrices), query them all, then `released` turns the logits
[G * K, N, Q, C] and keep [G * K, N] into the G released models' logits [G, N, Q, C] and keep
[G, N] (a released model holds an example when any of its sub-models does).
"""

import numpy as np

from mia_jax.errors import ConfigError


def _members(num_examples: int, members) -> np.ndarray:
  members = np.ones(num_examples, bool) if members is None else np.asarray(members, bool)
  if members.shape != (num_examples,):
    raise ConfigError(f"members must be bool [N]=[{num_examples}], got {members.shape}")
  return members


def partition_keep(seed: int, num_models: int, num_examples: int, members=None) -> np.ndarray:
  """keep bool [K, N]: the examples of `members` (bool [N], default all) split at random into K
  disjoint parts whose sizes differ by at most one. A pure function of its arguments."""
  members = _members(num_examples, members)
  if not 1 <= num_models <= members.sum():
    raise ConfigError(f"cannot split {int(members.sum())} examples among {num_models} "
                      "sub-models; use between 1 and that many sub-models")
  ids = np.random.default_rng([seed, 0xE45]).permutation(np.flatnonzero(members))
  keep = np.zeros((num_models, num_examples), bool)
  for k, part in enumerate(np.array_split(ids, num_models)):
    keep[k, part] = True
  return keep


def bootstrap_counts(seed: int, num_models: int, num_examples: int, members=None,
                     fraction: float = 1.0) -> np.ndarray:
  """counts int32 [K, N]: how often sub-model k's bootstrap sample (round(fraction * |members|)
  draws with replacement from `members`) drew example n."""
  members = _members(num_examples, members)
  if num_models < 1 or not 0.0 < fraction <= 1.0:
    raise ConfigError(f"bagging needs num_models >= 1 and 0 < fraction <= 1, got {num_models} "
                      f"and {fraction}; e.g. num_models=4, fraction=1.0")
  ids = np.flatnonzero(members)
  draws = max(1, int(round(fraction * len(ids))))
  counts = np.zeros((num_models, num_examples), np.int32)
  for k in range(num_models):
    pick = np.random.default_rng([seed, 0xBA6, k]).choice(ids, draws, replace=True)
    np.add.at(counts[k], pick, 1)
  return counts


def bagging_keep(seed: int, num_models: int, num_examples: int, members=None,
                 fraction: float = 1.0) -> np.ndarray:
  """keep bool [K, N]: the distinct examples of each bootstrap sample (see bootstrap_counts)."""
  return bootstrap_counts(seed, num_models, num_examples, members, fraction) > 0


def combine(logits: np.ndarray) -> np.ndarray:
  """Released log-probabilities [..., N, Q, C] from sub-model logits [..., K, N, Q, C]:
  log of the mean over K of the softmax, computed stably in float64 (returned float32)."""
  z = np.asarray(logits, np.float64)
  if z.ndim < 4:
    raise ConfigError(f"logits must be [K, N, Q, C], got shape {z.shape}; add a query axis "
                      "with logits[:, :, None] for one query")
  z = z - z.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))           # log softmax
  top = log_p.max(-4, keepdims=True)
  mean = top + np.log(np.exp(log_p - top).mean(-4, keepdims=True))   # log mean exp over K
  return np.squeeze(mean, -4).astype(np.float32)


def stack_keeps(keeps) -> np.ndarray:
  """keep bool [G * K, N] of G released models' sub-model keeps [K, N] (model g*K + k)."""
  keeps = [np.asarray(k, bool) for k in keeps]
  if not keeps or len({k.shape for k in keeps}) != 1:
    raise ConfigError("stack_keeps needs one or more keep matrices of one shape [K, N]")
  return np.concatenate(keeps)


def released(logits: np.ndarray, keep: np.ndarray, num_sub: int) -> tuple[np.ndarray, np.ndarray]:
  """(logits [G, N, Q, C], keep bool [G, N]) of the G released models, from the sub-models'
  logits [G * K, N, Q, C] and keep [G * K, N] (K = num_sub consecutive models per release)."""
  m = logits.shape[0]
  if num_sub < 1 or m % num_sub or np.shape(keep)[0] != m:
    raise ConfigError(f"{m} sub-models do not form releases of {num_sub}; train a multiple of "
                      "num_sub models with keep rows to match")
  g = m // num_sub
  out = combine(np.asarray(logits).reshape((g, num_sub) + logits.shape[1:]))
  return out, np.asarray(keep, bool).reshape(g, num_sub, -1).any(axis=1)
