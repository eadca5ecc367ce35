"""Tests for mia_jax.attacks against direct float64 numpy computations on tiny data."""

import doctest
import json

import numpy as np
import pytest
from scipy import special, stats
from sklearn import linear_model, pipeline, preprocessing

from mia_jax import attacks, metrics
from mia_jax.attacks import lira, references, rmia, scaling, shokri, signals
from mia_jax.errors import ConfigError

M, N, Q, C = 6, 20, 2, 3


def _keep(rng, m, n):
  """Every example IN for exactly half the models (LiRA's design)."""
  return np.argsort(rng.random((m, n)), axis=0) < m // 2


def _data(seed=0, m=M, n=N, leak=1.0, dtype=np.float64, population=0, features=False):
  """Synthetic logits [m, n, Q, C]: the true class gets a boost, larger when IN. With
  `features` (needs a population), features [n, 2] / [population, 2]: the difficulty plus
  noise, and a noise column, from a generator of their own (the logits stay the same)."""
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
    pop_hard = rng.normal(size=population)
    extra = {"population_logits": logits(plab, 1.0 + pop_hard + np.zeros((m, 1))),
             "population_labels": plab}
    if features:
      noise = np.random.default_rng([seed, 1])
      draw = lambda d: np.stack([d + 0.1 * noise.normal(size=d.size),
                                 noise.normal(size=d.size)], axis=1)
      extra.update(features=draw(hard), population_features=draw(pop_hard))
  return attacks.AttackData(logits=z, labels=labels, keep=keep, **extra)


# what an attack needs beyond the pool's outputs, by name
NEEDS = {"quantile_regression": {"population": 400, "features": True}}


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


def _refs_of(data, t):
  """Per example, the IN and OUT shadows (model lists) the attacks use for target t:
  _balanced with every other model; with data.num_references = K < M - 1, references.select's
  per-example draws (their own properties are tested below)."""
  if data.num_references is None or data.num_references >= data.num_models - 1:
    return _balanced(data, t, data.keep), _balanced(data, t, ~data.keep)
  refs = references.select(data.keep, t, data.num_references, data.reference_seed)
  lists = lambda mask: [list(np.nonzero(mask[:, i])[0]) for i in range(data.num_examples)]
  return lists(refs.inside), lists(refs.outside)


