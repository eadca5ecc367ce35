"""The canary audit and the views it scores: queries that follow the training, the one-run
bound's validity (a null target, a correction across targets) and its power (a model that
memorises its canaries against one that cannot)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from jax_privacy import auditing as jp_auditing

from mia_jax import attacks, inference, models, pipeline
from mia_jax.data import augment, membership
from mia_jax.errors import ConfigError
from mia_jax.privacy import auditing
from mia_jax.training import dp as dp_lib
from mia_jax.training import from_config

from conftest import load_config


# ---- Queries follow the training ----------------------------------------------------------

def _training_views(x, crop_padding, flip, draws=300):
  """Every distinct view augment.augment draws of the single image x [1, H, W, C]."""
  keys = jax.random.split(jax.random.key(1), draws)
  out = np.asarray(jax.vmap(lambda k: augment.augment(k, x, crop_padding, flip)[0])(keys))
  return {v.tobytes(): v for v in out}


@pytest.mark.parametrize("crop_padding,flip", [(0, False), (0, True), (1, False), (1, True)])
def test_train_queries_are_views_the_training_draws(crop_padding, flip):
  """'train' queries only views that training draws: the image alone when training neither
  crops nor flips (no mirror), {image, mirror} when it flips, the shifted grid when it crops."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 6, 2)), jnp.float32)
  drawn = _training_views(x, crop_padding, flip)
  q = np.asarray(augment.queries(x, "train", crop_padding, flip))[:, 0]
  names = augment.view_names("train", crop_padding, flip)
  assert len(names) == q.shape[0] and names[0] == "image"
  np.testing.assert_array_equal(q[0], np.asarray(x[0]))
  for view in q:
    assert view.tobytes() in drawn                         # a view the model trained on
  assert len({v.tobytes() for v in q}) == q.shape[0]       # no view twice
  if crop_padding == 0:
    assert q.shape[0] == len(drawn)                        # and every one of them
  assert ("mirror" in names) == flip


def test_explicit_query_kinds_stay_available():
  """'mirror' stays the image and its mirror even for a model trained without flips, and
  tabular inputs (never augmented) get the example alone under every kind."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 4, 1)), jnp.float32)
  q = np.asarray(augment.queries(x, "mirror", 0, False))
  np.testing.assert_array_equal(q[1], np.asarray(x)[:, :, ::-1])
  assert augment.resolve("mirror", 0, False) == "mirror"
  for kind in augment.QUERY_KINDS:
    assert augment.queries(x.reshape(3, -1), kind, 2, True).shape[0] == 1
    assert augment.view_names(kind, 2, True, image=False) == ["image"]
  with pytest.raises(ValueError, match="query kind"):
    augment.resolve("rotations")


def test_default_configs_query_the_training_views():
  """The default and the Fashion-MNIST configs train without flips, so they query the image
  alone; results.json's record says so."""
  for name, arg in (("default", ""), ("fashion_mnist_mlp", ""), ("fashion_mnist_dp", ""),
                    ("fashion_mnist_cnn", "")):
    config = load_config(name, arg)
    assert config.data.queries == "train"
    record = inference.query_record(config.data.queries, config.train.augment, 3)
    assert record["views"] == ["image"] and record["resolved"] == "none"
  config = load_config("default", "")
  config.train.augment.flip = True
  record = inference.query_record(config.data.queries, config.train.augment, 3)
  assert record["views"] == ["image", "mirror"] and record["kind"] == "train"


# ---- The bound: guesses, counts, validity -------------------------------------------------

def test_guess_vector_takes_both_tails():
  """Two-sided: IN for the ceil(k/2) highest scores, OUT for the floor(k/2) lowest; ties by
  position; one-sided: IN for the k highest."""
  s = np.array([0.5, 3.0, -1.0, 2.0, 2.0, -4.0, 0.0])
  np.testing.assert_array_equal(auditing.guess_vector(s, 5), [0, 1, -1, 1, 1, -1, 0])
  np.testing.assert_array_equal(auditing.guess_vector(s, 2, two_sided=False),
                                [0, 1, 0, 1, 0, 0, 0])       # the tie 2.0, 2.0: first one
  assert np.all(auditing.guess_vector(s, 7) != 0)
  assert not auditing.guess_vector(s, 0).any()


