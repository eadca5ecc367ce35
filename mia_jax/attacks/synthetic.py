"""Synthetic model outputs with a known answer: the null data of tests/test_null.py.

`null_data` gives M models in LiRA's exact design (every pool example IN for exactly half of
them) whose shadows memorise strongly, and one target whose outputs carry no membership of
its own: an attack that reads only the target's outputs scores it at AUC 0.5, and one whose
references' IN/OUT composition depends on the target's keep row does not. The same data with
`null=False` is the positive control (the target memorises its own members).

Logits, float32 [M, N, 1, C]: N(0, 1) with the true class boosted by
1 + difficulty_i + v_i * row[m, i], difficulty_i ~ N(0, 1), v_i ~ memorise * Exp(1); row =
keep for the shadows, and for the null target a row drawn independently of its keep row
(its outputs look like those of a memorising model, for a membership that is not its own).
Population examples (RMIA's z), float32 [M, P, 1, C]: OUT for every model, the true class
boosted by 1 + their own difficulty. One numpy Generator of [seed, M] draws everything but
the features: features [N, 3] and population_features [P, 3] (for quantile_regression), the
example's difficulty + N(0, 0.1^2) noise and two noise columns, from a Generator of
[seed, M, 1], so the outputs are the same with or without them. They predict how high an
example's signal is, not whether it is a member.
"""

import numpy as np

from mia_jax.attacks.base import AttackData


def null_data(num_models: int, seed: int, *, null: bool = True, num_examples: int = 20_000,
              num_population: int = 2_000, num_classes: int = 10, memorise: float = 4.0
              ) -> tuple[AttackData, int]:
  """(AttackData, the target's model index (3 * seed + 1) mod M); see the module docstring."""
  m, n, c, p = num_models, num_examples, num_classes, num_population
  rng = np.random.default_rng([seed, m])
  labels = rng.integers(0, c, n)
  keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
  target = (3 * seed + 1) % m
  difficulty = rng.normal(size=n).astype(np.float32)
  vulnerability = memorise * rng.exponential(1.0, size=n).astype(np.float32)
  rows = keep.copy()
  fake = rng.random(n) < 0.5            # drawn either way, so null and control share the rest
  if null:
    rows[target] = fake
  z = rng.standard_normal((m, n, 1, c), dtype=np.float32)
  z[:, np.arange(n), 0, labels] += 1.0 + difficulty + vulnerability * rows
  pop_labels = rng.integers(0, c, p)
  zp = rng.standard_normal((m, p, 1, c), dtype=np.float32)
  pop_difficulty = rng.normal(size=p).astype(np.float32)
  zp[:, np.arange(p), 0, pop_labels] += 1.0 + pop_difficulty
  features, pop_features = _features(difficulty, pop_difficulty,
                                     np.random.default_rng([seed, m, 1]))
  return AttackData(logits=z, labels=labels, keep=keep, population_logits=zp,
                    population_labels=pop_labels, features=features,
                    population_features=pop_features), target


def _features(difficulty: np.ndarray, pop_difficulty: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
  """Features float32 [N, 3] and [P, 3]: the difficulty + N(0, 0.1^2), and two N(0, 1) columns
  that carry nothing. They predict each example's signal, never its membership."""
  def draw(d):
    noise = rng.standard_normal((d.size, 3), dtype=np.float32)
    return np.concatenate([d[:, None] + 0.1 * noise[:, :1], noise[:, 1:]], axis=1)
  return draw(difficulty), draw(pop_difficulty)
