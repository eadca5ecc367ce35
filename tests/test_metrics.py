"""Tests for mia_jax.metrics against ROC curves worked by hand and slower reference paths."""

import doctest

import numpy as np
import pytest
from scipy import stats as sps

from mia_jax import metrics
from mia_jax.errors import ConfigError

# Worked by hand. Descending score groups (M = member, N = non-member):
#   0.9 {M} | 0.8 {M, N} | 0.7 {M} | 0.5 {N, M} | 0.3 {N}
#   cumulative TP 1 2 3 4 4 of 4, FP 0 1 1 2 3 of 3.
SCORES = np.array([0.5, 0.9, 0.8, 0.3, 0.7, 0.8, 0.5])
MEMBER = np.array([0, 1, 1, 0, 1, 0, 1], bool)
FPR = np.array([0, 0, 1, 1, 2, 3]) / 3
TPR = np.array([0, 1, 2, 3, 4, 4]) / 4


def test_roc_curve_by_hand():
  fpr, tpr, thr = metrics.roc_curve(SCORES, MEMBER)
  np.testing.assert_allclose(fpr, FPR)
  np.testing.assert_allclose(tpr, TPR)
  np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.7, 0.5, 0.3])


def test_ties_are_one_threshold():
  # No staircase point (0, 1/2) inside the 0.8 tie: TPR at FPR 0 is 1/4, not 1/2.
  fpr, tpr, _ = metrics.roc_curve(SCORES, MEMBER)
  assert metrics.tpr_at_fpr(fpr, tpr, 0.0) == 0.25
  # All scores tied: the curve is the diagonal's two end points, AUC one half.
  fpr, tpr, _ = metrics.roc_curve(np.ones(5), [1, 0, 1, 0, 0])
  np.testing.assert_allclose(fpr, [0, 1])
  np.testing.assert_allclose(tpr, [0, 1])
  assert metrics.auc(fpr, tpr) == 0.5


def test_scalar_metrics_by_hand():
  fpr, tpr, _ = metrics.roc_curve(SCORES, MEMBER)
  # Mann-Whitney with ties as one half: (3 + 2.5 + 2 + 1.5) / 12.
  assert metrics.auc(fpr, tpr) == pytest.approx(0.75)
  assert metrics.advantage(fpr, tpr) == pytest.approx(0.75 - 1 / 3)
  assert metrics.balanced_accuracy(fpr, tpr) == pytest.approx((1 + 0.75 - 1 / 3) / 2)
  assert metrics.tpr_at_fpr(fpr, tpr, 1 / 3) == 0.75  # FPR exactly alpha counts
  assert metrics.tpr_at_fpr(fpr, tpr, 0.3) == 0.25
  assert metrics.tpr_at_fpr(fpr, tpr, 0.7) == 1.0


def test_curve_ends_and_perfect_separation():
  fpr, tpr, _ = metrics.roc_curve([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0])
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
  assert metrics.auc(fpr, tpr) == 1.0
  assert metrics.tpr_at_fpr(fpr, tpr, 0.0) == 1.0
  assert metrics.advantage(fpr, tpr) == 1.0


def test_auc_matches_mann_whitney_on_random_ties():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 20, 500).astype(float)
  member = rng.random(500) < 0.4
  fpr, tpr, _ = metrics.roc_curve(scores, member)
  pos, neg = scores[member], scores[~member]
  u = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
  assert metrics.auc(fpr, tpr) == pytest.approx(u, abs=1e-12)


