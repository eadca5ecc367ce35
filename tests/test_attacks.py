"""Tests for mia_jax.attacks against direct float64 numpy computations on tiny data."""

import json

import numpy as np
import pytest
from scipy import special, stats
from sklearn import linear_model, pipeline, preprocessing

from mia_jax import attacks, metrics
from mia_jax.attacks import lira, shokri, signals
from mia_jax.errors import ConfigError

M, N, Q, C = 6, 20, 2, 3


def _keep(rng, m, n):
  """Every example IN for exactly half the models (LiRA's design)."""
  return np.argsort(rng.random((m, n)), axis=0) < m // 2


def _data(seed=0, m=M, n=N, leak=1.0, dtype=np.float64, population=0):
  """Synthetic logits [m, n, Q, C]: the true class gets a boost, larger when IN."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, C, n)
  keep = _keep(rng, m, n)
  hard = rng.normal(size=n)  # per-example difficulty, shared by all models

  def logits(lab, boost):
    z = rng.normal(size=(m, lab.size, Q, C))
    z[:, np.arange(lab.size), :, lab] += np.moveaxis(boost, 0, -1)[..., None]
    return z.astype(dtype)

  z = logits(labels, 1.0 + hard + leak * keep)
  extra = {}
  if population:
    plab = rng.integers(0, C, population)
    extra = {"population_logits": logits(plab, 1.0 + rng.normal(size=population)
                                         + np.zeros((m, 1))),
             "population_labels": plab}
  return attacks.AttackData(logits=z, labels=labels, keep=keep, **extra)


def _phi64(z, y):
  """Scaled logit in float64, directly: log p_y - log(1 - p_y)."""
  p = special.softmax(np.asarray(z, np.float64), axis=-1)
  py = np.take_along_axis(p, np.broadcast_to(y, p.shape[:-1])[..., None], -1)[..., 0]
  return np.log(py) - np.log1p(-py)


def _auc(scores, member):
  fpr, tpr, _ = metrics.roc_curve(scores, member)
  return metrics.auc(fpr, tpr)


# ------------------------------------------------------------------ signals


def test_scaled_logit_extreme_logits():
  z = np.array([[1e4, 0.0, 0.0], [0.0, 1e4, -1e4], [-1e4, 1e4, 0.0], [-5e3, -5e3, 5e3],
                [30.0, -30.0, 0.0]])
  y = np.array([0, 0, 2, 2, 0])
  expected = np.array([
      1e4 - np.log(2.0),
      0.0 - special.logsumexp([1e4, -1e4]),
      0.0 - special.logsumexp([-1e4, 1e4]),
      5e3 - special.logsumexp([-5e3, -5e3]),
      30.0 - special.logsumexp([-30.0, 0.0]),
  ])
  for dtype in (np.float64, np.float32):
    got = signals.scaled_logit(z.astype(dtype), y)
    assert got.dtype == np.result_type(dtype, np.float32)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_signals_match_float64_formulas():
  rng = np.random.default_rng(0)
  z = rng.normal(scale=4.0, size=(4, 5, 2, C))
  y = rng.integers(0, C, 5)[:, None]
  p = special.softmax(z, axis=-1)
  yy = np.broadcast_to(y, z.shape[:-1])[..., None]
  py = np.take_along_axis(p, yy, -1)[..., 0]
  others = np.ones_like(p, bool)
  np.put_along_axis(others, yy, False, -1)
  mentr = -(1 - py) * np.log(py) - np.sum(np.where(others, p * np.log(1 - p), 0.0), -1)
  expected = {"scaled_logit": _phi64(z, y), "loss": -np.log(py), "confidence": py,
              "entropy": -np.sum(p * np.log(p), -1), "modified_entropy": mentr}
  for name, fn in signals.SIGNALS.items():
    np.testing.assert_allclose(fn(z, y), expected[name], rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(fn(z.astype(np.float16), y),
                               fn(z.astype(np.float16).astype(np.float64), y),
                               rtol=2e-5, atol=1e-5, err_msg=name)


def test_modified_entropy_stable_when_wrong_and_confident():
  # p of a wrong class -> 1: log(1 - p_j) must come from the other classes, not log1p(-1).
  got = signals.modified_entropy(np.array([[0.0, 200.0, 0.0]], np.float32), np.array([0]))
  # Mentr ~ -log p_y - p_1 log(1 - p_1) = 200 + log(...) + 200 - log 2.
  assert np.isfinite(got[0]) and got[0] == pytest.approx(400 - np.log(2), rel=1e-5)


def test_signals_chunking(monkeypatch):
  rng = np.random.default_rng(1)
  z = rng.normal(size=(3, 7, 2, C)).astype(np.float32)
  y = rng.integers(0, C, 7)[:, None]
  whole = signals.loss(z, y)
  monkeypatch.setattr(signals, "_CHUNK", 5)  # forces the per-row recursion and small steps
  np.testing.assert_array_equal(signals.loss(z, y), whole)


def test_signals_reject_bad_labels():
  with pytest.raises(ConfigError):
    signals.loss(np.zeros((4, 2, 3)), np.arange(4))  # [4] does not broadcast to [4, 2]
  with pytest.raises(ConfigError):
    signals.loss(np.zeros((4, 3)), np.array([0, 1, 2, 3]))  # label 3 out of range


# ------------------------------------------------------------------ registry and data


def test_registry():
  assert {"loss", "lira_online"} <= set(attacks.names())
  with pytest.raises(ConfigError, match="lira_online"):
    attacks.get("lira")
  data = _data()
  with pytest.raises(ConfigError, match="takes no parameter"):
    attacks.run("loss", data, [0], gamma=2.0)
  with pytest.raises(ConfigError):
    attacks.run("loss", data, [M])


def test_attack_data_validation():
  data = _data()
  with pytest.raises(ConfigError):
    attacks.AttackData(logits=data.logits[..., 0], labels=data.labels, keep=data.keep)
  with pytest.raises(ConfigError):
    attacks.AttackData(logits=data.logits, labels=data.labels, keep=data.keep.astype(int))


# ------------------------------------------------------------------ attacks vs float64


def test_loss_attack_matches_numpy():
  data = _data()
  got = attacks.run("loss", data, [0, 3])
  p = special.softmax(data.logits, axis=-1)
  py = np.take_along_axis(p, data.labels[None, :, None, None], -1)[..., 0]
  np.testing.assert_allclose(got, np.log(py[[0, 3]]).mean(-1), rtol=1e-12)


def _balanced(data, t, group):
  """Per example, the group's shadows (other models, in index order) that LiRA uses: in an
  exact design (counts over examples differ by at most one, the smallest >= 1) the first
  `smallest count` of them, as the reference code truncates; otherwise all."""
  lists = [[m for m in range(data.num_models) if m != t and group[m, i]]
           for i in range(data.num_examples)]
  n = [len(x) for x in lists]
  if max(n) - min(n) <= 1 and min(n) >= 1:
    lists = [x[:min(n)] for x in lists]
  return lists


def _lira_reference(data, t, kind):
  """LiRA for target t, one example and query at a time, as the reference code."""
  phi = _phi64(data.logits, data.labels[None, :, None])
  ins_of, outs_of = _balanced(data, t, data.keep), _balanced(data, t, ~data.keep)
  res_in = [phi[m, i, q] - np.median([phi[k, i, q] for k in ins_of[i]])
            for i in range(data.num_examples) for q in range(Q) for m in ins_of[i]]
  res_out = [phi[m, i, q] - np.median([phi[k, i, q] for k in outs_of[i]])
             for i in range(data.num_examples) for q in range(Q) for m in outs_of[i]]
  g_in, g_out = np.std(res_in), np.std(res_out)
  out = np.zeros(data.num_examples)
  for i in range(data.num_examples):
    for q in range(Q):
      ins = np.array([phi[m, i, q] for m in ins_of[i]])
      outs = np.array([phi[m, i, q] for m in outs_of[i]])
      x = phi[t, i, q]
      mi, mo, si, so = np.median(ins), np.median(outs), np.std(ins), np.std(outs)
      if kind == "lira_online":
        s = (stats.norm.logpdf(x, mi, si + 1e-30) - stats.norm.logpdf(x, mo, so + 1e-30))
      elif kind == "lira_online_fixed_var":
        s = stats.norm.logpdf(x, mi, g_in + 1e-30) - stats.norm.logpdf(x, mo, g_out + 1e-30)
      elif kind == "lira_offline":
        s = stats.norm.logcdf(x, mo, so + 1e-30)
      elif kind == "lira_offline_fixed_var":
        s = stats.norm.logcdf(x, mo, g_out + 1e-30)
      else:
        s = -stats.norm.logpdf(x, mo, so + 1e-30)
      out[i] += s / Q
  return out


@pytest.mark.parametrize("kind", ["lira_online", "lira_online_fixed_var", "lira_offline",
                                  "lira_offline_fixed_var", "lira_offline_logpdf"])
def test_lira_matches_reference(kind):
  data = _data(seed=1)
  targets = list(range(M))
  got = attacks.run(kind, data, targets)
  for row, t in enumerate(targets):
    np.testing.assert_allclose(got[row], _lira_reference(data, t, kind), rtol=1e-9,
                               atol=1e-9, err_msg=f"target {t}")


def test_lira_matches_reference_on_independent_draws():
  """Keep rows drawn independently (counts vary by more than one): every shadow is used."""
  data = _data(seed=11, m=12)
  rng = np.random.default_rng(11)
  keep = np.zeros((12, N), bool)
  for i in range(N):       # 4 to 8 IN of 12: every group keeps >= 3 shadows, counts vary
    keep[rng.permutation(12)[:rng.integers(4, 9)], i] = True
  data = attacks.AttackData(logits=data.logits, labels=data.labels, keep=keep)
  for kind in ("lira_online", "lira_offline"):
    got = attacks.run(kind, data, [0, 3])
    for row, t in enumerate([0, 3]):
      np.testing.assert_allclose(got[row], _lira_reference(data, t, kind), rtol=1e-9,
                                 atol=1e-9)


@pytest.mark.parametrize("queries", [1, 10])
def test_lira_is_unbiased_without_signal(queries):
  """Outputs that ignore membership, LiRA's exact half design, 16 models: members and
  non-members must score alike. Before shadow counts were balanced, a member's one IN shadow
  fewer shifted the scores: AUC 48.7 (one query) and 46.6 (ten queries)."""
  rng = np.random.default_rng(0)
  m, n, c = 16, 3000, 10
  y = rng.integers(0, c, n)
  keep = _keep(rng, m, n)
  z = (3 * rng.normal(size=(1, n, 1, c)) + rng.normal(size=(m, n, 1, c))
       + 0.3 * rng.normal(size=(m, n, queries, c)))
  data = attacks.AttackData(logits=z, labels=y, keep=keep)
  for name in ("lira_online", "lira_online_fixed_var", "lira_offline"):
    s, _ = attacks.evaluate_attack(name, data, list(range(m)))
    assert abs(s["auc"]["mean"] - 0.5) < 0.006, (name, s["auc"]["mean"])


def test_lira_float32_close_to_float64():
  d64 = _data(seed=2)
  d32 = attacks.AttackData(logits=d64.logits.astype(np.float32), labels=d64.labels,
                           keep=d64.keep)
  np.testing.assert_allclose(attacks.run("lira_online", d32, [0, 1]),
                             attacks.run("lira_online", d64, [0, 1]), rtol=1e-3, atol=1e-3)


def test_lira_fixed_var_sigma_out_is_not_the_in_std():
  # Regression test for the reference code's bug (std_out = np.std(dat_in)): OUT shadows are
  # 10x noisier than IN ones, so the two global sigmas must differ by about 10x.
  rng = np.random.default_rng(3)
  m, n = 12, 40
  keep = _keep(rng, m, n)
  noise = rng.normal(size=(m, n, Q)) * np.where(keep, 0.1, 1.0)[..., None]
  logits = np.zeros((m, n, Q, C))
  logits[..., 0] = rng.normal(size=n)[:, None] + keep[..., None] + noise  # phi = this - log 2
  data = attacks.AttackData(logits=logits, labels=np.zeros(n, int), keep=keep)
  _, st_in, st_out = lira.shadow_stats(data, 0)
  assert 5 < st_out["global_sigma"] / st_in["global_sigma"] < 20
  np.testing.assert_allclose(attacks.run("lira_offline_fixed_var", data, [0])[0],
                             _offline_fixed(data, 0), rtol=1e-9)
  online = _lira_reference(data, 0, "lira_online_fixed_var")
  np.testing.assert_allclose(attacks.run("lira_online_fixed_var", data, [0])[0], online,
                             rtol=1e-9)


def _offline_fixed(data, t):
  phi = _phi64(data.logits, data.labels[None, :, None])
  outs_of = _balanced(data, t, ~data.keep)
  res = []
  mus = np.zeros((data.num_examples, Q))
  for i in range(data.num_examples):
    for q in range(Q):
      vals = phi[outs_of[i], i, q]
      mus[i, q] = np.median(vals)
      res.extend(vals - mus[i, q])
  sigma = np.std(res)
  return stats.norm.logcdf(phi[t], mus, sigma + 1e-30).mean(-1)


def test_lira_without_in_or_out_shadows_is_finite():
  data = _data(seed=4)
  keep = data.keep.copy()
  keep[:, 0] = True    # example 0: no OUT shadow for any target
  keep[:, 1] = False   # example 1: no IN shadow
  keep[0, 2] = True    # example 2: IN only for model 0 ...
  keep[1:, 2] = False  # ... so target 0 has no IN shadow for it
  data = attacks.AttackData(logits=data.logits, labels=data.labels, keep=keep)
  for name in ("lira_online", "lira_online_fixed_var", "lira_offline", "lira_offline_logpdf"):
    assert np.all(np.isfinite(attacks.run(name, data, [0, 1]))), name


def test_lira_no_out_shadow_at_all_raises():
  data = _data()
  data = attacks.AttackData(logits=data.logits, labels=data.labels,
                            keep=np.ones((M, N), bool))
  with pytest.raises(ConfigError, match="OUT shadow"):
    attacks.run("lira_offline", data, [0])


# ------------------------------------------------------------------ step 2 attacks vs float64


@pytest.mark.parametrize("name, fn", [
    ("confidence", lambda p, py: py),
    ("entropy", lambda p, py: np.sum(p * np.log(p), -1)),
    ("modified_entropy", lambda p, py: (1 - py) * np.log(py) + np.sum(
        np.where(p == py[..., None], 0.0, p * np.log(1 - p)), -1)),
])
def test_threshold_attacks_match_numpy(name, fn):
  data = _data(seed=10)
  p = special.softmax(data.logits, axis=-1)
  py = np.take_along_axis(p, data.labels[None, :, None, None], -1)[..., 0]
  np.testing.assert_allclose(attacks.run(name, data, [1, 4]), fn(p, py)[[1, 4]].mean(-1),
                             rtol=1e-10, atol=1e-12)


def _rmia_reference(data, t, offline, a=0.3, gamma=2.0):
  """RMIA for target t with an explicit [N, Z] likelihood-ratio matrix."""
  def prob(logits, labels):
    p = special.softmax(np.asarray(logits, np.float64), axis=-1)
    return np.take_along_axis(p, labels[None, :, None, None], -1)[..., 0].mean(-1)  # [M, n]

  refs = [m for m in range(data.num_models) if m != t]
  px = prob(data.logits, data.labels)

  def prior(p, out_mask):
    if not offline:
      return p[refs].mean(0)
    mean_out = np.array([p[[m for m in refs if out_mask[m, i]], i].mean()
                         for i in range(p.shape[1])])
    return 0.5 * ((1 + a) * mean_out + (1 - a))

  rx = px[t] / prior(px, ~data.keep)
  if data.population_logits is not None:
    pz = prob(data.population_logits, data.population_labels)
    rz = pz[t] / prior(pz, np.ones(pz.shape, bool))
  else:
    rz = rx[~data.keep[t]]
  return np.mean(rx[:, None] / rz[None, :] >= gamma, axis=1)


@pytest.mark.parametrize("population", [0, 25])
@pytest.mark.parametrize("offline", [False, True])
def test_rmia_matches_reference(offline, population):
  data = _data(seed=11, m=8, population=population)
  name = "rmia_offline" if offline else "rmia_online"
  params = {"a": 0.4, "gamma": 1.5} if offline else {"gamma": 1.5}
  got = attacks.run(name, data, list(range(8)), **params)
  for t in range(8):
    np.testing.assert_allclose(got[t], _rmia_reference(data, t, offline, 0.4, 1.5), atol=1e-12)


def test_rmia_bad_params():
  with pytest.raises(ConfigError):
    attacks.run("rmia_offline", _data(), [0], a=1.5)


def test_tune_rmia_a():
  data = _data(seed=12, m=10, n=200, leak=2.0)
  grid = (0.0, 0.5, 1.0)
  best = attacks.tune_rmia_a(data, [1, 2, 3, 4, 5], grid=grid, num_pseudo_targets=2)
  sub = attacks.AttackData(logits=data.logits[1:6], labels=data.labels, keep=data.keep[1:6])
  aucs = [np.mean([_auc(attacks.run("rmia_offline", sub, [t], a=a)[0], sub.keep[t])
                   for t in (0, 1)]) for a in grid]
  assert best == grid[int(np.argmax(aucs))]
  with pytest.raises(ConfigError):
    attacks.tune_rmia_a(data, [1])


def test_shokri_features_match_numpy():
  rng = np.random.default_rng(13)
  z = rng.normal(scale=3.0, size=(7, Q, C))
  y = rng.integers(0, C, 7)
  p = special.softmax(z, axis=-1).mean(1)
  expected = np.log(-np.sort(-p, axis=-1))
  np.testing.assert_allclose(shokri.features(z, y), expected, rtol=1e-12)
  np.testing.assert_allclose(shokri.features(z, y, log_features=False, with_true_prob=True),
                             np.c_[np.exp(expected), p[np.arange(7), y]], rtol=1e-12)


def test_shokri_matches_direct_fit():
  # With max_train_per_class above the number of (shadow, example) pairs, every pair trains.
  data = _data(seed=14, m=6, n=60)
  t = 2
  got = attacks.run("shokri", data, [t], max_train_per_class=10_000)[0]
  shadows = [m for m in range(6) if m != t]
  for c in range(C):
    idx = np.nonzero(data.labels == c)[0]
    m, i = np.meshgrid(shadows, idx, indexing="ij")
    m, i = m.ravel(), i.ravel()
    p = special.softmax(data.logits[m, i], axis=-1).mean(1)
    x = np.log(-np.sort(-p, axis=-1))
    model = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                   linear_model.LogisticRegression(max_iter=1000, tol=1e-8))
    model.fit(x, data.keep[m, i])
    xt = np.log(-np.sort(-special.softmax(data.logits[t, idx], axis=-1).mean(1), axis=-1))
    np.testing.assert_allclose(got[idx], model.decision_function(xt), rtol=1e-3, atol=1e-3)


def test_shokri_mlp_and_bad_classifier():
  data = _data(seed=15, m=6, n=60)
  assert np.all(np.isfinite(attacks.run("shokri", data, [0], classifier="mlp")))
  with pytest.raises(ConfigError):
    attacks.run("shokri", data, [0], classifier="svm")


# ------------------------------------------------------------------ properties of all attacks

@pytest.mark.parametrize("name", sorted(set(attacks.names()) - {"lira_offline_logpdf"}))
def test_members_score_higher(name):
  data = _data(seed=5, m=16, n=200, leak=3.0)
  scores = attacks.run(name, data, [0, 1])
  for row, t in enumerate([0, 1]):
    assert _auc(scores[row], data.keep[t]) > 0.8


@pytest.mark.parametrize("name", attacks.names())
def test_target_is_never_its_own_shadow(name):
  # Flipping the target's own membership row must not change its scores.
  data = _data(seed=6, population=15)
  flipped = data.keep.copy()
  flipped[2] = ~flipped[2]
  other = attacks.AttackData(logits=data.logits, labels=data.labels, keep=flipped,
                             population_logits=data.population_logits,
                             population_labels=data.population_labels)
  np.testing.assert_allclose(attacks.run(name, data, [2]), attacks.run(name, other, [2]),
                             rtol=1e-9)  # LiRA's running sums differ in the last bits


def test_cache_gives_same_scores_as_fresh_data():
  data = _data(seed=7)
  first = attacks.run("lira_online", data, [1])
  attacks.run("lira_online", data, [0, 2, 3])
  fresh = _data(seed=7)
  np.testing.assert_array_equal(attacks.run("lira_online", data, [1]), first)
  np.testing.assert_array_equal(attacks.run("lira_online", fresh, [1]), first)


# ------------------------------------------------------------------ evaluate


def test_evaluate_attack_summary():
  data = _data(seed=8, m=8, n=100)
  summary, curves = attacks.evaluate_attack("loss", data, [0, 1, 2], bootstrap=20)
  scores = attacks.run("loss", data, [0, 1, 2])
  per = [metrics.evaluate(scores[r], data.keep[t]) for r, t in enumerate([0, 1, 2])]
  assert summary["auc"]["per_target"] == [p["auc"] for p in per]
  assert summary["auc"]["mean"] == pytest.approx(np.mean([p["auc"] for p in per]))
  assert summary["auc"]["std"] == pytest.approx(np.std([p["auc"] for p in per], ddof=1))
  assert set(summary["tpr_at_fpr"]) == {"0.01", "0.001", "0.0001", "0.0"}
  assert summary["tpr_at_fpr"]["0.01"]["per_target"] == [p["tpr_at_fpr"]["0.01"] for p in per]
  assert summary["nonmembers_at_fpr"]["0.01"]["per_target"] == [0, 0, 0]
  assert [r["target"] for r in summary["per_target"]] == [0, 1, 2]
  assert len(summary["auc_ci95"]) == 2 and "0.001" in summary["tpr_at_fpr_ci95"]
  assert "auc_ci95" in summary["per_target"][0]
  assert len(curves) == 3 and curves[0][0][-1] == 1.0
  json.dumps(summary)  # plain Python types only


def test_target_predictions_and_slices():
  data = _data(seed=16, n=60)
  preds = attacks.target_predictions(data, [1, 2])
  np.testing.assert_array_equal(preds[0], np.argmax(data.logits[1].sum(1), -1))
  scores = attacks.run("loss", data, [1])[0]
  out = metrics.evaluate_slices(scores, data.keep[1], data.labels, preds[0])
  assert set(out) == {"class", "correct", "incorrect"}


def test_evaluate_attacks():
  data = _data(seed=9)
  summaries, curves = attacks.evaluate_attacks(["loss", "lira_online"], data, [0, 1])
  assert set(summaries) == set(curves) == {"loss", "lira_online"}
  with pytest.raises(ConfigError):
    attacks.evaluate_attacks(["loss"], data, [0], {"nope": {}})


def test_lira_with_a_single_in_shadow_uses_the_global_sigma():
  """With 4 models every member of a target has one IN shadow, whose std is 0: a per-example
  Gaussian would be a spike and push members' scores to -inf (AUC near 0). The group's global
  sigma (or the OUT one) stands in, so a leaky set is still found."""
  data = _data(seed=3, m=4, n=400, leak=2.0)
  for name in ("lira_online", "lira_offline", "lira_offline_logpdf"):
    scores = attacks.run(name, data, [0, 1])
    assert np.isfinite(scores).all()
    for row, t in zip(scores, [0, 1]):
      assert _auc(row, data.keep[t]) > 0.6, name


def test_loss_keeps_precision_for_confident_examples():
  """float32 logsumexp(z) - z_y rounds to 0 once z_y leads by ~17; the loss must stay positive
  and ordered (ties at 0 would blind the loss attack at low FPR)."""
  gaps = np.array([18.0, 25.0, 40.0, 80.0], np.float32)
  z = np.zeros((4, 3), np.float32)
  z[:, 0] = gaps
  got = signals.loss(z, np.zeros(4, int))
  want = np.log1p(2 * np.exp(-gaps.astype(np.float64)))
  assert np.all(got > 0) and np.all(np.diff(got) < 0)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_confidence_attack_breaks_float32_ties_at_one():
  """Members and non-members whose float32 p_y is exactly 1.0 are still ranked by p_y."""
  m, n = 2, 6
  z = np.zeros((m, n, 1, 3), np.float32)
  z[..., 0] = np.array([20, 22, 24, 26, 28, 30], np.float32)[None, :, None]
  keep = np.array([[True, False] * 3, [False, True] * 3])
  data = attacks.AttackData(logits=z, labels=np.zeros(n, int), keep=keep)
  scores = attacks.run("confidence", data, [0])[0]
  assert np.all(np.diff(scores) > 0)
