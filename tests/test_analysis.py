"""Vulnerability, per-example leakage, outlier scores, features, t-SNE and Grad-CAM on
synthetic data: against formulas worked in float64, slower reference paths, and the null."""

import jax
import numpy as np
import optax
import pytest
from scipy import stats as sps

from mia_jax import stats as mstats
from mia_jax.analysis import embeddings, gradcam, leakage, leakage_report, outliers, plots
from mia_jax.analysis import study, vulnerability
from mia_jax.data import membership
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


def test_group_statistics():
  rng = np.random.default_rng(0)
  score = rng.normal(0, 1, 400)
  group = np.zeros(400, bool)
  group[np.argsort(score)[-40:]] = True
  c = vulnerability.compare_groups(score, group)
  assert c["cliffs_delta"] == pytest.approx(1.0) and c["p_value"] < 1e-10
  strata = np.arange(400) % 4
  top = vulnerability.top_within(score, strata, 0.1)
  dec = vulnerability.decile_within(score, strata)
  for s in range(4):
    sel = strata == s
    assert top[sel].sum() == 10 and (score[sel & top].min() > score[sel & ~top].max())
    assert np.array_equal(np.bincount(dec[sel]), np.full(10, 10))
  assert np.array_equal(top, dec == 9)


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


# ---- chance, per-example leakage, permutation tests, the leakage study ----------------------

def test_chance_flags_follow_the_negative_hypergeometric():
  # exchangeable scores: members above the (k+1)-th non-member, simulated in float64
  rng = np.random.default_rng(0)
  nm, nn, alpha = 300, 200, 0.02
  is_member = np.arange(nm + nn) < nm
  counts, precisions = [], []
  for _ in range(4000):
    s = rng.random(nm + nn)
    v, t = vulnerability.vulnerable_members(s, is_member, alpha)
    counts.append(v.sum())
    precisions.append(v.sum() / (v.sum() + np.sum(s[~is_member] > t)))
  counts = np.array(counts)
  r = vulnerability.flag_precision(10, 4, nm, nn, alpha)
  k = int(np.floor(alpha * nn))
  assert r["chance_members"] == pytest.approx(nm * (k + 1) / (nn + 1))
  assert counts.mean() == pytest.approx(r["chance_members"], rel=0.03)
  assert r["chance_members"] > alpha * nm * 1.2          # not alpha * n_in: the (k+1)-th
  assert np.mean(counts >= 10) == pytest.approx(r["p_value"], abs=0.02)
  assert np.mean(precisions) == pytest.approx(r["base_rate"], abs=0.01)   # E[J/(J+k)] = base
  assert r["precision"] == pytest.approx(10 / 14)
  assert r["precision_interval"] == pytest.approx(list(mstats.clopper_pearson(10, 14)))


def test_example_leakage_against_fisher_and_clopper_pearson():
  rng = np.random.default_rng(1)
  keep = membership.keep_matrix(0, 12, 30, 0.5)
  flags = rng.random((12, 30)) < np.where(keep, 0.6, 0.2)
  r = vulnerability.example_leakage(flags, keep)
  for i in range(30):
    a, b = int((flags[:, i] & keep[:, i]).sum()), int((flags[:, i] & ~keep[:, i]).sum())
    n_in, n_out = int(keep[:, i].sum()), int((~keep[:, i]).sum())
    assert r["leakage"][i] == pytest.approx(a / n_in - b / n_out)
    p = sps.fisher_exact([[a, n_in - a], [b, n_out - b]], alternative="greater").pvalue
    assert r["p_value"][i] == pytest.approx(p, rel=1e-9, abs=1e-12)
    lo_in, hi_in = mstats.clopper_pearson(a, n_in, 0.975)
    lo_out, hi_out = mstats.clopper_pearson(b, n_out, 0.975)
    assert r["lo"][i] == pytest.approx(lo_in - hi_out) and r["hi"][i] == pytest.approx(
        hi_in - lo_out)
    assert r["lo"][i] <= r["leakage"][i] <= r["hi"][i]