def _lira_reference(data, t, kind, sigma="residual"):
  """LiRA for target t, one example and query at a time, as the reference code.

  sigma="total" (fixed variance): the reference code's np.std(dat_in) over every (example,
  shadow, query) value of the group, around the grand mean (OUT from the OUT values)."""
  phi = _phi64(data.logits, data.labels[None, :, None])
  ins_of, outs_of = _refs_of(data, t)
  center = (lambda vals: np.median(vals)) if sigma == "residual" else (lambda vals: 0.0)
  res_in = [phi[m, i, q] - center([phi[k, i, q] for k in ins_of[i]])
            for i in range(data.num_examples) for q in range(Q) for m in ins_of[i]]
  res_out = [phi[m, i, q] - center([phi[k, i, q] for k in outs_of[i]])
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


@pytest.mark.parametrize("num_references", [4, 5])
@pytest.mark.parametrize("kind", ["lira_online", "lira_online_fixed_var", "lira_offline",
                                  "lira_offline_fixed_var", "lira_offline_logpdf"])
def test_lira_with_drawn_references_matches_reference(kind, num_references):
  """K references per example (the scaling curve's path: gathered and sorted per target)."""
  data = _data(seed=17, m=8).with_references(num_references, seed=3)
  got = attacks.run(kind, data, [0, 5])
  for row, t in enumerate([0, 5]):
    np.testing.assert_allclose(got[row], _lira_reference(data, t, kind), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["lira_online_fixed_var", "lira_offline_fixed_var"])
def test_lira_fixed_var_total_sigma_is_the_reference_codes(kind):
  data = _data(seed=18)
  got = attacks.run(kind, data, [1, 4], sigma="total")
  for row, t in enumerate([1, 4]):
    np.testing.assert_allclose(got[row], _lira_reference(data, t, kind, sigma="total"),
                               rtol=1e-9, atol=1e-9)
  # The total std holds the spread of the medians between examples (difficulty): wider.
  _, st_in, st_out = lira.shadow_stats(data, 1)
  assert st_in["total_sigma"] > 1.2 * st_in["global_sigma"]
  assert st_out["total_sigma"] > 1.2 * st_out["global_sigma"]
  with pytest.raises(ConfigError, match="sigma"):
    attacks.run(kind, data, [0], sigma="pooled")


def test_lira_sorted_tables_equal_the_gathered_path():
  """Every other model as references: the once-sorted tables, with the target and the surplus
  shadow left out by index arithmetic, give the stats of gathering and sorting the same
  references (the drawn path), on an exact design and on independent draws."""
  exact = _data(seed=19, m=10, n=50)
  rng = np.random.default_rng(19)
  loose = attacks.AttackData(logits=exact.logits, labels=exact.labels,
                             keep=rng.random(exact.keep.shape) < 0.5)
  for data in (exact, loose):
    for t in (0, 7):
      refs = references.select(data.keep, t)
      fast = lira._all_models_stats(data, t, refs)
      slow = lira._drawn_stats(data, t, references.References(inside=refs.inside,
                                                             outside=refs.outside))
      for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a["k"], b["k"])
        for key in ("mu", "sigma", "r1", "r2", "t1", "t2"):
          np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_rmia_group_totals_equal_the_gathered_means():
  """RMIA's every-other-model path (group totals less the target and the surplus shadow)
  gives the means over the same references gathered one by one."""
  data = _data(seed=26, m=10, n=50)
  p = rmia._probs(data, False)
  totals = rmia._totals(p, data.keep)
  for t in (0, 9):
    refs = references.select(data.keep, t)
    fast = rmia._ref_means(p, t, data.keep[t], refs, totals)
    slow = rmia._ref_means(p, t, data.keep[t], references.References(
        inside=refs.inside, outside=refs.outside), None)
    for a, b in zip(fast, slow):
      np.testing.assert_allclose(a, b, rtol=1e-12)
    ins_of, outs_of = _balanced(data, t, data.keep), _balanced(data, t, ~data.keep)
    np.testing.assert_allclose(fast[0], [p[ins_of[i], i].mean() for i in range(50)],
                               rtol=1e-12)
    np.testing.assert_allclose(fast[2], [p[outs_of[i], i].mean() for i in range(50)],
                               rtol=1e-12)


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
  """RMIA for target t with an explicit [N, Z] likelihood-ratio matrix, one example at a time.

  The references of a pool example are those of _balanced (every example keeps the same
  number of IN and of OUT shadows, as Privacy Meter keeps num_reference_models OUT signals
  per example). Online, Pr(x) = (mean_IN + mean_OUT) / 2, Privacy Meter's definition: the
  plain mean over all other models that this test used to check gave a member of the target
  one IN reference fewer than a non-member, which alone ranks members higher
  (tests/test_null.py). Population examples are OUT for every other model."""
  def prob(logits, labels):
    p = special.softmax(np.asarray(logits, np.float64), axis=-1)
    return np.take_along_axis(p, labels[None, :, None, None], -1)[..., 0].mean(-1)  # [M, n]

  px = prob(data.logits, data.labels)
  ins_of, outs_of = _refs_of(data, t)
  mean_in = np.array([px[ins_of[i], i].mean() for i in range(data.num_examples)])
  mean_out = np.array([px[outs_of[i], i].mean() for i in range(data.num_examples)])
  prior = (0.5 * ((1 + a) * mean_out + (1 - a)) if offline
           else 0.5 * (mean_in + mean_out))
  rx = px[t] / prior
  if data.population_logits is not None:
    pz = prob(data.population_logits, data.population_labels)
    refs_z = references.population(data.num_models, pz.shape[1], t, data.num_references,
                                   data.reference_seed)
    mean_z = np.array([pz[refs_z[:, j], j].mean() for j in range(pz.shape[1])])
    rz = pz[t] / (0.5 * ((1 + a) * mean_z + (1 - a)) if offline else mean_z)
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