def test_evaluate_keys_and_counts():
  rng = np.random.default_rng(1)
  member = np.r_[np.ones(300, bool), np.zeros(1200, bool)]
  scores = rng.normal(size=1500) + member
  out = metrics.evaluate(scores, member)
  assert list(out["tpr_at_fpr"]) == ["0.01", "0.001", "0.0001", "0.0"]
  assert out["nonmembers_at_fpr"] == {"0.01": 12, "0.001": 1, "0.0001": 0, "0.0": 0}
  assert (out["num_members"], out["num_nonmembers"]) == (300, 1200)
  assert 0.5 < out["auc"] < 1
  assert out["balanced_accuracy"] == pytest.approx((1 + out["advantage"]) / 2)
  for key in ("auc_ci95", "advantage_ci95", "advantage_abs_ci95", "balanced_accuracy_ci95"):
    assert len(out[key]) == 2
  assert set(out["tpr_at_fpr_ci95"]) == set(out["tpr_at_fpr_lower"]) == set(out["tpr_at_fpr"])
  assert "bootstrap_ci95" not in out
  assert "auc_ci95" not in metrics.evaluate(scores, member, intervals=False)


def test_tpr_at_fpr_count_rounding():
  # 0.29 * 100 is 28.999999999999996 in floating point: 29 false positives still count.
  member = np.r_[np.ones(10, bool), np.zeros(100, bool)]
  scores = np.r_[np.full(10, 5.0), np.arange(100, dtype=float)[::-1] / 100]
  scores[:10] = np.linspace(0.705, 0.709, 10)  # members just below the 29th non-member
  out = metrics.evaluate(scores, member, fprs=(0.29, 0.28))
  assert out["nonmembers_at_fpr"] == {"0.29": 29, "0.28": 28}
  assert out["tpr_at_fpr"] == {"0.29": 1.0, "0.28": 0.0}


def test_bootstrap_matches_explicit_resamples():
  rng = np.random.default_rng(2)
  member = rng.random(60) < 0.5
  scores = np.round(rng.normal(size=60) + member, 1)  # with ties
  reps = metrics.bootstrap_replicates(scores, member, (0.1, 0.0), num=7, seed=3)
  # Replay the draws: members and non-members, each in descending-score (stable) order.
  order = np.argsort(-scores, kind="stable")
  mem, non = scores[order][member[order]], scores[order][~member[order]]
  draw = np.random.default_rng(3)
  idx_m = draw.integers(0, mem.size, size=(7, mem.size))
  idx_n = draw.integers(0, non.size, size=(7, non.size))
  for b in range(7):
    s = np.r_[mem[idx_m[b]], non[idx_n[b]]]
    y = np.r_[np.ones(mem.size, bool), np.zeros(non.size, bool)]
    fpr, tpr, _ = metrics.roc_curve(s, y)
    assert reps["auc"][b] == pytest.approx(metrics.auc(fpr, tpr), abs=1e-12)
    for alpha in (0.1, 0.0):
      assert reps["tpr_at_fpr"][str(alpha)][b] == pytest.approx(
          metrics.tpr_at_fpr(fpr, tpr, alpha), abs=1e-12)


def test_evaluate_bootstrap_is_recorded_apart_and_reproducible():
  rng = np.random.default_rng(4)
  member = rng.random(2000) < 0.5
  scores = rng.normal(size=2000) + 0.5 * member
  out = metrics.evaluate(scores, member, bootstrap=200, seed=0)
  lo, hi = out["bootstrap_ci95"]["auc"]
  assert lo < out["auc"] < hi and hi - lo < 0.1
  assert set(out["bootstrap_ci95"]["tpr_at_fpr"]) == {"0.01", "0.001", "0.0001", "0.0"}
  again = metrics.evaluate(scores, member, bootstrap=200, seed=0)
  assert again["bootstrap_ci95"] == out["bootstrap_ci95"]
  # the analytic intervals do not depend on the bootstrap
  assert out["auc_ci95"] == metrics.evaluate(scores, member)["auc_ci95"]


def _placements(scores, member):
  """DeLong's placement values by the O(n_mem * n_non) definition, in float64."""
  pos, neg = scores[member][:, None], scores[~member][None, :]
  psi = (pos > neg) + 0.5 * (pos == neg)
  return psi.mean(axis=1), psi.mean(axis=0)