@pytest.mark.parametrize("method", ["one_run_fdp", "one_run"])
def test_one_sided_bound_equals_jax_privacys_public_auditor(method):
  """One candidate, one-sided: the counts-level bound equals CanaryScoreAuditor's at the
  explicit threshold of the k-th highest score (the public API, a slower reference path)."""
  rng = np.random.default_rng(2)
  included = rng.random(300) < 0.5
  scores = included * 1.5 + rng.normal(size=300)
  k = 60
  ours = auditing.audit(scores, included, 1e-4, 0.9, method=method, guesses="one_sided",
                        fractions=(k / 300,))
  auditor = jp_auditing.CanaryScoreAuditor(scores[included], scores[~included])
  thr = jp_auditing.Explicit(float(np.sort(scores)[-k]))
  fn = auditor.epsilon_one_run_fdp if method == "one_run_fdp" else auditor.epsilon_one_run
  assert ours["epsilon"] > 0.3 and ours["num_guesses"] == k
  assert ours["epsilon"] == pytest.approx(fn(0.1, 1e-4, threshold_strategy=thr), abs=1e-5)


@pytest.mark.parametrize("method", ["one_run_fdp", "one_run"])
def test_grid_search_is_the_best_candidate_at_the_bonferroni_level(method):
  """The searched bound equals the largest of the candidates' bounds each computed alone at
  (1 - confidence) / (grid size): the search's shortcuts change nothing."""
  rng = np.random.default_rng(4)
  included = rng.random(400) < 0.5
  scores = included * 1.2 + rng.normal(size=400)
  fractions = (0.05, 0.1, 0.3, 0.6, 1.0)
  best = auditing.audit(scores, included, 1e-5, 0.95, method=method, fractions=fractions)
  alone = [auditing.audit(scores, included, 1e-5, 1 - 0.05 / 5, method=method,
                          fractions=(f,))["epsilon"] for f in fractions]
  assert best["epsilon"] > 0.5 and best["epsilon"] == pytest.approx(max(alone), abs=2e-5)
  assert best["num_guesses"] == int(np.ceil(400 * fractions[int(np.argmax(alone))]))


def test_two_sided_bound_is_steinkes_binomial_tail():
  """Steinke et al.'s bound from two-sided guesses, delta ~ 0: the epsilon at which
  P[Binomial(k, e^eps / (1 + e^eps)) >= correct] = 1 - confidence, solved in float64 here."""
  rng = np.random.default_rng(3)
  included = rng.random(400) < 0.5
  scores = included * 2.0 + rng.normal(size=400)
  a = auditing.audit(scores, included, 1e-12, 0.95, method="one_run", fractions=(0.5,))
  g = auditing.guess_vector(scores, 200)
  correct = int(np.sum((g == 1) & included) + np.sum((g == -1) & ~included))
  assert (a["num_guesses"], a["num_correct"]) == (200, correct)
  assert (a["in_guesses"], a["out_guesses"]) == (100, 100)
  eps = scipy.optimize.brentq(
      lambda e: scipy.stats.binom.sf(correct - 1, 200, 1 / (1 + np.exp(-e))) - 0.05, 0, 20)
  assert a["epsilon"] == pytest.approx(eps, abs=1e-4)
  # both tails carry the evidence: the one-sided bound from as many guesses is lower
  one = auditing.audit(scores, included, 1e-12, 0.95, method="one_run", guesses="one_sided",
                       fractions=(0.5,))
  assert one["epsilon"] < a["epsilon"]


