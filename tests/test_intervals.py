"""Coverage of the 95% intervals on scores from known distributions, and their properties.

Truths in closed form: non-members N(0, 1), members N(d, 1) give AUC = Phi(d / sqrt 2) and
TPR at FPR alpha = Phi(d - z_alpha); a share s of members shifted by 4 gives AUC
(1 - s) / 2 + s Phi(4 / sqrt 2) and TPR (1 - s) alpha + s Phi(4 - z_alpha). With a random
effect d_t = d + tau N(0, 1) per target model, the mean over models is Phi(d / sqrt(2 + tau^2))
and Phi((d - z_alpha) / sqrt(1 + tau^2)). The 95% intervals must cover 90-99% of a few hundred
draws (experiments/interval_coverage.py measures the full table).
"""

import numpy as np
import pytest
from scipy import stats as sps

from mia_jax import metrics
from mia_jax.attacks import evaluate as attack_eval

DRAWS = 300


def _draw(rng, n, shift=0.0, tail=0.0):
  members = rng.normal(size=n) + shift
  members[rng.random(n) < tail] += 4.0
  return np.r_[members, rng.normal(size=n)], np.r_[np.ones(n, bool), np.zeros(n, bool)]


def _coverage(intervals, truth):
  return np.mean([lo <= truth <= hi for lo, hi in intervals])


@pytest.mark.parametrize("shift", [0.0, 0.5])          # 0: the null, AUC exactly 0.5
def test_per_target_auc_covers(shift):
  rng = np.random.default_rng(0)
  cis = [metrics.auc_interval(metrics.tally(*_draw(rng, 300, shift))) for _ in range(DRAWS)]
  assert 0.90 <= _coverage(cis, sps.norm.cdf(shift / np.sqrt(2))) <= 0.99


def test_per_target_tpr_at_one_percent_covers():
  rng = np.random.default_rng(1)
  n, alpha, shift = 2000, 0.01, 1.0                     # k = 20 false positives allowed
  truth = sps.norm.cdf(shift - sps.norm.isf(alpha))
  tallies = [metrics.tally(*_draw(rng, n, shift)) for _ in range(DRAWS)]
  assert 0.90 <= _coverage([metrics.tpr_interval(t, alpha) for t in tallies], truth) <= 0.99
  union = [metrics.tpr_interval(t, alpha, method="union") for t in tallies]
  assert _coverage(union, truth) >= 0.95                # valid for any distribution


def test_per_target_tpr_at_an_extreme_order_statistic_covers():
  # 0.1% FPR with 5000 non-members rests on k = 5 of them; 10% of the members leak a lot.
  rng = np.random.default_rng(2)
  n, alpha, tail = 5000, 1e-3, 0.1
  truth = (1 - tail) * alpha + tail * sps.norm.sf(sps.norm.isf(alpha) - 4.0)
  tallies = [metrics.tally(*_draw(rng, n, tail=tail)) for _ in range(DRAWS)]
  assert 0.90 <= _coverage([metrics.tpr_interval(t, alpha) for t in tallies], truth) <= 0.99
  assert _coverage([metrics.tpr_interval(t, alpha, method="union") for t in tallies],
                   truth) >= 0.95


def test_unresolved_fpr_keeps_a_valid_upper_end():
  # 0.01% FPR with 500 non-members: k = 0, the estimate is the TPR at 0% empirical FPR; the
  # interval [0, hi] must still hold the TPR at 0.01% FPR.
  rng = np.random.default_rng(3)
  alpha, shift = 1e-4, 1.0
  truth = sps.norm.cdf(shift - sps.norm.isf(alpha))
  outs = [metrics.evaluate(*_draw(rng, 500, shift), fprs=(alpha,)) for _ in range(100)]
  assert all(o["nonmembers_at_fpr"][str(alpha)] == 0 for o in outs)
  cis = [o["tpr_at_fpr_ci95"][str(alpha)] for o in outs]
  assert all(lo == 0.0 for lo, _ in cis)
  assert _coverage(cis, truth) >= 0.95


def _targets(rng, num, n, d, tau, alpha):
  return [metrics.evaluate(*_draw(rng, n, d + tau * rng.normal()), fprs=(alpha,))
          for _ in range(num)]


