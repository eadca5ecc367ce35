"""Vulnerability, outlier scores, features, t-SNE and Grad-CAM on synthetic data."""

import jax
import numpy as np
import optax
import pytest

from mia_jax.analysis import embeddings, gradcam, outliers, plots, vulnerability
from mia_jax.models import cnn, mlp


def _clusters_with_outliers(seed=0, per_class=150, planted=4, classes=3, dim=8):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 10, (classes, dim))
  x, y, is_out = [], [], []
  for c in range(classes):
    x.append(centres[c] + rng.normal(0, 1, (per_class, dim)))
    direction = rng.normal(size=(planted, dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    x.append(centres[c] + 6.0 * direction + rng.normal(0, 0.3, (planted, dim)))
    y += [c] * (per_class + planted)
    is_out += [False] * per_class + [True] * planted
  return np.concatenate(x), np.array(y), np.array(is_out)


@pytest.mark.parametrize("name", ["centroid_distance", "knn_distance", "lof"])
def test_outlier_scores_rank_planted_outliers_first(name):
  x, y, is_out = _clusters_with_outliers()
  score = outliers.outlier_scores(x, y, k=10)[name]
  top = np.argsort(-score)[:is_out.sum()]
  assert is_out[top].all(), name


def test_centroid_angle_sees_direction_not_norm():
  rng = np.random.default_rng(0)
  centre = np.array([10.0, 0.0, 0.0, 0.0])
  inliers = centre + rng.normal(0, 0.5, (200, 4))
  longer = 3.0 * centre + rng.normal(0, 0.5, (5, 4))      # far away, same direction
  turned = np.array([[7.0, 7.0, 0, 0], [7.0, 0, 7.0, 0], [7.0, 0, 0, 7.0],
                     [7.0, -7.0, 0, 0], [7.0, 0, -7.0, 0]])  # 45 degrees off
  x = np.concatenate([inliers, longer, turned])
  y = np.zeros(len(x), int)
  angle = outliers.centroid_angle(x, y)
  assert set(np.argsort(-angle)[:5]) == set(range(205, 210))
  dist = outliers.centroid_distance(x, y)
  assert set(np.argsort(-dist)[:5]) == set(range(200, 205))


def test_outlier_scores_against_a_reference_set():
  x, y, is_out = _clusters_with_outliers(seed=1)
  reference = ~is_out | (np.arange(len(y)) % 2 == 0)
  for name, score in outliers.outlier_scores(x, y, reference, k=10).items():
    assert np.isfinite(score).all()
    if name == "centroid_angle":   # planted along random directions, some near-radial
      continue
    top = np.argsort(-score)[:is_out.sum()]
    assert is_out[top].mean() >= 0.9, name


def test_vulnerable_members_respect_the_fpr():
  rng = np.random.default_rng(0)
  scores = np.concatenate([rng.normal(1, 1, 1000), rng.normal(0, 1, 1000)])
  is_member = np.arange(2000) < 1000
  for alpha in (0.01, 0.005):
    v, t = vulnerability.vulnerable_members(scores, is_member, alpha)
    assert np.sum(scores[~is_member] > t) <= alpha * 1000
    assert not v[~is_member].any() and v.sum() == np.sum(scores[is_member] > t)


def test_across_targets():
  scores = np.array([[3.0, 0.0, 1.0, 2.0], [0.0, 3.0, 2.0, 1.0]])
  keep = np.array([[1, 0, 1, 0], [0, 1, 1, 0]], bool)
  r = vulnerability.across_targets(scores, keep, alphas=(0.01,))
  np.testing.assert_allclose(r["mean_in_score"][:3], [3.0, 3.0, 1.5])
  assert np.isnan(r["mean_in_score"][3])
  np.testing.assert_allclose(r["flagged_fraction"]["0.01"][:3], [1.0, 1.0, 0.5])


def test_group_statistics():
  rng = np.random.default_rng(0)
  score = rng.normal(0, 1, 400)
  group = np.zeros(400, bool)
  group[np.argsort(score)[-40:]] = True
  c = vulnerability.compare_groups(score, group)
  assert c["cliffs_delta"] == pytest.approx(1.0) and c["p_value"] < 1e-10
  assert vulnerability.rank_correlation(score, 2 * score + 1)["rho"] == pytest.approx(1.0)
  dec = vulnerability.decile_fractions(score, group)
  assert dec[-1] == 1.0 and sum(dec[:-1]) == 0.0


def test_penultimate_features_of_an_mlp():
  model = mlp.MLP(hidden=(16, 7), num_classes=3)
  x = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
  variables = model.init(jax.random.key(0), x[:1])
  feats, logits = embeddings.penultimate(model, variables, x, batch_size=20)
  assert feats.shape == (50, 7) and logits.shape == (50, 3)
  np.testing.assert_allclose(logits, model.apply(variables, x), rtol=1e-5, atol=1e-5)
  assert (feats >= 0).all()   # after the last ReLU
  pts = embeddings.tsne(feats, perplexity=5, max_iter=250)
  assert pts.shape == (50, 2)


def _patch_data(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(0, 0.3, (n, 16, 16, 1)).astype(np.float32)
  y = rng.integers(0, 2, n)
  x[y == 1, 10:14, 3:7] += 2.0
  return x, y


def test_gradcam_puts_mass_on_the_planted_patch(tmp_path):
  model = cnn.CNN(channels=(8,), num_classes=2, dense=0)
  x, y = _patch_data(512, 0)
  params = model.init(jax.random.key(0), x[:1])
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, xb, yb):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(p, xb), yb).mean()
    g = jax.grad(loss)(params)
    upd, opt = tx.update(g, opt)
    return optax.apply_updates(params, upd), opt

  for i in range(60):
    sl = slice((i * 64) % 512, (i * 64) % 512 + 64)
    params, opt = step(params, opt, x[sl], y[sl])
  xt, yt = _patch_data(64, 1)
  assert np.mean(np.argmax(model.apply(params, xt), -1) == yt) > 0.95
  pos = yt == 1
  cams = gradcam.gradcam(model, params, xt[pos], yt[pos])
  assert cams.shape == (pos.sum(), 16, 16) and cams.max() <= 1.0 + 1e-6
  region = np.zeros((16, 16), bool)
  region[9:15, 2:8] = True            # the 4x4 patch and a one-pixel rim
  mass = (cams * region).sum((1, 2)) / cams.sum((1, 2))
  assert mass.mean() > 0.6, mass
  plots.gradcam_grid([("patch", xt[pos][:4], cams[:4], ["a"] * 4)], str(tmp_path / "g.png"))
  assert (tmp_path / "g.png").stat().st_size > 1000


def test_plots_write_files(tmp_path):
  rng = np.random.default_rng(0)
  member = rng.random(300) < 0.5
  snaps = {1: {"loss": rng.random(300), "scaled logit": rng.normal(size=300)},
           5: {"loss": rng.random(300), "scaled logit": rng.normal(size=300)}}
  plots.signal_histograms(snaps, member, str(tmp_path / "h.png"))
  plots.tsne_scatter(rng.normal(size=(300, 2)), rng.integers(0, 3, 300), member,
                     str(tmp_path / "t.png"))
  plots.decile_bars({"a": list(rng.random(10))}, str(tmp_path / "d.png"))
  assert all((tmp_path / f).stat().st_size > 1000 for f in ("h.png", "t.png", "d.png"))