def test_auc_interval_is_delong_on_the_logit_scale():
  rng = np.random.default_rng(6)
  member = rng.random(300) < 0.4
  scores = np.round(rng.normal(size=300) + 0.6 * member, 1)     # ties across and within groups
  v10, v01 = _placements(scores, member)
  a = v10.mean()
  se = np.sqrt(v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size)
  z = sps.norm.ppf(0.975)
  logit = np.log(a / (1 - a))
  expected = 1 / (1 + np.exp(-(logit + np.array([-z, z]) * se / (a * (1 - a)))))
  t = metrics.tally(scores, member)
  np.testing.assert_allclose(metrics.auc_interval(t), expected, rtol=1e-12)
  assert metrics.evaluate(scores, member)["auc"] == pytest.approx(a, abs=1e-12)


def test_auc_interval_at_perfect_separation():
  member = np.r_[np.ones(20, bool), np.zeros(30, bool)]
  scores = np.r_[np.arange(20) + 100.0, np.arange(30.0)]
  lo, hi = metrics.auc_interval(metrics.tally(scores, member))
  assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 20))   # Clopper-Pearson, 20 of 20
  lo, hi = metrics.auc_interval(metrics.tally(-scores, member))
  assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))


def test_tpr_interval_by_hand():
  # 10 non-members 0.5, 1.5, ..., 9.5 (highest first: 9.5 is the 1st); members 0 .. 19 plus 0.25.
  non = np.arange(10) + 0.5
  mem = np.r_[np.arange(20.0), 9.25]
  scores, member = np.r_[mem, non], np.r_[np.ones(21, bool), np.zeros(10, bool)]
  t = metrics.tally(scores, member)
  alpha = 0.2                                      # k = 2: the rule "above 7.5"
  n_mem, n_non = 21, 10
  est = metrics.evaluate(scores, member, fprs=(alpha,))["tpr_at_fpr"]["0.2"]
  assert est == 13 / 21                            # 8, 9, 9.25, 10 .. 19
  a = 0.025
  j = np.arange(n_non + 2)
  cdf = sps.binom.cdf(j - 1, n_non, alpha)
  j_lo, j_hi = j[cdf <= a].max(), j[1:][cdf[1:] >= 1 - a].min()
  assert (j_lo, j_hi) == (0, 6)                    # above every non-member .. at or above 4.5
  rank_lo, rank_hi = 0, 16                         # members above +inf; at or above 4.5
  cp_lo = sps.beta.ppf(a, 13, n_mem - 13 + 1)
  cp_hi = sps.beta.ppf(1 - a, 14, n_mem - 13)
  lo = est - np.hypot(est - rank_lo / n_mem, est - cp_lo)
  hi = est + np.hypot(rank_hi / n_mem - est, cp_hi - est)
  np.testing.assert_allclose(metrics.tpr_interval(t, alpha), (max(lo, 0), hi), rtol=1e-12)
  # the union band: every piece at a / 2
  cdf_u = sps.binom.cdf(j - 1, n_non, alpha)
  ju_hi = j[1:][cdf_u[1:] >= 1 - a / 2].min()
  assert ju_hi == 6                                # at or above 4.5: members 5 .. 19, 9.25
  np.testing.assert_allclose(metrics.tpr_interval(t, alpha, method="union"),
                             (0.0, sps.beta.ppf(1 - a / 2, 17, 21 - 16)), rtol=1e-12)
  # at expected FPR alpha: 0.2 * 11 = 2.2, so 0.8 x (above the 2nd highest, 8.5: 12 members)
  # + 0.2 x (above the 3rd, 7.5: 13); 0.05 * 11 = 0.55: 0.45 x 0 + 0.55 x (above 9.5: 10)
  assert metrics.tpr_at_fpr_lower(t, alpha) == pytest.approx((0.8 * 12 + 0.2 * 13) / 21)
  assert metrics.tpr_at_fpr_lower(t, 0.05) == pytest.approx(0.55 * 10 / 21)