@pytest.mark.parametrize("offline", [False, True])
def test_rmia_with_drawn_references_matches_reference(offline):
  data = _data(seed=21, m=8, population=25).with_references(4, seed=2)
  name = "rmia_offline" if offline else "rmia_online"
  got = attacks.run(name, data, [0, 6], **({"a": 0.4} if offline else {}))
  for row, t in enumerate([0, 6]):
    np.testing.assert_allclose(got[row], _rmia_reference(data, t, offline, 0.4), atol=1e-12)


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


@pytest.mark.parametrize("num_references", [None, 2])
def test_shokri_matches_direct_fit(num_references):
  # With max_train_per_class above the number of (shadow, example) pairs, every pair trains:
  # each example's IN and OUT references (_refs_of), the same count for every example.
  data = _data(seed=14, m=6, n=60).with_references(num_references)
  t = 2
  got = attacks.run("shokri", data, [t], max_train_per_class=10_000)[0]
  ins_of, outs_of = _refs_of(data, t)
  for c in range(C):
    idx = np.nonzero(data.labels == c)[0]
    pairs = [(m, i) for i in idx for m in ins_of[i] + outs_of[i]]
    m, i = np.array(pairs).T
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


# ------------------------------------------------------------------ references


@pytest.mark.parametrize("size", [None, 2, 3, 4, 6, 7])
def test_references_composition_does_not_depend_on_the_target(size):
  rng = np.random.default_rng(20)
  m, n = 8, 400
  keep = _keep(rng, m, n)
  for t in (0, 5):
    refs = references.select(keep, t, size, seed=1)
    assert not refs.inside[t].any() and not refs.outside[t].any()
    assert not (refs.inside & ~keep).any() and not (refs.outside & keep).any()
    k_in, k_out = refs.inside.sum(0), refs.outside.sum(0)
    if size is None or size >= m - 1:    # every other model, truncated to the smallest count
      assert (k_in == m // 2 - 1).all() and (k_out == m // 2 - 1).all()
      assert not refs.drawn
    elif size % 2 == 0:
      assert (k_in == size // 2).all() and (k_out == size // 2).all() and refs.drawn
    else:                                # the extra reference IN or OUT by a fair coin
      assert (k_in + k_out == size).all() and set(k_in) == {size // 2, size // 2 + 1}
      member = keep[t]
      assert abs(k_in[member].mean() - k_in[~member].mean()) < 0.15
    flipped = keep.copy()
    flipped[t] = ~flipped[t]             # the target's own row is never read
    other = references.select(flipped, t, size, seed=1)
    np.testing.assert_array_equal(other.inside, refs.inside)
    np.testing.assert_array_equal(other.outside, refs.outside)


def test_drawn_references_are_uniform_and_seeded():
  rng = np.random.default_rng(22)
  m, n, size = 10, 4000, 4
  keep = _keep(rng, m, n)
  refs = references.select(keep, 3, size, seed=5)
  np.testing.assert_array_equal(references.select(keep, 3, size, seed=5).inside, refs.inside)
  assert (references.select(keep, 3, size, seed=6).inside != refs.inside).any()
  assert (references.select(keep, 4, size, seed=5).inside != refs.inside).any()
  # Each IN shadow of example i is drawn with probability (size / 2) / (its IN count).
  shadows = np.delete(keep, 3, axis=0)
  expected = np.where(shadows, (size // 2) / shadows.sum(0), 0.0)
  got = np.delete(refs.inside, 3, axis=0)
  for count in np.unique(shadows.sum(0)):
    cols = shadows.sum(0) == count
    rate = got[:, cols].sum() / shadows[:, cols].sum()
    assert abs(rate - expected[:, cols].max()) < 0.02, count


def test_drawn_references_keep_what_an_example_has():
  """Keep rows drawn independently: an example with fewer IN shadows than size / 2 keeps all."""
  rng = np.random.default_rng(23)
  keep = rng.random((9, 300)) < 0.3
  refs = references.select(keep, 0, 6, seed=0)
  have_in, have_out = keep[1:].sum(0), (~keep[1:]).sum(0)
  np.testing.assert_array_equal(refs.inside.sum(0), np.minimum(have_in, 3))
  np.testing.assert_array_equal(refs.outside.sum(0), np.minimum(have_out, 3))


def test_population_references_and_compact():
  pop = references.population(7, 50, 2, None)
  assert not pop[2].any() and pop[[0, 1, 3, 4, 5, 6]].all()
  pop = references.population(7, 50, 2, 3, seed=4)
  assert not pop[2].any() and (pop.sum(0) == 3).all()
  idx, valid = references.compact(pop)
  rebuilt = np.zeros_like(pop)
  rebuilt[idx[valid], np.broadcast_to(np.arange(50), idx.shape)[valid]] = True
  np.testing.assert_array_equal(rebuilt, pop)
  assert (np.diff(idx, axis=0) > 0).all()          # each column's models in index order
  with pytest.raises(ConfigError):
    references.select(np.ones((4, 5), bool), 0, 0)


@pytest.mark.parametrize("size", [None, 4])
def test_sample_pairs_draws_from_the_references_only(size):
  rng = np.random.default_rng(27)
  keep = _keep(rng, 8, 60)
  refs = references.select(keep, 2, size, seed=1)
  examples = np.arange(5, 45, 2)
  pool = {(m, i) for i in examples for m in np.nonzero(refs.inside[:, i] | refs.outside[:, i])[0]}
  m, i = references.sample_pairs(refs, 2, examples, 10_000, np.random.default_rng(0))
  assert len(m) == len(pool) and set(zip(m.tolist(), i.tolist())) == pool   # all of them
  m, i = references.sample_pairs(refs, 2, examples, 30, np.random.default_rng(0))
  pairs = set(zip(m.tolist(), i.tolist()))
  assert len(pairs) == 30 and pairs <= pool                                  # no repeats
  # uniform over the pool: every pair about equally often over many draws
  hits = {}
  for seed in range(300):
    m, i = references.sample_pairs(refs, 2, examples, 30, np.random.default_rng(seed))
    for pair in zip(m.tolist(), i.tolist()):
      hits[pair] = hits.get(pair, 0) + 1
  expected = 300 * 30 / len(pool)
  assert set(hits) == pool and max(abs(v - expected) for v in hits.values()) < 5 * expected**0.5


def test_attack_data_with_references():
  data = _data(seed=24)
  phi = data.signal("scaled_logit")
  view = data.with_references(3, seed=2)
  assert view.num_references == 3 and view.reference_seed == 2 and data.num_references is None
  assert view.signal("scaled_logit") is phi          # shared, not recomputed
  with pytest.raises(ConfigError, match="num_references"):
    attacks.AttackData(logits=data.logits, labels=data.labels, keep=data.keep,
                       num_references=0)


def test_shadow_scaling_runs_the_shadow_attacks_on_the_drawn_view():
  data = _data(seed=25, m=8, n=200, leak=2.0)
  curve = scaling.shadow_scaling(data, ["loss", "lira_online", "rmia_online"], [1, 2],
                                 sizes=[2, 4, 7], seed=3)
  assert set(curve["attacks"]) == {"lira_online", "rmia_online"}   # loss reads no shadows
  for name in curve["attacks"]:
    for point in curve["attacks"][name]:
      view = scaling.view(data, point["num_shadows"], 3)
      scores = attacks.run(name, view, [1, 2])
      assert point["auc"]["per_target"] == [_auc(scores[0], data.keep[1]),
                                            _auc(scores[1], data.keep[2])]


def test_register_declares_whether_an_attack_reads_shadows():
  assert attacks.reads_shadows("lira_online") and not attacks.reads_shadows("loss")
  assert {n for n in attacks.names() if attacks.reads_shadows(n)} == {
      n for n in attacks.names() if n.startswith(("lira_", "rmia_", "shokri"))}
  with pytest.raises(TypeError):
    attacks.register("mine", attacks.get("loss"))    # reads_shadows must be said
  try:
    attacks.register("mine", attacks.get("loss"), reads_shadows=True)
    assert attacks.reads_shadows("mine")
  finally:
    attacks.ATTACKS.pop("mine", None)
    attacks.registry.SHADOW_BASED.discard("mine")
  with pytest.raises(ConfigError):
    attacks.reads_shadows("mine")


# ------------------------------------------------------------------ properties of all attacks

@pytest.mark.parametrize("name", sorted(set(attacks.names()) - {"lira_offline_logpdf"}))
def test_members_score_higher(name):
  data = _data(seed=5, m=16, n=200, leak=3.0, **NEEDS.get(name, {}))
  scores = attacks.run(name, data, [0, 1])
  for row, t in enumerate([0, 1]):
    assert _auc(scores[row], data.keep[t]) > 0.8


@pytest.mark.parametrize("name", attacks.names())
def test_target_is_never_its_own_shadow(name):
  # Flipping the target's own membership row must not change its scores.
  data = _data(seed=6, population=15, features=True)
  flipped = data.keep.copy()
  flipped[2] = ~flipped[2]
  other = attacks.AttackData(logits=data.logits, labels=data.labels, keep=flipped,
                             population_logits=data.population_logits,
                             population_labels=data.population_labels,
                             features=data.features,
                             population_features=data.population_features)
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


# ------------------------------------------------------------------ array-level functions


def _others_arrays(data, t):
  """The registry's every-other-model references of target t as arrays: (shadow rows [K],
  shadow_in [K, N], mask [K, N])."""
  refs = references.select(data.keep, t)
  rows = np.delete(np.arange(data.num_models), t)
  return rows, data.keep[rows], (refs.inside | refs.outside)[rows]


@pytest.mark.parametrize("variant", lira.VARIANTS)
def test_lira_score_equals_the_registry(variant):
  """lira.score on the target's references as arrays gives the registry's scores: every
  other model (exact design, the surplus shadow masked out; independent draws) and drawn
  references (gathered per example)."""
  exact = _data(seed=40, m=10, n=60)
  rng = np.random.default_rng(40)
  loose = attacks.AttackData(logits=exact.logits, labels=exact.labels,
                             keep=rng.random(exact.keep.shape) < 0.5)
  for data in (exact, loose):
    phi = data.signal("scaled_logit")
    for t in (0, 7):
      rows, shadow_in, mask = _others_arrays(data, t)
      got = lira.score(phi[t], phi[rows], shadow_in, variant=variant, mask=mask)
      np.testing.assert_allclose(got, attacks.run("lira_" + variant, data, [t])[0],
                                 rtol=1e-9, atol=1e-9)
  drawn = exact.with_references(4, seed=1)
  phi, cols = drawn.signal("scaled_logit"), np.arange(drawn.num_examples)
  refs = references.for_target(drawn, 3)
  (idx_in, ok_in), (idx_out, ok_out) = refs.models(True), refs.models(False)
  shadows = np.concatenate([phi[idx_in, cols], phi[idx_out, cols]])          # [W, N, Q]
  shadow_in = np.concatenate([np.ones_like(ok_in), np.zeros_like(ok_out)])
  got = lira.score(phi[3], shadows, shadow_in, variant=variant,
                   mask=np.concatenate([ok_in, ok_out]))
  np.testing.assert_array_equal(got, attacks.run("lira_" + variant, drawn, [3])[0])


def test_lira_score_matches_float64_formulas():
  """On tiny data with >= 2 IN and >= 2 OUT shadows per example, each variant is its
  formula: medians, np.std (ddof 0), the Gaussians, worked example by example."""
  rng = np.random.default_rng(41)
  k, n, q = 7, 6, 2
  shadow_in = np.argsort(rng.random((k, n)), axis=0) < 3          # 3 IN, 4 OUT per example
  shadows = rng.normal(size=(k, n, q)) + 2.0 * shadow_in[..., None]
  target = rng.normal(size=(n, q)) + 1.0
  norm = stats.norm
  mu = {g: np.array([[np.median(shadows[sel[:, i], i, j]) for j in range(q)]
                     for i in range(n)]) for g, sel in (("in", shadow_in), ("out", ~shadow_in))}
  sd = {g: np.array([[np.std(shadows[sel[:, i], i, j]) for j in range(q)] for i in range(n)])
        for g, sel in (("in", shadow_in), ("out", ~shadow_in))}
  glob = {g: np.std(np.concatenate([shadows[sel[:, i], i] - mu[g][i] for i in range(n)]))
          for g, sel in (("in", shadow_in), ("out", ~shadow_in))}
  expected = {
      "online": np.mean(norm.logpdf(target, mu["in"], sd["in"])
                        - norm.logpdf(target, mu["out"], sd["out"]), axis=1),
      "online_fixed_var": np.mean(norm.logpdf(target, mu["in"], glob["in"])
                                  - norm.logpdf(target, mu["out"], glob["out"]), axis=1),
      "offline": np.mean(norm.logcdf(target, mu["out"], sd["out"]), axis=1),
      "offline_fixed_var": np.mean(norm.logcdf(target, mu["out"], glob["out"]), axis=1),
      "offline_logpdf": -np.mean(norm.logpdf(target, mu["out"], sd["out"]), axis=1),
  }
  for variant, want in expected.items():
    np.testing.assert_allclose(lira.score(target, shadows, shadow_in, variant=variant), want,
                               rtol=1e-10, err_msg=variant)
  fit_in, fit_out = lira.fit(shadows, shadow_in)
  np.testing.assert_allclose(fit_in["mu"], mu["in"], rtol=1e-12)
  np.testing.assert_allclose(fit_out["sigma"], sd["out"], rtol=1e-12)
  np.testing.assert_array_equal(fit_in["k"], np.full(n, 3))


def test_lira_score_is_at_chance_without_signal():
  """A target whose signal is drawn apart from its membership scores AUC 0.5 (+- 3 standard
  errors) against shadows that memorise; a target that memorises scores far above."""
  rng = np.random.default_rng(42)
  k, n = 16, 4000
  shadow_in = np.argsort(rng.random((k, n)), axis=0) < k // 2
  difficulty = rng.normal(size=n)
  shadows = (difficulty + 2.0 * shadow_in + rng.normal(size=(k, n)))[..., None]  # [K, N, 1]
  member = rng.random(n) < 0.5
  null = difficulty + 2.0 * (rng.random(n) < 0.5) + rng.normal(size=n)
  leaky = difficulty + 2.0 * member + rng.normal(size=n)
  se = np.sqrt((n + 1) / (12 * member.sum() * (~member).sum()))
  auc = lambda target: _auc(lira.score(target[:, None], shadows, shadow_in), member)
  assert abs(auc(null) - 0.5) < 3 * se
  assert auc(leaky) > 0.8


@pytest.mark.parametrize("offline", [False, True])
def test_rmia_score_equals_the_registry(offline):
  """rmia.score on the references as arrays gives the registry's scores, with population z
  samples and with the target's pool non-members as z, for every other model and drawn."""
  base = _data(seed=43, m=8, n=60, population=30)
  pool_only = attacks.AttackData(logits=base.logits, labels=base.labels, keep=base.keep)
  params = {"a": 0.4} if offline else {}
  name = "rmia_offline" if offline else "rmia_online"
  for data in (base, pool_only):
    p = rmia.probability(data.logits, data.labels)                           # [M, N]
    for t in (0, 5):
      rows, reference_in, mask = _others_arrays(data, t)
      if data.population_logits is None:
        z = {"z_pool": ~data.keep[t]}
      else:
        pz = rmia.probability(data.population_logits, data.population_labels)
        z = {"z_target_prob": pz[t], "z_reference_prob": pz[rows]}
      got = rmia.score(p[t], p[rows], reference_in, offline=offline, mask=mask, **z, **params)
      np.testing.assert_allclose(got, attacks.run(name, data, [t], **params)[0], atol=1e-12)
  drawn = pool_only.with_references(4, seed=2)
  p = rmia.probability(drawn.logits, drawn.labels)
  refs = references.for_target(drawn, 2)
  got = rmia.score(p[2], p, drawn.keep, offline=offline, mask=refs.inside | refs.outside,
                   z_pool=~drawn.keep[2], **params)
  np.testing.assert_allclose(got, attacks.run(name, drawn, [2], **params)[0], atol=1e-12)


def test_rmia_score_matches_float64_formulas():
  """The likelihood ratio of every (x, z) pair worked as an [N, Z] matrix in float64."""
  rng = np.random.default_rng(44)
  k, n, z = 6, 9, 5
  reference_in = np.argsort(rng.random((k, n)), axis=0) < 3
  reference_prob = rng.uniform(0.05, 0.95, (k, n))
  target_prob = rng.uniform(0.05, 0.95, n)
  z_reference, z_target = rng.uniform(0.05, 0.95, (k, z)), rng.uniform(0.05, 0.95, z)
  for offline, a in ((False, 0.0), (True, 0.3)):
    mean_in = np.array([reference_prob[reference_in[:, i], i].mean() for i in range(n)])
    mean_out = np.array([reference_prob[~reference_in[:, i], i].mean() for i in range(n)])
    if offline:
      prior_x = 0.5 * ((1 + a) * mean_out + 1 - a)
      prior_z = 0.5 * ((1 + a) * z_reference.mean(axis=0) + 1 - a)
    else:
      prior_x, prior_z = 0.5 * (mean_in + mean_out), z_reference.mean(axis=0)
    ratio = (target_prob / prior_x)[:, None] / (z_target / prior_z)[None, :]   # [N, Z]
    want = np.mean(ratio >= 2.0, axis=1)
    got = rmia.score(target_prob, reference_prob, reference_in, z_target_prob=z_target,
                     z_reference_prob=z_reference, offline=offline, a=a)
    np.testing.assert_array_equal(got, want)


def test_threshold_score_equals_the_registry():
  data = _data(seed=45, population=0)
  for name in ("loss", "confidence", "entropy", "modified_entropy"):
    got = attacks.threshold.score(data.logits[2], data.labels, name)
    np.testing.assert_array_equal(got, attacks.run(name, data, [2])[0])


def test_array_functions_reject_bad_shapes():
  rng = np.random.default_rng(46)
  shadows, shadow_in = rng.normal(size=(4, 10, 1)), rng.random((4, 10)) < 0.5
  with pytest.raises(ConfigError, match="target_signal"):
    lira.score(rng.normal(size=10), shadows, shadow_in)
  with pytest.raises(ConfigError, match="shadow_in"):
    lira.score(rng.normal(size=(10, 1)), shadows, shadow_in.astype(int))
  with pytest.raises(ConfigError, match="K >= 1"):
    lira.score(rng.normal(size=(10, 1)), shadows[:0], shadow_in[:0])
  with pytest.raises(ConfigError, match="K >= 1"):
    rmia.score(rng.random(10), rng.random((0, 10)), shadow_in[:0], z_pool=shadow_in[0])
  with pytest.raises(ConfigError, match="variant"):
    lira.score(rng.normal(size=(10, 1)), shadows, shadow_in, variant="online_fixed")
  with pytest.raises(ConfigError, match="z samples"):
    rmia.score(rng.random(10), rng.random((4, 10)), shadow_in)
  with pytest.raises(ConfigError, match="reference_in"):
    rmia.score(rng.random(10), rng.random((4, 10)), shadow_in[:3], z_pool=shadow_in[0])
  with pytest.raises(ConfigError, match="signal"):
    attacks.threshold.score(rng.normal(size=(10, 1, 3)), np.zeros(10, int), "margin")


@pytest.mark.parametrize("module", [lira, rmia, attacks.threshold, shokri],
                         ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
  result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
