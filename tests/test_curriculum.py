"""Curriculum learning: difficulty scores, pacing schedules and easy-first epoch batches."""

import jax
import numpy as np
import pytest

from mia_jax.data import membership
from mia_jax.errors import ConfigError
from mia_jax.training import curriculum, from_config, samplers


def test_difficulty_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(9, 4))
  labels = rng.integers(0, 4, 9)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  py = p[np.arange(9), labels]
  np.testing.assert_allclose(curriculum.difficulty(logits, labels, "loss"), -np.log(py))
  np.testing.assert_allclose(curriculum.difficulty(logits, labels, "confidence"), 1 - py)
  with pytest.raises(ConfigError):
    curriculum.difficulty(logits, labels, "margin")
  with pytest.raises(ConfigError):
    curriculum.difficulty(logits[None], labels)


@pytest.mark.parametrize("kind", curriculum.PACINGS)
def test_pacing_starts_small_grows_and_ends_at_all(kind):
  frac = curriculum.pacing_schedule(kind, 9, start=0.25, num_steps=4)
  assert frac.shape == (9,) and frac[0] == pytest.approx(0.25) and frac[-1] == pytest.approx(1.0)
  assert (np.diff(frac) >= 0).all()
  if kind == "step":
    assert len(np.unique(frac)) == 5
  if kind == "root":
    assert (frac >= curriculum.pacing_schedule("linear", 9, start=0.25) - 1e-12).all()
  with pytest.raises(ConfigError):
    curriculum.pacing_schedule("cubic", 9)


def test_curriculum_batches_follow_difficulty():
  keep = membership.keep_matrix(0, 4, 60)
  diff = np.random.default_rng(1).permutation(60).astype(float)   # distinct difficulties
  pacing = curriculum.pacing_schedule("linear", 5, start=0.3)
  full_idx, _ = samplers.epoch_batches(keep, 8, seed=0, epoch=0)
  for epoch, frac in enumerate(pacing):
    idx, mask = samplers.curriculum_epoch_batches(keep, diff, pacing, 8, 0, epoch)
    assert idx.shape == mask.shape == full_idx.shape               # S fixed: one compile
    assert idx.dtype == np.int32 and mask.dtype == np.float32
    for m in range(4):
      own = np.flatnonzero(keep[m])
      easiest = own[np.argsort(diff[own])][:int(np.ceil(frac * len(own) - 1e-9))]
      real = idx[:, m][mask[:, m] > 0]
      np.testing.assert_array_equal(np.sort(real), np.sort(easiest))   # each open one once
      assert keep[m, idx[:, m]].all()                                  # padding: own examples
      if epoch == 0:
        assert diff[real].max() < np.sort(diff[own])[len(easiest)]     # only easy ones
  # The last epoch holds every kept example, like a plain epoch.
  np.testing.assert_array_equal(mask, samplers.epoch_batches(keep, 8, seed=0, epoch=4)[1])


def test_curriculum_batches_per_model_independent_and_checked():
  keep = membership.keep_matrix(0, 4, 60)
  diff = np.arange(60.0)
  idx, mask = samplers.curriculum_epoch_batches(keep, diff, 0.5, 8, 3, 1)
  sub, sub_mask = samplers.curriculum_epoch_batches(keep[2:3], diff, 0.5, 8, 3, 1,
                                                    model_ids=[2])
  n = int(mask[:, 2].sum())
  np.testing.assert_array_equal(sub[:, 0].ravel()[:n], idx[:, 2].ravel()[:n])
  with pytest.raises(ConfigError):
    samplers.curriculum_epoch_batches(keep, diff, [0.5, 1.0], 8, 0, epoch=2)
  with pytest.raises(ConfigError):
    samplers.curriculum_epoch_batches(keep, diff[:10], 0.5, 8, 0, 0)


def test_curriculum_sampler_is_the_epoch_batches_per_model():
  keep = membership.keep_matrix(0, 4, 60)
  diff = np.random.default_rng(2).normal(size=60)
  pacing = curriculum.pacing_schedule("root", 3, start=0.4)
  sampler = samplers.CurriculumSampler(keep, 8, 5, diff, pacing)
  idx, mask = samplers.curriculum_epoch_batches(keep, diff, pacing, 8, 5, 1)
  got_idx, got_mask = sampler.epoch(1, np.arange(4))
  np.testing.assert_array_equal(got_idx, idx.transpose(1, 0, 2))
  np.testing.assert_array_equal(got_mask, mask.transpose(1, 0, 2) > 0)
  sub_idx, _ = sampler.epoch(1, np.array([3, 1]))          # global ids pick the rows
  np.testing.assert_array_equal(sub_idx, got_idx[[3, 1]])
  assert sampler.steps_per_epoch == samplers.steps_per_epoch(keep, 8) == got_idx.shape[1]
  with pytest.raises(ConfigError, match="difficulty"):
    samplers.CurriculumSampler(keep, 8, 5, diff[:9], pacing)