def _null_rates(method, fractions, m, runs, targets=4, delta=1e-12, seed=0):
  """Fractions of `runs` null runs (scores independent of the coins) whose largest
  per-target bound, and whose run-level headline, exceed 0."""
  rng = np.random.default_rng(seed)
  largest = headline = 0
  for _ in range(runs):
    keep = rng.random((targets, m)) < 0.5
    out = auditing.audit_targets(rng.normal(size=(targets, m)), keep, np.arange(m), delta,
                                 0.95, method=method, fractions=fractions)
    largest += max(out["per_target"]) > 0
    headline += out["epsilon_lower_bound"] > 0
  return largest / runs, headline / runs


def test_run_level_bound_holds_at_95_percent_under_the_null():
  """With no membership signal, the run-level bound (Bonferroni across 4 targets) exceeds 0 at
  most 5% of the time, while the largest of the 4 per-target 95% bounds does so about 15% of
  the time. One two-sided candidate (k = m): a guess is right with probability 1/2, so the
  rates are binomial tails, worked out here in float64."""
  m, runs = 200, 1000
  largest, headline = _null_rates("one_run", (1.0,), m, runs)

  def tail(significance):    # P[a target's bound > 0] = P[Binomial(m, 1/2) >= c*]
    c = next(c for c in range(m + 1) if scipy.stats.binom.sf(c - 1, m, 0.5) <= significance)
    return scipy.stats.binom.sf(c - 1, m, 0.5)

  want_largest, want_headline = 1 - (1 - tail(0.05)) ** 4, 1 - (1 - tail(0.05 / 4)) ** 4
  sd = lambda p: np.sqrt(p * (1 - p) / runs)
  assert abs(largest - want_largest) < 3.5 * sd(want_largest)      # about 0.145
  assert abs(headline - want_headline) < 3.5 * sd(want_headline)   # about 0.038
  assert want_headline <= 0.05 < want_largest


@pytest.mark.slow
@pytest.mark.parametrize("method", ["one_run", "one_run_fdp"])
def test_grid_audit_is_valid_under_the_null(method):
  """The configured audit (two-sided guesses over the pre-registered grid, Bonferroni across
  the grid and the targets) exceeds 0 in at most 5% of null runs (binomial slack), with either
  analysis (the f-DP one costs seconds per run: slow)."""
  runs = 150
  largest, headline = _null_rates(method, auditing.FRACTIONS, 100, runs, delta=1e-3)
  assert headline <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / runs)
  assert headline <= largest


def test_randomized_response_is_not_audited_above_its_epsilon():
  """Canaries released by randomized response (each bit exactly eps-DP): the run-level one_run
  bound stays below eps and at eps = 4 finds far more than 1 (the audit has power). The f-DP
  bound, which tests the Gaussian trade-off curve, overshoots a pure eps-DP mechanism: the
  reason it is reported beside the headline, with its assumption, not as the headline."""
  rng = np.random.default_rng(5)
  m, targets = 200, 4
  for eps in (1.0, 4.0):
    keep = rng.random((targets, m)) < 0.5
    truthful = rng.random((targets, m)) < 1 / (1 + np.exp(-eps))
    scores = np.where(truthful, keep, ~keep) + 0.01 * rng.normal(size=(targets, m))
    out = auditing.audit_targets(scores, keep, np.arange(m), 1e-5, 0.95,
                                 beside=("one_run_fdp",) if eps == 4.0 else ())
    assert out["method"] == "one_run" and out["epsilon_lower_bound"] <= eps
    assert out["epsilon_lower_bound"] <= max(out["per_target"])   # the correction costs
    if eps == 4.0:
      assert out["epsilon_lower_bound"] > 2.0
      assert out["beside"]["one_run_fdp"]["epsilon_lower_bound"] > eps
      assert "Gaussian" in out["beside"]["one_run_fdp"]["assumes"]