def test_tpr_at_fpr_strict_is_the_lira_reference_form():
  # The LiRA reference takes tpr[np.where(fpr < alpha)[0][-1]] on sklearn's roc_curve.
  from sklearn.metrics import roc_curve as sk_roc   # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  member = rng.random(400) < 0.5
  scores = np.round(rng.normal(size=400) + member, 2)
  fpr, tpr, _ = metrics.roc_curve(scores, member)
  sk_fpr, sk_tpr, _ = sk_roc(member, scores)
  n_non = int((~member).sum())
  for alpha in (0.01, 0.05, 3 / n_non, 0.5):
    ref = sk_tpr[np.where(sk_fpr < alpha)[0][-1]]
    assert metrics.tpr_at_fpr(fpr, tpr, alpha, strict=True) == pytest.approx(ref)
  # at alpha = k / n exactly the two forms differ: <= alpha counts k false positives
  k_alpha = 3 / n_non
  assert metrics.tpr_at_fpr(fpr, tpr, k_alpha) >= metrics.tpr_at_fpr(fpr, tpr, k_alpha, True)


def test_advantage_abs_counts_rules_below_a_threshold():
  # members score LOW: TPR - FPR <= 0 above every threshold; |TPR - FPR| reaches 3/4.
  member = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
  scores = np.array([0.0, 1, 2, 5, 3, 4, 6, 7])
  out = metrics.evaluate(scores, member)
  assert out["advantage"] == pytest.approx(0.0)
  assert out["advantage_abs"] == pytest.approx(0.75)
  fpr, tpr, _ = metrics.roc_curve(scores, member)
  assert metrics.advantage(fpr, tpr, absolute=True) == pytest.approx(
      np.max(np.abs(tpr - fpr)))


def test_advantage_interval_is_the_dkw_band():
  lo, hi = metrics.advantage_interval(0.2, 400, 900)
  eps = np.sqrt(np.log(2 / 0.025) / 800) + np.sqrt(np.log(2 / 0.025) / 1800)
  assert (lo, hi) == pytest.approx((0.2 - eps, 0.2 + eps))
  assert metrics.advantage_interval(0.01, 50, 50)[0] == 0.0


def test_tally_matches_counting():
  rng = np.random.default_rng(8)
  member = rng.random(200) < 0.3
  scores = rng.integers(0, 15, 200).astype(float)
  t = metrics.tally(scores, member)
  for g, thr in enumerate(t.thresholds):
    assert t.members[g] == np.sum(member & (scores == thr))
    assert t.fps[g] == np.sum(~member & (scores >= thr))
  assert np.all(np.diff(t.thresholds) < 0)


@pytest.mark.parametrize("scores, member", [
    ([0.1, 0.2], [1, 1]),            # no non-member
    ([0.1, np.nan], [1, 0]),         # NaN score
    ([0.1, 0.2, 0.3], [1, 0]),       # length mismatch
    ([0.1, 0.2], [2, 0]),            # not boolean
])
def test_bad_input_raises_config_error(scores, member):
  with pytest.raises(ConfigError):
    metrics.evaluate(scores, member)


def test_evaluate_slices():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, 600)
  member = rng.random(600) < 0.5
  preds = np.where(rng.random(600) < 0.8, labels, (labels + 1) % 3)
  scores = rng.normal(size=600) + member
  out = metrics.evaluate_slices(scores, member, labels, preds)
  assert set(out["class"]) == {"0", "1", "2"}
  mask = labels == 1
  assert out["class"]["1"] == metrics.evaluate(scores[mask], member[mask])
  assert out["incorrect"] == metrics.evaluate(scores[labels != preds], member[labels != preds])
  assert "auc_ci95" not in metrics.evaluate_slices(scores, member, labels, preds,
                                                   intervals=False)["correct"]
  assert out["correct"]["num_members"] + out["incorrect"]["num_members"] == member.sum()
  only_members = metrics.evaluate_slices(scores[member], member[member], labels[member],
                                         preds[member])
  assert "skipped" in only_members["correct"]


def test_docstring_example_runs():
  """The package docstring's example (roc_curve, auc, evaluate) gives the numbers it shows."""
  result = doctest.testmod(metrics)
  assert result.attempted > 0 and result.failed == 0
