"""Tests for mia_jax.attacks.risk: float64 recomputation by pairs, the null's coverage, and the
positive control's ranking."""

import csv
import doctest

import numpy as np
import pytest

from mia_jax import attacks, stats
from mia_jax.attacks import risk
from mia_jax.errors import ConfigError, DataError


def _exact_design(rng, t, n):
  return np.argsort(rng.random((t, n)), axis=0) < t // 2


def _by_pairs(s_in, s_out):
  """AUC and DeLong's variance, by explicit loops over the pairs, in float64."""
  beats = lambda a, b: 1.0 if a > b else 0.5 if a == b else 0.0
  v_in = np.array([np.mean([beats(a, b) for b in s_out]) for a in s_in])
  v_out = np.array([np.mean([beats(a, b) for a in s_in]) for b in s_out])
  auc = v_in.mean()
  var = (np.var(v_in, ddof=1) if len(v_in) > 1 else 0.0) / len(v_in) + (
      np.var(v_out, ddof=1) if len(v_out) > 1 else 0.0) / len(v_out)
  return auc, var


def test_doctests():
  assert doctest.testmod(risk).failed == 0


def test_risk_and_interval_equal_the_pairwise_float64_computation():
  rng = np.random.default_rng(0)
  t, n = 9, 40
  scores = np.round(rng.normal(size=(t, n)), 1)         # ties within examples
  keep = rng.random((t, n)) < 0.5
  keep[:, 0], keep[0, 0] = False, True                  # one IN target only
  keep[:, 1], keep[0, 1] = True, False                  # one OUT target only
  got = risk.per_example(scores, keep)
  for i in range(n):
    s_in, s_out = scores[keep[:, i], i], scores[~keep[:, i], i]
    assert (got["n_in"][i], got["n_out"][i]) == (len(s_in), len(s_out))
    if not len(s_in) or not len(s_out):
      assert np.isnan(got["risk"][i]) and np.isnan(got["lo"][i])
      continue
    auc, var = _by_pairs(s_in, s_out)
    assert got["risk"][i] == pytest.approx(auc, abs=1e-12)
    if 0 < auc < 1 and var > 0:
      lo, hi = stats.logit_interval(auc, np.sqrt(var))
      assert (got["lo"][i], got["hi"][i]) == pytest.approx((lo, hi), abs=1e-12)


def test_no_in_or_no_out_target_is_nan_and_perfect_separation_gets_clopper_pearson():
  scores = np.array([[5.0, 1.0, 0.0], [4.0, 2.0, 1.0], [0.0, 3.0, 2.0], [1.0, 4.0, 3.0]])
  keep = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]], bool)
  got = risk.per_example(scores, keep)
  cp = stats.clopper_pearson(2, 2)
  assert got["risk"][0] == 1.0 and got["lo"][0] == pytest.approx(cp[0]) and got["hi"][0] == 1
  assert got["risk"][1] == 1.0                           # IN targets score 3, 4 > 1, 2
  assert np.isnan(got["risk"][2]) and got["n_out"][2] == 0


def test_null_risk_intervals_cover_chance_at_about_the_nominal_rate():
  """Scores with per-example offsets and target effects but no membership: each example's
  risk interval holds 0.5 for about 95% of examples, and the risks centre on 0.5."""
  rng = np.random.default_rng(1)
  t, n = 64, 4000
  keep = _exact_design(rng, t, n)
  scores = rng.normal(size=n) + 0.5 * rng.normal(size=(t, 1)) + rng.normal(size=(t, n))
  got = risk.per_example(scores, keep)
  covered = (got["lo"] <= 0.5) & (0.5 <= got["hi"])
  assert 0.93 < covered.mean() < 0.97, covered.mean()
  assert abs(np.mean(got["risk"]) - 0.5) < 0.005


def test_positive_control_ranks_the_memorised_examples_first():
  rng = np.random.default_rng(2)
  t, n = 64, 2000
  keep = _exact_design(rng, t, n)
  memorised = np.zeros(n)
  memorised[rng.choice(n, 20, replace=False)] = 3.0      # 20 examples leak strongly
  scores = rng.normal(size=n) + memorised * keep + rng.normal(size=(t, n))
  got = risk.per_example(scores, keep)
  top = {row["index"] for row in risk.ranked(got, 20)}
  assert top == set(np.flatnonzero(memorised))
  assert (got["lo"][memorised > 0] > 0.5).all()