def _scores(seed, n=1500, t=16, classes=3, delta=0.0, loud=0.0, planted=0.05):
  """Synthetic attack scores [T, N]: N(0, 1), times 1 + loud for the planted outliers (flagged
  more often IN and OUT alike), plus delta when a target trained on a planted outlier."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  outlier = rng.normal(size=n)
  keep = membership.keep_matrix(seed, t, n, 0.5)
  planted_mask = np.zeros(n, bool)
  for c in range(classes):
    idx = np.flatnonzero(labels == c)
    planted_mask[idx[np.argsort(-outlier[idx])[:int(planted * len(idx))]]] = True
  s = rng.normal(size=(t, n)) * (1 + loud * planted_mask) + delta * keep * planted_mask
  return s, keep, labels, {"centroid_distance": outlier, "ref_error": rng.normal(size=n)}


def test_leave_one_out_flags_remove_the_self_threshold_bias():
  # no leak. With the plain rule a non-member competes with itself for the k slots above the
  # threshold, a member does not: P(flag | IN) = (k+1)/(m+1) against k/(m+1) OUT, double at
  # k = 1. The leave-one-out rule judges both against the other non-members.
  s, keep, _, _ = _scores(0, n=2000, t=64)
  alpha = 1.5 / 1000                                     # k = 1 of the 1,000 non-members
  ratios = {}
  for loo in (False, True):
    f = vulnerability.flag_matrix(s, keep, alpha, leave_one_out=loo)
    r = vulnerability.example_leakage(f, keep)
    ratios[loo] = np.nansum(r["flagged_in"]) / np.nansum(r["flagged_out"])
    assert np.array_equal((f & ~keep).sum(1), np.full(64, 2 if loo else 1))
  assert ratios[False] > 1.6
  assert 0.75 < ratios[True] < 1.3


def _slow_permutation_p(v, cov, strata, num, seed, stat):
  """The studentized statistics recomputed permutation by permutation (pooled)."""
  rng = np.random.default_rng(seed)

  def pooled(vals):
    num_, var_ = 0.0, 0.0
    for c in np.unique(strata):
      sel = strata == c
      a, b = vals[sel], cov[sel]
      x = (sps.rankdata(a) - sps.rankdata(a).mean()) / sps.rankdata(a).std()
      if stat == "rho":
        y = (sps.rankdata(b) - sps.rankdata(b).mean()) / sps.rankdata(b).std()
      else:   # the top decile's indicator: a studentized rank-sum statistic
        g = (sps.rankdata(b, method="ordinal") > len(b) * 0.9).astype(float)
        y = (g - g.mean()) / g.std()
      num_, var_ = num_ + (x * y).sum(), var_ + (x * x * y * y).sum()
    return num_ / np.sqrt(var_)

  obs = abs(pooled(v))
  hits = 0
  for _ in range(num):
    perm = v.copy()
    for c in np.unique(strata):
      idx = np.flatnonzero(strata == c)
      perm[idx] = v[rng.permutation(idx)]
    hits += abs(pooled(perm)) >= obs * (1 - 1e-12)
  return (1 + hits) / (1 + num)


def test_permutation_tests_against_formulas_and_a_slow_path():
  rng = np.random.default_rng(3)
  n = 240
  strata = np.arange(n) % 2
  cov = rng.normal(size=n)
  v = (rng.binomial(8, 0.1 + 0.04 * (cov > 0.5), n) - rng.binomial(8, 0.1, n)) / 8
  r = vulnerability.permutation_tests(v, {"c": cov}, strata, num=1500, seed=0)["c"]
  for c in (0, 1):
    sel = strata == c
    e = r["per_stratum"][str(c)]
    assert e["rho"] == pytest.approx(sps.spearmanr(v[sel], cov[sel]).statistic)
    g = sps.rankdata(cov[sel], method="ordinal") > sel.sum() * 0.9
    assert e["difference"] == pytest.approx(v[sel][g].mean() - v[sel][~g].mean())
    welch = sps.ttest_ind(v[sel][g], v[sel][~g], equal_var=False).statistic
    se = (e["interval"][1] - e["interval"][0]) / (2 * sps.norm.ppf(0.975))
    assert e["difference"] / se == pytest.approx(welch)
    assert e["rho_interval"][0] <= e["rho"] <= e["rho_interval"][1]
  pooled = r["pooled"]
  assert pooled["rho_interval"][0] <= pooled["rho"] <= pooled["rho_interval"][1]
  for stat, key in (("rho", "rho_p_value"), ("difference", "p_value")):
    slow = _slow_permutation_p(v, cov, strata, 1500, 1, stat)
    assert pooled[key] == pytest.approx(slow, abs=0.035), stat


def test_permutation_tests_hold_their_level_for_sparse_heteroscedastic_values():
  # leakage-like values: mostly 0, a few +-1/16, spread larger for high covariates, mean 0
  rng = np.random.default_rng(4)
  p = []
  for d in range(150):
    n = 600
    strata = rng.integers(0, 3, n)
    cov = rng.normal(size=n)
    rate = np.where(cov > 1.2, 0.08, 0.01)
    v = (rng.binomial(16, rate) - rng.binomial(16, rate)) / 16
    r = vulnerability.permutation_tests(v, {"c": cov}, strata, num=400, seed=d)["c"]
    p += [r["pooled"]["rho_p_value"], r["pooled"]["p_value"]]
  assert 0.015 <= np.mean(np.array(p) <= 0.05) <= 0.085


def test_study_finds_planted_leaking_outliers():
  s, keep, labels, out = _scores(5, t=32, delta=3.0, loud=1.0)
  res, per_example = leakage.study({"lira": s}, keep, labels, out, alphas=(0.01,),
                                   num_permutations=3000)
  r = res["attacks"]["lira"]["0.01"]
  prec = r["precision"]
  assert prec["precision"]["interval"][0] > prec["base_rate"] and prec["p_holm"] <= 0.05
  planted = r["scores"]["centroid_distance"]
  assert planted["rho"] > 0.1 and planted["rho_p_holm"] <= 0.05
  assert planted["difference"] > 0.1 and planted["p_holm"] <= 0.05
  assert planted["excess_share"]["interval"][0] > 0.5
  noise = r["scores"]["ref_error"]
  assert noise["rho_p_holm"] > 0.05 and noise["p_holm"] > 0.05
  v = res["verdicts"]["lira"]["0.01"]
  assert v["far"]["verdict"] == "supported" and v["far"]["mostly"] == "yes"
  assert v["noisy"]["verdict"] == "not shown"
  assert r["leakage"]["significant_examples"] > 0
  sig = per_example["lira@0.01"]["p_holm"] <= 0.05
  assert planted["significant_in_top"]["fraction"] > 0.9 and sig.sum() == r["leakage"][
      "significant_examples"]
  assert "supported" in leakage_report.markdown({**res, "run": {
      "workdir": "w", "dataset": "synthetic", "pool": len(labels), "models": len(keep),
      "queries": 1, "canaries_excluded": 0, "permutations": 3000, "class_names": ["a", "b", "c"],
      "reference_models": {"count": 1, "trained_on": "x", "pool_accuracy": [0.9]}}}, "f")


@pytest.mark.parametrize("loud", [0.0, 2.0])
def test_study_at_chance_without_leak(loud):
  # no leak (and, loud, outliers flagged more often IN and OUT alike): precision at the base
  # rate and no Holm-significant pooled effect in about 95% of draws
  covered, significant, draws = 0, 0, 20
  old_significant = 0
  for seed in range(draws):
    s, keep, labels, out = _scores(100 + seed, n=900, t=16, loud=loud)
    res, _ = leakage.study({"a": s}, keep, labels, out, alphas=(0.01,), num_permutations=400,
                           seed=seed)
    r = res["attacks"]["a"]["0.01"]
    lo, hi = r["precision"]["precision"]["interval"]
    covered += lo <= r["precision"]["base_rate"] <= hi
    ps = [r["precision"]["p_holm"]] + [v.get(k, 1.0) for v in r["scores"].values()
                                       for k in ("rho_p_holm", "p_holm")]
    significant += min(ps) <= 0.05
    # the uncontrolled comparison: flagged members vs other members of one target
    f, _ = vulnerability.vulnerable_members(s[0], keep[0], 0.05)
    old = vulnerability.compare_groups(out["centroid_distance"][keep[0]], f[keep[0]])
    old_significant += old["p_value"] <= 0.05
  assert covered >= 0.8 * draws
  assert significant <= 0.15 * draws
  if loud:   # without the OUT control, loud outliers pass for leaking ones
    assert old_significant >= 0.5 * draws


def test_border_and_reference_scores():
  rng = np.random.default_rng(0)
  a = rng.normal(0, 1, (100, 2)) + [-3, 0]
  b = rng.normal(0, 1, (100, 2)) + [3, 0]
  x, y = np.concatenate([a, b]), np.repeat([0, 1], 100)
  bo = outliers.border(x, y, k=10)
  near = np.abs(x[:, 0]) < 0.5
  assert bo[near].mean() > 0.2 > bo[np.abs(x[:, 0]) > 4].mean() + 0.15
  # reference models: model 1 saw every example (garbage features there); only model 0 counts
  feats = np.stack([x, rng.normal(size=x.shape) * 100])
  unseen = np.stack([np.ones(200, bool), np.zeros(200, bool)])
  r = outliers.reference_model_scores(feats, y, unseen, k=10)
  np.testing.assert_allclose(r["border"], bo)
  np.testing.assert_allclose(r["centroid_distance"], outliers.centroid_distance(x, y))
  assert (r["num_models"] == 1).all()
  logits = rng.normal(size=(2, 200, 1, 2))
  d = outliers.reference_difficulty(logits, y, unseen)
  z = logits[0, :, 0]
  loss = np.log(np.exp(z).sum(1)) - z[np.arange(200), y]
  np.testing.assert_allclose(d["ref_loss"], loss)
  np.testing.assert_allclose(d["ref_error"], (z.argmax(1) != y).astype(float))


def test_single_target_analysis_against_chance(tmp_path):
  # one target with no leak: its "vulnerable" members are what chance flags
  rng = np.random.default_rng(2)
  n, t = 800, 8
  x = rng.normal(size=(n, 6)).astype(np.float32)
  y = rng.integers(0, 3, n)
  is_member = np.arange(n) < 600
  phi = rng.normal(size=n)
  keep = membership.keep_matrix(1, t, n, 0.5)
  lira = {"scores": rng.normal(size=(t, n)), "keep": keep,
          "logits": rng.normal(size=(t, n, 1, 3)), "features": rng.normal(size=(t, n, 5))}
  model = mlp.MLP(hidden=(8,), num_classes=3)
  variables = model.init(jax.random.key(0), x[:1])
  a = study.analyse_target(model, variables, x, y, is_member, phi, str(tmp_path), lira=lira,
                           tsne_points=200, tsne_iter=250, do_gradcam=False, log=lambda s: None)
  v = a["vulnerable"]["0.01"]
  assert v["count"] == np.sum(phi[is_member] > v["threshold"])
  assert v["precision_interval"][0] <= v["base_rate"] <= v["precision_interval"][1]
  assert v["p_value"] > 0.05
  assert all(np.isfinite(e["p_value"]) for e in a["single_target"]["0.01"].values())
  assert (tmp_path / "tsne_reference_features.png").stat().st_size > 1000
  assert any("chance" in line for line in a["markdown"])


def test_permutation_tests_leave_out_strata_too_sparse_to_test():
  rng = np.random.default_rng(5)
  n = 400
  strata = np.arange(n) % 2
  v = np.zeros(n)
  v[rng.choice(n, 12, replace=False)] = 1 / 16       # 12 flags in all: too few to test
  r = vulnerability.permutation_tests(v, {"c": rng.normal(size=n)}, strata, num=200)["c"]
  assert np.isnan(r["pooled"]["p_value"]) and np.isnan(r["pooled"]["rho_p_value"])
  assert all(np.isnan(e["p_value"]) for e in r["per_stratum"].values())