def test_headlines_and_their_labels():
  rng = np.random.default_rng(6)
  keep = rng.random((3, 400)) < 0.5
  scores = keep * 3.0 + rng.normal(size=keep.shape)
  bon = auditing.audit_targets(scores, keep, np.arange(0, 400, 2), 1e-4)
  first = auditing.audit_targets(scores, keep, np.arange(0, 400, 2), 1e-4,
                                 headline="first_target")
  assert bon["epsilon_lower_bound"] == max(bon["per_target_corrected"])
  assert all(c <= e for c, e in zip(bon["per_target_corrected"], bon["per_target"]))
  assert bon["corrected_confidence"] == pytest.approx(1 - 0.05 / 3)
  assert first["epsilon_lower_bound"] == first["per_target"][0]
  assert "95% for the run" in bon["holds_at"] and "95% for the run" in first["holds_at"]
  with pytest.raises(ConfigError, match="headline"):
    auditing.audit_targets(scores, keep, np.arange(10), 1e-4, headline="max")
  with pytest.raises(ConfigError, match="guesses"):
    auditing.audit(scores[0], keep[0], 1e-4, guesses="three_sided")


# ---- Power: the audit sees a model that memorises its canaries ---------------------------

def _memorisation_setup():
  """2 MLPs on 300 random points with random labels (every point a canary, included by the
  keep matrix's fair coins), and a DP-SGD plan for epsilon 0.5 at delta 1e-5."""
  config = load_config("default", "")
  config.model.hidden = (256,)
  config.train.update(epochs=30, batch_size=32, schedule="constant", learning_rate=1e-2,
                      strategy="vmap")
  config.dp.update(enabled=True, target_epsilon=0.5, delta=1e-5)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 16)).astype(np.float32)
  y = rng.integers(0, 4, 300).astype(np.int32)
  keep = membership.keep_matrix(0, 2, 300)
  return config, x, y, keep, dp_lib.plan(config.dp, keep, 32, 30)


def _memorisation_bound(config, x, y, keep, plan) -> float:
  """The run-level bound from the two models' losses on every point."""
  model = models.build(config.model, 4)
  result = from_config.train_from_config(model, config.train, x, y, keep, seed=0,
                                         log=lambda s: None, dp_plan=plan)
  logits = inference.query_logits(model, result.state, x, "none")
  scores = attacks.run("loss", attacks.AttackData(logits=logits, labels=y, keep=keep), [0, 1])
  return auditing.audit_targets(scores, keep, np.arange(len(y)), 1e-5)["epsilon_lower_bound"]


def test_audit_power_check_broken_dp_sgd_far_above_its_epsilon():
  """DP-SGD without noise memorises random labels and the audit bound lands far above the
  epsilon (0.5) the run claims; the same DP-SGD with its noise stays below it."""
  config, x, y, keep, plan = _memorisation_setup()
  claimed = plan.epsilon()
  broken = _memorisation_bound(config, x, y, keep, dataclasses.replace(plan, fault="no_noise"))
  correct = _memorisation_bound(config, x, y, keep, plan)
  assert claimed == pytest.approx(0.5, rel=0.01)
  assert broken >= 4 * claimed                 # e.g. 2.5: the fault is seen
  assert correct <= claimed                    # e.g. 0.0: a correct DP-SGD passes


@pytest.mark.slow
def test_fault_run_is_reported_not_private(tmp_path):
  """A run with dp.fault is NOT private in results.json and report.md, whatever epsilon it
  claims, and its audit says which views and canaries it scored and what it holds at."""
  config = load_config("default", "quick")
  config.model.hidden = (16,)
  config.train.update(epochs=1, strategy="vmap")
  config.attack.names = ("loss",)
  config.audit.num_canaries = 40
  config.dp.update(enabled=True, fault="no_clipping", noise_multiplier=1.0)
  results = pipeline.run(config, str(tmp_path), log=lambda s: None)
  assert results["privacy"]["private"] is False and results["privacy"]["fault"] == "no_clipping"
  assert "**NOT private**" in (tmp_path / "report.md").read_text()
  audit = results["privacy"]["audit"]
  assert results["privacy"]["epsilon_lower_bound"] == audit["epsilon_lower_bound"]
  assert audit["queries"] == ["image"] and len(audit["canaries"]) == 40
  assert "for the run" in audit["holds_at"] and len(audit["per_target"]) == 4
