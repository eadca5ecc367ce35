"""Tests for mia_jax.metrics against ROC curves worked by hand."""

import numpy as np
import pytest

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
  assert "auc_ci95" not in out


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


def test_evaluate_bootstrap_intervals():
  rng = np.random.default_rng(4)
  member = rng.random(2000) < 0.5
  scores = rng.normal(size=2000) + 0.5 * member
  out = metrics.evaluate(scores, member, bootstrap=200, seed=0)
  lo, hi = out["auc_ci95"]
  assert lo < out["auc"] < hi and hi - lo < 0.1
  assert set(out["tpr_at_fpr_ci95"]) == {"0.01", "0.001", "0.0001", "0.0"}
  again = metrics.evaluate(scores, member, bootstrap=200, seed=0)
  assert again["auc_ci95"] == out["auc_ci95"]


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
  assert out["class"]["1"]["auc"] == metrics.evaluate(scores[mask], member[mask])["auc"]
  assert out["correct"]["num_members"] + out["incorrect"]["num_members"] == member.sum()
  only_members = metrics.evaluate_slices(scores[member], member[member], labels[member],
                                         preds[member])
  assert "skipped" in only_members["correct"]
