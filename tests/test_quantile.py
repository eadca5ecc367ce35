"""Tests for mia_jax.attacks.quantile against direct float64 recomputations on small data.

(The registry's null test, tests/test_null.py, runs quantile_regression at chance and on the
positive control with the rest of the attacks.)
"""

import doctest

import numpy as np
import pytest
from scipy import special

from mia_jax import attacks, metrics
from mia_jax.attacks import quantile, synthetic
from mia_jax.errors import ConfigError

GROUP_MEAN = np.array([-1.0, 0.5, 3.0])
GROUP_STD = np.array([0.5, 1.0, 2.0])


def _groups(seed, p=6000):
  """Features [P, 1] = one of three groups; the signal N(mean_g, std_g^2) in float64."""
  rng = np.random.default_rng(seed)
  g = rng.integers(0, 3, p)
  return g[:, None].astype(np.float64), GROUP_MEAN[g] + GROUP_STD[g] * rng.normal(size=p), g


def test_doctests():
  assert doctest.testmod(quantile).failed == 0


@pytest.mark.parametrize("alpha", [0.2, 0.05])
def test_quantile_head_is_each_groups_empirical_quantile(alpha):
  x, s, g = _groups(0)
  got = quantile.predict(quantile.fit(x, s, alpha), np.arange(3.0)[:, None])
  for group in range(3):
    own = np.sort(s[g == group])
    want = np.quantile(own, 1 - alpha)
    k = int(np.searchsorted(own, want))            # the order statistics around it
    gap = own[min(k + 1, own.size - 1)] - own[max(k - 2, 0)]
    assert abs(got[group] - want) <= gap + 1e-3, (group, got[group], want, gap)


def test_gaussian_heads_are_each_groups_mean_and_std():
  x, s, g = _groups(1, p=9000)
  model = quantile.fit(x, s, 0.01, method="gaussian")
  mu, sigma = quantile._mean_sigma(model, np.arange(3.0)[:, None])
  np.testing.assert_allclose(mu, [s[g == k].mean() for k in range(3)], atol=1e-3)
  np.testing.assert_allclose(sigma, GROUP_STD, rtol=0.1)
  z = special.ndtri(0.99)
  np.testing.assert_allclose(quantile.predict(model, np.arange(3.0)[:, None]), mu + z * sigma)


@pytest.mark.parametrize("method", quantile.METHODS)
def test_scores_are_the_signal_against_the_fitted_quantile(method):
  """quantile: s - q(x); gaussian: (s - mu) / sigma, above z_{1-alpha} exactly where s > q."""
  x, s, _ = _groups(2, p=3000)
  model = quantile.fit(x, s, 0.05, method=method)
  x_new, s_new, _ = _groups(3, p=500)
  got, q = quantile.score(model, x_new, s_new), quantile.predict(model, x_new)
  if method == "quantile":
    np.testing.assert_allclose(got, s_new - q, rtol=0, atol=1e-12)
  else:
    mu, sigma = quantile._mean_sigma(model, x_new)
    np.testing.assert_allclose(got, (s_new - mu) / sigma, rtol=1e-12)
    np.testing.assert_array_equal(got > special.ndtri(0.95), s_new > q)


@pytest.mark.parametrize("method", quantile.METHODS)
def test_fresh_non_members_are_flagged_at_about_alpha_whatever_their_difficulty(method):
  """The point of the attack: with the signal's level and spread depending on x, the fitted
  rule flags about alpha of new non-members in each region of x (a global threshold would
  flag the easy region's far more)."""
  rng = np.random.default_rng(4)
  draw = lambda n: (lambda x: (x, 2 * np.sin(3 * x[:, 0]) + (0.3 + x[:, 0]) * rng.normal(
      size=n)))(rng.random((n, 1)))
  x, s = draw(20_000)
  model = quantile.fit(x, s, 0.05, method=method)
  x_new, s_new = draw(20_000)
  flagged = s_new > quantile.predict(model, x_new)
  for region in (x_new[:, 0] < 0.5, x_new[:, 0] >= 0.5):
    assert 0.035 < flagged[region].mean() < 0.065
  everywhere = s_new > np.quantile(s, 0.95)
  assert abs(everywhere[x_new[:, 0] < 0.5].mean() - 0.05) > 0.02   # the contrast


