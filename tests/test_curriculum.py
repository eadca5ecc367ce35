"""Curriculum learning: difficulty scores, pacing schedules and easy-first epoch batches."""

import numpy as np
import pytest

from mia_jax.data import membership
from mia_jax.errors import ConfigError
from mia_jax.training import curriculum, ensemble


def test_difficulty_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(9, 4))
  labels = rng.integers(0, 4, 9)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  py = p[np.arange(9), labels]
  np.testing.assert_allclose(curriculum.difficulty(logits, labels, "loss"), -np.log(py))
  np.testing.assert_allclose(curriculum.difficulty(logits, labels, "confidence"), 1 - py)
  with pytest.raises(ConfigError):
    curriculum.difficulty(logits, labels, "margin")
  with pytest.raises(ConfigError):
    curriculum.difficulty(logits[None], labels)


@pytest.mark.parametrize("kind", curriculum.PACINGS)
def test_pacing_starts_small_grows_and_ends_at_all(kind):
  frac = curriculum.pacing_schedule(kind, 9, start=0.25, num_steps=4)
  assert frac.shape == (9,) and frac[0] == pytest.approx(0.25) and frac[-1] == pytest.approx(1.0)
  assert (np.diff(frac) >= 0).all()
  if kind == "step":
    assert len(np.unique(frac)) == 5
  if kind == "root":
    assert (frac >= curriculum.pacing_schedule("linear", 9, start=0.25) - 1e-12).all()
  with pytest.raises(ConfigError):
    curriculum.pacing_schedule("cubic", 9)


def test_curriculum_batches_follow_difficulty():
  keep = membership.keep_matrix(0, 4, 60)
  diff = np.random.default_rng(1).permutation(60).astype(float)   # distinct difficulties
  pacing = curriculum.pacing_schedule("linear", 5, start=0.3)
  full_idx, _ = ensemble.epoch_batches(keep, 8, seed=0, epoch=0)
  for epoch, frac in enumerate(pacing):
    idx, mask = curriculum.curriculum_epoch_batches(keep, diff, pacing, 8, 0, epoch)
    assert idx.shape == mask.shape == full_idx.shape               # S fixed: one compile
    assert idx.dtype == np.int32 and mask.dtype == np.float32
    for m in range(4):
      own = np.flatnonzero(keep[m])
      easiest = own[np.argsort(diff[own])][:int(np.ceil(frac * len(own) - 1e-9))]
      real = idx[:, m][mask[:, m] > 0]
      np.testing.assert_array_equal(np.sort(real), np.sort(easiest))   # each open one once
      assert keep[m, idx[:, m]].all()                                  # padding: own examples
      if epoch == 0:
        assert diff[real].max() < np.sort(diff[own])[len(easiest)]     # only easy ones
  # The last epoch holds every kept example, like a plain epoch.
  np.testing.assert_array_equal(mask, ensemble.epoch_batches(keep, 8, seed=0, epoch=4)[1])


def test_curriculum_batches_per_model_independent_and_checked():
  keep = membership.keep_matrix(0, 4, 60)
  diff = np.arange(60.0)
  idx, mask = curriculum.curriculum_epoch_batches(keep, diff, 0.5, 8, 3, 1)
  sub, sub_mask = curriculum.curriculum_epoch_batches(keep[2:3], diff, 0.5, 8, 3, 1,
                                                      model_ids=[2])
  n = int(mask[:, 2].sum())
  np.testing.assert_array_equal(sub[:, 0].ravel()[:n], idx[:, 2].ravel()[:n])
  with pytest.raises(ConfigError):
    curriculum.curriculum_epoch_batches(keep, diff, [0.5, 1.0], 8, 0, epoch=2)
  with pytest.raises(ConfigError):
    curriculum.curriculum_epoch_batches(keep, diff[:10], 0.5, 8, 0, 0)
