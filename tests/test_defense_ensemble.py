"""Ensemble defense: disjoint partitions, bootstrap samples, and the released combination."""

import numpy as np
import pytest

from mia_jax import attacks
from mia_jax.defenses import ensemble_defense as ed
from mia_jax.errors import ConfigError


def test_partitions_are_disjoint_and_cover_the_members():
  members = np.arange(103) % 4 != 0
  keep = ed.partition_keep(0, 4, 103, members)
  assert keep.shape == (4, 103) and keep.dtype == np.bool_
  np.testing.assert_array_equal(keep.sum(0), members)       # each member in exactly one part
  assert np.ptp(keep.sum(1)) <= 1
  np.testing.assert_array_equal(keep, ed.partition_keep(0, 4, 103, members))
  assert not np.array_equal(keep, ed.partition_keep(1, 4, 103, members))
  with pytest.raises(ConfigError):
    ed.partition_keep(0, 0, 10)


def test_bagging_draws_bootstrap_samples_of_the_members():
  members = np.arange(200) < 150
  counts = ed.bootstrap_counts(3, 5, 200, members)
  np.testing.assert_array_equal(counts.sum(1), 150)
  assert not counts[:, ~members].any()
  keep = ed.bagging_keep(3, 5, 200, members)
  np.testing.assert_array_equal(keep, counts > 0)
  assert 0.5 < keep.sum(1).mean() / 150 < 0.75             # about 1 - 1/e distinct
  assert ed.bootstrap_counts(3, 2, 200, members, fraction=0.5).sum(1).tolist() == [75, 75]
  with pytest.raises(ConfigError):
    ed.bootstrap_counts(0, 2, 10, fraction=1.5)


def test_combine_matches_numpy_mean_of_probabilities():
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=5.0, size=(3, 7, 2, 4)).astype(np.float32)
  p = np.exp(logits.astype(np.float64))
  p /= p.sum(-1, keepdims=True)
  want = np.log(p.mean(0))
  got = ed.combine(logits)
  assert got.shape == (7, 2, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-5)
  # Stable for large logits (float32 rounds logits + 1000 to about 6e-5).
  np.testing.assert_allclose(ed.combine(logits + 1000.0), want, atol=2e-4)
  with pytest.raises(ConfigError):
    ed.combine(logits[:, :, 0, 0])


def test_released_models_feed_the_attacks():
  rng = np.random.default_rng(1)
  keep = ed.stack_keeps([ed.partition_keep(g, 2, 30) for g in range(3)])    # 3 releases of 2
  logits = rng.normal(size=(6, 30, 1, 5)).astype(np.float32)
  out, rkeep = ed.released(logits, keep, 2)
  assert out.shape == (3, 30, 1, 5) and rkeep.all()
  np.testing.assert_allclose(out[1], ed.combine(logits[2:4]), rtol=1e-6)
  data = attacks.AttackData(logits=out, labels=rng.integers(0, 5, 30),
                            keep=ed.stack_keeps([ed.partition_keep(0, 2, 30)[:1]] * 3))
  assert attacks.run("loss", data, targets=[0]).shape == (1, 30)
  with pytest.raises(ConfigError):
    ed.released(logits, keep, 4)