def test_mean_over_targets_auc_covers_the_model_to_model_spread():
  rng = np.random.default_rng(4)
  d, tau, num, n = 1.0, 0.15, 4, 300
  truth = sps.norm.cdf(d / np.sqrt(2 + tau ** 2))
  new, examples_only = [], []
  for _ in range(DRAWS):
    items = _targets(rng, num, n, d, tau, 0.01)
    new.append(attack_eval.over_targets(items)["auc_ci95"])
    # the unit error: the examples' noise alone (DeLong's standard errors, targets fixed)
    se = [(r["auc_ci95"][1] - r["auc_ci95"][0]) / (2 * 1.96) for r in items]
    mean, half = np.mean([r["auc"] for r in items]), 1.96 * np.sqrt(np.sum(np.square(se))) / num
    examples_only.append((mean - half, mean + half))
  assert 0.90 <= _coverage(new, truth) <= 0.99
  assert _coverage(examples_only, truth) < 0.85         # the random effect is material here


def test_mean_over_targets_tpr_covers():
  rng = np.random.default_rng(5)
  d, tau, num, n, alpha = 1.0, 0.15, 6, 2000, 0.01     # k = 20 per target
  truth = sps.norm.cdf((d - sps.norm.isf(alpha)) / np.sqrt(1 + tau ** 2))
  cis = [attack_eval.over_targets(_targets(rng, num, n, d, tau, alpha))["tpr_at_fpr_ci95"]["0.01"]
         for _ in range(DRAWS)]
  assert 0.90 <= _coverage(cis, truth) <= 0.99


def _random_case(rng):
  """Scores with many ties, any balance, from 2 examples up."""
  n = int(rng.integers(2, 120))
  member = rng.random(n) < rng.uniform(0.05, 0.95)
  member[0], member[1] = True, False
  scores = rng.integers(0, int(rng.integers(1, 12)), n).astype(float) + rng.normal(size=n) * (
      rng.random() < 0.5)
  if rng.random() < 0.1:                                # perfect separation either way
    scores = np.where(member, 10.0, 0.0) * rng.choice([-1, 1]) + rng.random(n)
  return scores, member


ALPHAS = (0.0, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0)


def test_every_interval_contains_its_estimate():
  rng = np.random.default_rng(6)
  for _ in range(400):
    scores, member = _random_case(rng)
    out = metrics.evaluate(scores, member, fprs=ALPHAS)
    for m in ("auc", "advantage", "advantage_abs", "balanced_accuracy"):
      lo, hi = out[f"{m}_ci95"]
      assert 0.0 <= lo <= out[m] <= hi <= 1.0, (m, lo, out[m], hi)
    t = metrics.tally(scores, member)
    for a in ALPHAS:
      key = str(float(a))
      est = out["tpr_at_fpr"][key]
      for lo, hi in (out["tpr_at_fpr_ci95"][key], metrics.tpr_interval(t, a, method="union")):
        assert 0.0 <= lo <= est <= hi <= 1.0, (a, lo, est, hi)
      assert out["tpr_at_fpr_lower"][key] <= est
      if out["nonmembers_at_fpr"][key] == 0:
        assert out["tpr_at_fpr_ci95"][key][0] == 0.0


def test_every_interval_over_targets_contains_its_mean():
  rng = np.random.default_rng(7)
  for _ in range(150):
    items = [metrics.evaluate(*_random_case(rng), fprs=ALPHAS)
             for _ in range(int(rng.integers(1, 6)))]
    out = attack_eval.over_targets(items)
    for m in ("auc", "advantage", "advantage_abs", "balanced_accuracy"):
      lo, hi = out[f"{m}_ci95"]
      assert 0.0 <= lo <= np.mean([r[m] for r in items]) + 1e-12
      assert np.mean([r[m] for r in items]) - 1e-12 <= hi <= 1.0
    for a in ALPHAS:
      key = str(float(a))
      mean = np.mean([r["tpr_at_fpr"][key] for r in items])
      lo, hi = out["tpr_at_fpr_ci95"][key]
      assert 0.0 <= lo <= mean + 1e-12 and mean - 1e-12 <= hi <= 1.0
    assert out["interval_unit"] == ("targets" if len(items) > 1 else "examples")