def _float64_data(seed=5, m=4, n=600, p=1500):
  data, _ = synthetic.null_data(m, seed, null=False, num_examples=n, num_population=p,
                                num_classes=3, memorise=1.0)
  return attacks.AttackData(
      logits=data.logits.astype(np.float64), labels=data.labels, keep=data.keep,
      population_logits=data.population_logits.astype(np.float64),
      population_labels=data.population_labels, features=data.features,
      population_features=data.population_features)


def _phi64(z, y):
  p = special.softmax(np.asarray(z, np.float64), axis=-1)
  py = np.take_along_axis(p, y[:, None, None], -1)[..., 0]
  return (np.log(py) - np.log1p(-py)).mean(axis=-1)       # [N], over the queries


def test_registry_attack_is_fit_and_score_per_target_on_its_own_outputs():
  data = _float64_data()
  got = attacks.run("quantile_regression", data, [2, 0], alpha=0.05)
  for row, t in enumerate([2, 0]):
    model = quantile.fit(data.population_features,
                         _phi64(data.population_logits[t], data.population_labels), 0.05)
    want = quantile.score(model, data.features, _phi64(data.logits[t], data.labels))
    np.testing.assert_allclose(got[row], want, rtol=0, atol=1e-8)
  assert not attacks.reads_shadows("quantile_regression")


def test_the_regression_learns_difficulty_from_the_features():
  """Positive control: with features that predict each example's difficulty the attack beats
  the same attack on shuffled features (which is a global threshold on the signal)."""
  data, target = synthetic.null_data(8, 0, null=False, num_examples=20_000,
                                     num_population=2_000, memorise=0.5)
  rng = np.random.default_rng(0)
  shuffled = attacks.AttackData(
      logits=data.logits, labels=data.labels, keep=data.keep,
      population_logits=data.population_logits, population_labels=data.population_labels,
      features=rng.permutation(data.features), population_features=data.population_features)
  auc = lambda d: metrics.evaluate(attacks.run("quantile_regression", d, [target])[0],
                                   data.keep[target])["auc"]
  assert auc(data) > auc(shuffled) + 0.01


def test_missing_or_wrong_features_are_one_line_config_errors():
  data = _float64_data()
  base = dict(logits=data.logits, labels=data.labels, keep=data.keep,
              population_logits=data.population_logits,
              population_labels=data.population_labels)
  with pytest.raises(ConfigError, match="features=\\[N, D\\]"):
    attacks.run("quantile_regression", attacks.AttackData(**base), [0])
  bad = [dict(features=data.features),
         dict(features=data.features[:-1], population_features=data.population_features),
         dict(features=data.features, population_features=data.population_features[:, :2]),
         dict(features=np.where(np.eye(*data.features.shape, dtype=bool), np.nan,
                                data.features), population_features=data.population_features)]
  for extra in bad:
    with pytest.raises(ConfigError) as e:
      attacks.AttackData(**base, **extra)
    assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="alpha"):
    quantile.fit(data.population_features, np.zeros(len(data.population_features)), 0.7)
  with pytest.raises(ConfigError, match="method"):
    quantile.fit(data.population_features, np.zeros(len(data.population_features)),
                 method="mlp")


def test_input_features_project_on_the_population_only_and_append_the_label():
  rng = np.random.default_rng(6)
  pop_x, pool_x = rng.normal(size=(300, 4, 4)), rng.normal(size=(50, 4, 4))
  pop_y, pool_y = rng.integers(0, 3, 300), rng.integers(0, 3, 50)
  feats, pop_feats = quantile.input_features(pop_x, pop_y, pool_x, pool_y, 3, 5)
  assert feats.shape == (50, 8) and pop_feats.shape == (300, 8)
  np.testing.assert_array_equal(feats[:, 5:], np.eye(3)[pool_y])
  flat = pop_x.reshape(300, -1)
  centred = flat - flat.mean(0)
  top = np.linalg.svd(centred, full_matrices=False)[2][:5]          # float64 PCA directly
  np.testing.assert_allclose(np.abs(pop_feats[:, :5]), np.abs(centred @ top.T), atol=1e-8)
  _, again = quantile.input_features(pop_x, pop_y, pool_x * 10, pool_y, 3, 5)
  np.testing.assert_array_equal(again, pop_feats)                   # the pool shapes nothing
