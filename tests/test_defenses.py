"""Logit reweighting (the study's post-hoc defense) and the train_test membership scheme."""

import numpy as np
import pytest

from mia_jax import defenses
from mia_jax.data import membership
from mia_jax.defenses import logit_reweighting as lr


def test_hand_computation():
  mu = np.array([[4.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 5.0]], np.float32)
  z = np.array([2.0, 1.0, 0.0], np.float32)     # predicted class 0
  c = mu[0]
  cos = z @ c / (np.linalg.norm(z) * np.linalg.norm(c))
  s = 0.1 * cos
  expected = s * z + (1 - s) * c
  np.testing.assert_allclose(np.asarray(lr.reweight(z, mu, 0.1)), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, [3.8265, 0.0868, 0.9132], atol=1e-4)


@pytest.mark.parametrize("w", [0.1, 0.5, 1.0])
def test_argmax_kept_when_s_nonnegative(w):
  rng = np.random.default_rng(0)
  c = 10
  mu = (6.0 * np.eye(c) + rng.normal(0, 1, (c, c))).astype(np.float32)   # argmax mu[k] = k
  assert np.all(mu.argmax(1) == np.arange(c))
  z = rng.normal(0, 3, (5000, c)).astype(np.float32)
  out = np.asarray(lr.reweight(z, mu, w))
  center = mu[z.argmax(1)]
  cos = (z * center).sum(1) / (np.linalg.norm(z, axis=1) * np.linalg.norm(center, axis=1))
  s_ok = w * cos >= 0
  assert s_ok.sum() > 1000
  np.testing.assert_array_equal(out[s_ok].argmax(1), z[s_ok].argmax(1))


def test_centroids_from_each_models_own_training_examples():
  logits = np.zeros((2, 4, 3), np.float32)
  logits[0] = [[1, 0, 0], [3, 0, 0], [0, 2, 0], [9, 9, 9]]
  logits[1] = [[5, 0, 0], [7, 0, 0], [0, 4, 0], [0, 0, 1]]
  labels = np.array([0, 0, 1, 2])
  keep = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  mu = lr.class_centroids(logits, labels, keep)
  np.testing.assert_allclose(mu[0, 0], [2, 0, 0])
  np.testing.assert_allclose(mu[0, 1], [0, 2, 0])
  np.testing.assert_allclose(mu[0, 2], np.mean(logits[0, :3], 0))   # class 2 not in model 0
  np.testing.assert_allclose(mu[1, 2], [0, 0, 1])


def test_defend_shapes_and_accuracy_on_a_fitted_ensemble():
  rng = np.random.default_rng(1)
  m, n, q, c = 3, 400, 2, 5
  labels = rng.integers(0, c, n)
  logits = rng.normal(0, 1, (m, n, q, c)).astype(np.float32)
  logits[np.arange(m)[:, None], np.arange(n)[None], :, labels[None]] += 4.0
  keep = rng.random((m, n)) < 0.5
  out = defenses.get("logit_reweighting")(logits, labels, keep, 0.1)
  assert out.shape == logits.shape and out.dtype == logits.dtype
  changed = np.mean(out.argmax(-1) != logits.argmax(-1))
  assert changed < 0.01
  # members' and non-members' true-class margins move closer together
  gap = lambda z: abs(np.mean(z[..., 0, :].max(-1)[keep]) - np.mean(z[..., 0, :].max(-1)[~keep]))
  assert gap(out) <= gap(logits) + 1e-6


def test_unknown_defense():
  from mia_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="logit_reweighting"):
    defenses.get("nope")


def test_train_test_scheme():
  keep = membership.train_test(3, 5, 2)
  assert keep.shape == (3, 7) and keep.dtype == bool
  assert keep[:, :5].all() and not keep[:, 5:].any()
  # keep_matrix unchanged beside it
  k = membership.keep_matrix(0, 4, 10, 0.5)
  assert np.all(k.sum(0) == 2)
