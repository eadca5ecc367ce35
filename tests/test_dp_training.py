"""DP-SGD in the trainer: the DP train step, Poisson epochs, the plan, canaries and the audit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mia_jax import data
from mia_jax.data import canaries, membership
from mia_jax.errors import ConfigError
from mia_jax.models import cnn, mlp
from mia_jax.privacy import accounting, auditing
from mia_jax.training import dp, steps

from conftest import tiny_config


def dp_cfg(**kw):
  c = tiny_config().dp
  c.update(kw)
  return c


def toy(n=32, d=6, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n).astype(np.int32)
  x = (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32)
  return x, y


@pytest.mark.slow
def test_dp_step_is_clipped_sum_plus_noise_over_expected_batch():
  model = mlp.MLP(hidden=(8,), num_classes=3)
  x, y = toy()
  tx = optax.sgd(1.0)
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  mask = (np.arange(32) < 20).astype(np.float32)
  cfg = dp.DPStepConfig(clip_norm=0.5, noise_multiplier=0.7, expected_batch_size=16.0)
  key = jax.random.key(3)
  new, met = steps.train_step(state, x, y, mask, key, model=model, tx=tx,
                              cfg=steps.StepConfig(dp=cfg))
  # By hand: per-example grads clipped to 0.5, summed over the 20 real examples.
  def loss_i(p, xi, yi):
    logits = model.apply({"params": p}, xi[None])
    return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]
  g = jax.vmap(jax.grad(loss_i), in_axes=(None, 0, 0))(state.params, x, y)
  norms = jnp.sqrt(sum(jnp.sum(l.reshape(32, -1) ** 2, 1) for l in jax.tree.leaves(g)))
  w = jnp.minimum(1.0, 0.5 / norms) * mask
  clipped_sum = jax.tree.map(lambda l: jnp.tensordot(w, l, axes=1), g)
  step_delta = jax.tree.map(lambda a, b: (a - b) * 16.0, state.params, new.params)   # = sum + z
  noise = jax.tree.map(lambda d_, s: d_ - s, step_delta, clipped_sum)
  z = np.concatenate([np.ravel(l) for l in jax.tree.leaves(noise)])
  assert abs(z.std() - 0.7 * 0.5) < 0.1 * 0.35 and abs(z.mean()) < 0.05
  assert float(met["count"]) == 20
  # The same step without noise (sigma -> 0) is exactly the clipped sum / expected batch.
  cfg0 = dp.DPStepConfig(clip_norm=0.5, noise_multiplier=1e-12, expected_batch_size=16.0)
  new0, _ = steps.train_step(state, x, y, mask, key, model=model, tx=tx,
                             cfg=steps.StepConfig(dp=cfg0))
  jax.tree.map(lambda a, b, s: np.testing.assert_allclose((a - b) * 16.0, s, rtol=2e-4,
                                                          atol=2e-6),
               state.params, new0.params, clipped_sum)


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_dp_faults_break_the_step_as_named(method):
  """dp.fault (audit power checks only): 'no_noise' is exactly the clipped sum / B, and
  'no_clipping' the unclipped sum plus the very noise the correct step adds (same key, std
  sigma * C of the claimed clip norm), / B."""
  model = mlp.MLP(hidden=(8,), num_classes=3)
  x, y = toy()
  tx = optax.sgd(1.0)
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  mask = (np.arange(32) < 20).astype(np.float32)
  key = jax.random.key(3)

  def summed(clip):   # sum_i mask_i clip(g_i) by hand, from vmapped per-example gradients
    def loss_i(p, xi, yi):
      logits = model.apply({"params": p}, xi[None])
      return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]
    g = jax.vmap(jax.grad(loss_i), in_axes=(None, 0, 0))(state.params, x, y)
    norms = jnp.sqrt(sum(jnp.sum(l.reshape(32, -1) ** 2, 1) for l in jax.tree.leaves(g)))
    w = jnp.minimum(1.0, clip / norms) * mask
    return jax.tree.map(lambda l: jnp.tensordot(w, l, axes=1), g), norms

  def step_sum(fault):   # (params - new params) * B = the step's noisy sum
    cfg = dp.DPStepConfig(clip_norm=0.05, noise_multiplier=0.7, expected_batch_size=16.0,
                          method=method, fault=fault)
    new, _ = steps.train_step(state, x, y, mask, key, model=model, tx=tx,
                              cfg=steps.StepConfig(dp=cfg))
    return jax.tree.map(lambda a, b: (a - b) * 16.0, state.params, new.params)

  clipped, norms = summed(0.05)
  unclipped, _ = summed(np.inf)
  assert float(jnp.min(norms[:20])) > 0.05        # every real example is clipped: faults differ
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  jax.tree.map(close, step_sum("no_noise"), clipped)
  noise = jax.tree.map(lambda d_, s: d_ - s, step_sum(""), clipped)
  jax.tree.map(close, jax.tree.map(lambda d_, s: d_ - s, step_sum("no_clipping"), unclipped),
               noise)
  z = np.concatenate([np.ravel(l) for l in jax.tree.leaves(noise)])
  assert abs(z.std() - 0.7 * 0.05) < 0.1 * 0.035


def test_dp_fault_is_checked_and_recorded_in_the_plan():
  keep = membership.keep_matrix(0, 4, 400)
  p = dp.plan(dp_cfg(enabled=True, noise_multiplier=1.0, fault="no_noise"), keep, 20, 2)
  assert p.fault == "no_noise" and dp.plan(dp_cfg(enabled=True), keep, 20, 2).fault == ""
  with pytest.raises(ConfigError, match="dp.fault"):
    dp.check_config(dp_cfg(enabled=True, fault="no_accounting"))


def test_dp_noise_differs_between_steps_and_models():
  model = mlp.MLP(hidden=(4,), num_classes=3)
  x, y = toy()
  tx = optax.sgd(1.0)
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  cfg = steps.StepConfig(dp=dp.DPStepConfig(clip_norm=1.0, noise_multiplier=1.0,
                                            expected_batch_size=8.0))
  zero = np.zeros(32, np.float32)   # empty batch: the update is pure noise, and still applied
  outs = [steps.train_step(state, x, y, zero, jax.random.fold_in(jax.random.key(1), t),
                           model=model, tx=tx, cfg=cfg)[0].params for t in range(3)]
  flat = [np.concatenate([np.ravel(l) for l in jax.tree.leaves(o)]) for o in outs]
  p0 = np.concatenate([np.ravel(l) for l in jax.tree.leaves(state.params)])
  assert all(not np.allclose(f, p0) for f in flat)
  assert not np.allclose(flat[0], flat[1]) and not np.allclose(flat[1], flat[2])


def test_dp_refuses_batchnorm():
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch")
  x = np.zeros((4, 6, 6, 1), np.float32)
  tx = optax.sgd(0.1)
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  cfg = steps.StepConfig(dp=dp.DPStepConfig(clip_norm=1.0, noise_multiplier=1.0,
                                            expected_batch_size=4.0))
  with pytest.raises(ConfigError, match="norm=group"):
    steps.train_step(state, x, np.zeros(4, np.int32), np.ones(4), jax.random.key(0),
                     model=model, tx=tx, cfg=cfg)


def test_plan_calibrates_sigma_and_accounts_the_smallest_model():
  keep = membership.keep_matrix(0, 4, 400)
  p = dp.plan(dp_cfg(enabled=True, target_epsilon=4.0, accountant="rdp"), keep, 20, 5)
  n = int(keep.sum(1).min())
  assert p.num_examples == n and p.delta == pytest.approx(1.0 / n)
  assert p.steps == p.steps_per_epoch * 5
  assert p.epsilon() == pytest.approx(4.0, rel=0.02)
  direct = accounting.epsilon(p.noise_multiplier, 20 / n, p.steps, 1.0 / n, accountant="rdp")
  assert p.epsilon() == pytest.approx(direct)
  fixed = dp.plan(dp_cfg(enabled=True, noise_multiplier=1.3), keep, 20, 5)
  assert fixed.noise_multiplier == 1.3


def test_poisson_epoch_batches():
  keep = membership.keep_matrix(0, 3, 300)
  p = dp.plan(dp_cfg(enabled=True, noise_multiplier=1.0), keep, 30, 1)
  idx, mask = dp.poisson_epoch_batches(keep, p, seed=0, epoch=0)
  assert idx.shape == mask.shape == (p.steps_per_epoch, 3, p.max_batch)
  for m in range(3):
    assert keep[m, idx[:, m]].all()                     # only the model's own examples
    sizes = mask[:, m].sum(1)
    assert abs(sizes.mean() - 30) < 12                    # expected batch size 30
  again, _ = dp.poisson_epoch_batches(keep, p, seed=0, epoch=0)
  np.testing.assert_array_equal(idx, again)
  other, _ = dp.poisson_epoch_batches(keep, p, seed=0, epoch=1)
  assert not np.array_equal(idx, other)


def test_canaries_are_relabelled_pool_examples():
  c = tiny_config().data
  ds = data.load(c)
  planted, idx = canaries.plant(ds, 20, seed=1)
  assert len(idx) == 20 and len(np.unique(idx)) == 20
  assert np.all(planted.pool_y[idx] != ds.pool_y[idx])
  others = np.setdiff1d(np.arange(len(ds.pool_y)), idx)
  np.testing.assert_array_equal(planted.pool_y[others], ds.pool_y[others])
  assert planted.pool_y.max() < ds.num_classes
  with pytest.raises(ConfigError):
    canaries.plant(ds, len(ds.pool_y), seed=1)


def test_audit_targets_bounds():
  rng = np.random.default_rng(0)
  keep = rng.random((2, 1000)) < 0.5
  can = np.arange(0, 1000, 2)
  leaky = keep.astype(float) + 0.01 * rng.normal(size=keep.shape)    # perfect separation
  blind = rng.normal(size=keep.shape)
  a = auditing.audit_targets(leaky, keep, can, delta=1e-5)
  b = auditing.audit_targets(blind, keep, can, delta=1e-5)
  assert a["epsilon_lower_bound"] > 1.0 and len(a["per_target"]) == 2
  assert max(b["per_target"]) < 0.5 and b["epsilon_lower_bound"] < 0.5