def test_write_npz_and_csv_join_on_index(tmp_path):
  rng = np.random.default_rng(3)
  keep = _exact_design(rng, 8, 30)
  got = risk.per_example(rng.normal(size=(8, 30)), keep)
  labels, index = rng.integers(0, 10, 30), np.arange(100, 130)
  risk.write(str(tmp_path / "r.npz"), got, labels=labels, index=index)
  risk.write(str(tmp_path / "r.csv"), got, labels=labels, index=index)
  saved = np.load(tmp_path / "r.npz")
  assert set(saved.files) == set(risk.COLUMNS)
  np.testing.assert_array_equal(saved["index"], index)
  np.testing.assert_array_equal(saved["risk"], got["risk"])
  with open(tmp_path / "r.csv") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["index"]) for r in rows] == list(index)
  np.testing.assert_allclose([float(r["lo"]) for r in rows], got["lo"], rtol=1e-5)
  assert [int(r["label"]) for r in rows] == list(labels)
  with pytest.raises(ConfigError):
    risk.write(str(tmp_path / "r.txt"), got)


def test_ranked_is_by_risk_then_separation_and_markdown_lists_it():
  got = {"risk": np.array([0.9, 1.0, np.nan, 1.0]), "lo": np.array([0.7, 0.89, np.nan, 0.89]),
         "hi": np.array([1.0, 1.0, np.nan, 1.0]), "separation": np.array([1.0, 2.0, np.nan, 3.0]),
         "n_in": np.array([4, 4, 0, 4]), "n_out": np.array([4, 4, 8, 4])}
  rows = risk.ranked(got, 4)
  assert [r["index"] for r in rows] == [3, 1, 0, 2]
  table = risk.markdown(rows[:2])
  assert "| 2 | 1 | -1 | 1.000 | [0.890, 1.000] | 2.00 | 4 / 4 |" in table


def test_separation_is_the_standardised_mean_difference():
  rng = np.random.default_rng(4)
  keep = _exact_design(rng, 10, 6)
  scores = rng.normal(size=(10, 6))
  got = risk.per_example(scores, keep)["separation"]
  for i in range(6):
    a, b = scores[keep[:, i], i], scores[~keep[:, i], i]
    want = (a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert got[i] == pytest.approx(want, rel=1e-12)


def test_bad_inputs_are_one_line_errors():
  with pytest.raises(ConfigError):
    risk.per_example(np.zeros((3, 4)), np.zeros((3, 4)))          # keep not bool
  with pytest.raises(DataError):
    risk.per_example(np.full((3, 4), np.nan), np.zeros((3, 4), bool))


def test_leave_one_out_references_shift_lira_onlines_per_example_risk_below_chance():
  """The trap the experiment names: with no membership anywhere, the raw signal's risk sits at
  chance, but LiRA online's per-example risk falls below 0.5 (a target's references exclude
  it, so its own class's fit moves away from its value); read per-example risk on scores
  whose references do not change with the target."""
  rng = np.random.default_rng(5)
  m, n, c = 16, 3000, 5
  labels, keep = rng.integers(0, c, n), _exact_design(rng, m, n)
  z = rng.normal(size=(m, n, 1, c)).astype(np.float32)
  z[:, np.arange(n), 0, labels] += 1.0 + rng.normal(size=n).astype(np.float32)
  data = attacks.AttackData(logits=z, labels=labels, keep=keep)
  signal = risk.per_example(data.target_signal("scaled_logit", range(m)).mean(-1), keep)
  lira = risk.per_example(attacks.run("lira_online", data, range(m)), keep)
  assert abs(np.mean(signal["risk"]) - 0.5) < 0.015        # sd of the mean about 0.003
  covered = (signal["lo"] <= 0.5) & (0.5 <= signal["hi"])
  assert 0.93 < covered.mean() < 0.99                      # 8 IN / 8 OUT: a little over 95%
  assert np.mean(lira["risk"]) < 0.45