def _curriculum_cfg(strategy="loop", **kw):
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  cfg = tiny_config().train
  cfg.update(epochs=1, batch_size=8, strategy=strategy, optimizer="adam", schedule="constant")
  cfg.curriculum.update({"enabled": True, "pacing": "step", "start": 0.5, "num_steps": 1,
                         "ramp_epochs": 2, **kw})
  return cfg


def _toy(n=48, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, n).astype(np.int32)
  return rng.normal(size=(n, 5)).astype(np.float32) + y[:, None], y, rng.normal(size=n)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_curriculum_training_opens_only_the_easiest_examples_first(strategy):
  """Epoch 0 of a 2-epoch ramp from 0.5 trains each model on exactly the easiest half of its
  own examples: the same models as plain training on that half (masked steps are no-ops)."""
  from mia_jax.models import mlp  # pylint: disable=import-outside-toplevel
  x, y, diff = _toy()
  keep = membership.keep_matrix(1, 2, len(y))
  model = mlp.MLP(hidden=(8,), num_classes=3)
  cfg = _curriculum_cfg(strategy)
  train = lambda cfg, keep, **kw: from_config.train_from_config(model, cfg, x, y, keep, seed=2,
                                                                log=lambda s: None, **kw)
  cur = train(cfg, keep, difficulty=diff)
  plain_cfg = _curriculum_cfg(strategy)
  plain_cfg.curriculum.enabled = False
  easy = curriculum.open_keep(keep, diff, 0.5)
  plain = train(plain_cfg, easy)
  for a, b in zip(jax.tree.leaves(cur.state.params), jax.tree.leaves(plain.state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # and differs from training on all kept examples
  plain_cfg_all = _curriculum_cfg(strategy)
  plain_cfg_all.curriculum.enabled = False
  full = train(plain_cfg_all, keep)
  assert not np.allclose(jax.tree.leaves(full.state.params)[0],
                         jax.tree.leaves(cur.state.params)[0])


def test_schedule_for_ramps_then_opens_everything():
  cfg = _curriculum_cfg(pacing="linear", start=0.25, ramp_epochs=4).curriculum
  np.testing.assert_allclose(curriculum.schedule_for(cfg, 6), [0.25, 0.5, 0.75, 1, 1, 1])
  np.testing.assert_allclose(curriculum.schedule_for(cfg, 2), [0.25, 0.5])
  cfg.ramp_epochs = 0
  np.testing.assert_allclose(curriculum.schedule_for(cfg, 3), [0.25, 0.625, 1.0])


def test_curriculum_training_needs_difficulty_and_refuses_dp():
  from mia_jax.models import mlp  # pylint: disable=import-outside-toplevel
  from mia_jax.training import dp as dp_lib  # pylint: disable=import-outside-toplevel
  x, y, diff = _toy()
  keep = membership.keep_matrix(1, 2, len(y))
  model = mlp.MLP(hidden=(8,), num_classes=3)
  train = lambda cfg, **kw: from_config.train_from_config(model, cfg, x, y, keep, seed=0,
                                                          log=lambda s: None, **kw)
  with pytest.raises(ConfigError, match="difficulty"):
    train(_curriculum_cfg())
  with pytest.raises(ConfigError, match="difficulty"):
    train(_curriculum_cfg(), difficulty=diff[:5])
  with pytest.raises(ConfigError, match="pacing"):
    train(_curriculum_cfg(pacing="cubic"), difficulty=diff)
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  dpc = tiny_config().dp
  dpc.enabled = True
  plan = dp_lib.plan(dpc, keep, 8, 1)
  with pytest.raises(ConfigError, match="DP-SGD"):
    train(_curriculum_cfg(), difficulty=diff, dp_plan=plan)


def test_reference_difficulty_ranks_by_a_model_trained_on_held_out_data():
  """The reference model learns the held-out data's rule: examples whose label contradicts the
  rule (mislabelled) come out harder than the rest."""
  from mia_jax.models import mlp  # pylint: disable=import-outside-toplevel
  x, y, _ = _toy(n=400, seed=3)
  cfg = _curriculum_cfg(reference_epochs=15)
  cfg.learning_rate = 1e-2
  y_noisy = y.copy()
  flipped = np.arange(200, 400, 10)
  y_noisy[flipped] = (y[flipped] + 1) % 3
  d = from_config.reference_difficulty(mlp.MLP(hidden=(8,), num_classes=3), cfg, x[:200],
                                       y[:200], x[200:], y_noisy[200:], seed=0)
  assert d.shape == (200,)
  wrong = np.isin(np.arange(200, 400), flipped)
  assert d[wrong].mean() > d[~wrong].mean() + 1.0
  with pytest.raises(ConfigError, match="val_size"):
    from_config.reference_difficulty(mlp.MLP(hidden=(8,), num_classes=3), cfg, x[:0], y[:0],
                                     x, y, seed=0)
