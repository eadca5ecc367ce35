"""DP-SGD in the trainer: the DP step and its optimiser, the planned sampler, the plan and its
accounting, canaries and the audit."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mia_jax import data
from mia_jax.data import canaries, membership
from mia_jax.errors import ConfigError
from mia_jax.models import cnn, mlp
from mia_jax.privacy import accounting, auditing, noise, sampling
from mia_jax.training import dp, losses, samplers
from mia_jax.training.state import Batch, TrainState

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


PLAN = dp.DPPlan(noise_multiplier=0.7, expected_batch_size=16.0, max_batch=32, steps_per_epoch=2,
                 steps=2, num_examples=64, delta=1e-5, sampling="poisson", accountant="pld",
                 clip_norm=0.05)


def _state_and_step(model, x, plan=PLAN, **kw):
  """A fresh state of `model` and plan's DP step, its tx sgd(1) after the privatiser (so the
  update is minus the privatised mean gradient)."""
  step, tx = dp.make_step(plan, losses.softmax_cross_entropy, tx=optax.sgd(1.0), **kw)
  params = model.init(jax.random.key(0), x[:1])["params"]
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx), step


def _summed(model, params, x, y, mask, clip):
  """sum_i mask_i clip(g_i) by hand, from vmapped per-example gradients; and the norms."""
  def loss_i(p, xi, yi):
    logits = model.apply({"params": p}, xi[None])
    return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]
  g = jax.vmap(jax.grad(loss_i), in_axes=(None, 0, 0))(params, x, y)
  norms = jnp.sqrt(sum(jnp.sum(v.reshape(len(x), -1) ** 2, 1) for v in jax.tree.leaves(g)))
  w = jnp.minimum(1.0, clip / norms) * mask
  return jax.tree.map(lambda v: jnp.tensordot(w, v, axes=1), g), norms


def _noisy_sum(state, new):
  """(params - new params) * B: the step's noisy sum under sgd(1)."""
  return jax.tree.map(lambda a, b: (a - b) * PLAN.expected_batch_size, state.params, new.params)


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_dp_step_is_clipped_sum_plus_the_privatisers_noise_over_expected_batch(method):
  """The step's update is (sum_i mask_i clip_C(g_i) + z) / B with z the privatiser's noise
  under noise_key fold_in(step key, NOISE_STREAM) at its count 0 (std sigma C); dp.fault
  'no_noise' is exactly the clipped sum / B, and 'no_clipping' the unclipped sum plus the very
  noise the correct step adds (scaled to the claimed C); the step counts, and never skips."""
  model = mlp.MLP(hidden=(8,), num_classes=3)
  x, y = toy()
  mask = (np.arange(32) < 20).astype(np.float32)
  key = jax.random.key(3)
  batch = Batch(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))

  def noisy_sum(fault):
    state, step = _state_and_step(model, x, dataclasses.replace(PLAN, fault=fault,
                                                                clipping=method))
    assert step.runs_empty_batches
    new, metrics = jax.jit(step)(state, batch, key)
    assert int(new.step) == 1 and float(metrics["count"]) == 20
    assert np.isnan(float(metrics["correct"]))
    return state, _noisy_sum(state, new), metrics

  state, correct, metrics = noisy_sum("")
  clipped, norms = _summed(model, state.params, x, y, mask, PLAN.clip_norm)
  unclipped, _ = _summed(model, state.params, x, y, mask, np.inf)
  assert float(jnp.min(norms[:20])) > PLAN.clip_norm   # every real example clipped
  privatizer = noise.gaussian_privatizer(noise_multiplier=0.7, l2_sensitivity=PLAN.clip_norm,
                                         expected_batch_size=1.0)
  zeros = jax.tree.map(jnp.zeros_like, state.params)
  want_noise, _ = privatizer.update(zeros, privatizer.init(zeros),
                                    noise_key=jax.random.fold_in(key, dp.NOISE_STREAM))
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  jax.tree.map(close, jax.tree.map(jnp.subtract, correct, clipped), want_noise)
  z = np.concatenate([np.ravel(v) for v in jax.tree.leaves(want_noise)])
  assert abs(z.std() - 0.7 * PLAN.clip_norm) < 0.15 * 0.7 * PLAN.clip_norm
  per_example = losses.softmax_cross_entropy(model.apply({"params": state.params}, x), y)
  assert float(metrics["loss_sum"]) == pytest.approx(float(jnp.sum(per_example * mask)),
                                                     rel=1e-5)
  jax.tree.map(close, noisy_sum("no_noise")[1], clipped)
  jax.tree.map(close, jax.tree.map(jnp.subtract, noisy_sum("no_clipping")[1], unclipped),
               want_noise)


def test_dp_noise_is_fresh_every_step_and_model_and_reproducible():
  """Empty batches (no real example) still update, by pure noise; the noise differs between
  step keys, between models of a vmapped ensemble and between counts of one key; the same
  (state, batch, key) redraws the same step (resume)."""
  model = mlp.MLP(hidden=(4,), num_classes=3)
  x, y = toy()
  state, step = _state_and_step(model, x)
  step = jax.jit(step)
  empty = Batch(jnp.asarray(x), jnp.asarray(y), jnp.zeros(32, jnp.float32))
  flat = lambda s: np.concatenate([np.ravel(v) for v in jax.tree.leaves(s.params)])
  keys = [jax.random.fold_in(jax.random.key(1), t) for t in range(3)]
  outs = [flat(step(state, empty, k)[0]) for k in keys]
  assert all(not np.allclose(o, flat(state)) for o in outs)
  assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])
  np.testing.assert_array_equal(outs[1], flat(step(state, empty, keys[1])[0]))
  once = step(state, empty, keys[0])[0]
  again = step(once, empty, keys[0])[0]           # same key, next count: fresh noise
  assert not np.allclose(flat(again) - flat(once), flat(once) - flat(state))
  stacked = jax.tree.map(lambda v: jnp.stack([v, v]), state)
  both, _ = jax.jit(jax.vmap(step, in_axes=(0, None, 0)))(stacked, empty, jnp.stack(keys[:2]))
  for m in range(2):
    np.testing.assert_allclose(flat(jax.tree.map(lambda v, m=m: v[m], both)), outs[m],
                               rtol=1e-6, atol=1e-7)


def test_dp_fault_is_checked_and_recorded_in_the_plan():
  keep = membership.keep_matrix(0, 4, 400)
  p = dp.plan(dp_cfg(enabled=True, noise_multiplier=1.0, fault="no_noise"), keep, 20, 2)
  assert p.fault == "no_noise" and dp.plan(dp_cfg(enabled=True), keep, 20, 2).fault == ""
  with pytest.raises(ConfigError, match="dp.fault"):
    dp.check_config(dp_cfg(enabled=True, fault="no_accounting"))


def test_dp_refuses_batchnorm():
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch")
  x = np.zeros((4, 6, 6, 1), np.float32)
  step, tx = dp.make_step(PLAN, losses.softmax_cross_entropy, tx=optax.sgd(0.1))
  variables = model.init(jax.random.key(0), x[:1])
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                            batch_stats=variables["batch_stats"])
  with pytest.raises(ConfigError, match="norm=group"):
    step(state, Batch(x, np.zeros(4, np.int32), np.ones(4, np.float32)), jax.random.key(0))


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


def test_make_sampler_is_the_one_the_plan_accounts_for():
  """Poisson: privacy's PoissonSampler with the plan's padded batch and steps, model m's rate
  B / n_m, the plan's accounted rate the largest of them (the smallest model), truncation
  within the bound; shuffle: the trainer's uniform batches, each example once per epoch."""
  keep = membership.keep_matrix(0, 3, 300)
  p = dp.plan(dp_cfg(enabled=True, noise_multiplier=1.0), keep, 30, 1)
  sampler = dp.make_sampler(p, keep, seed=4)
  assert isinstance(sampler, sampling.PoissonSampler)
  assert (sampler.batch_size, sampler.steps_per_epoch) == (p.max_batch, p.steps_per_epoch)
  np.testing.assert_allclose(sampler.sampling_rates, 30 / keep.sum(axis=1))
  assert p.sampling_rate == pytest.approx(sampler.sampling_rates.max())
  assert sampler.truncation_prob <= 1e-6   # p.epsilon() accounts the truncation at max_batch
  shuffled = dp.plan(dp_cfg(enabled=True, noise_multiplier=1.0, sampling="shuffle"), keep, 30, 1)
  uniform = dp.make_sampler(shuffled, keep, seed=4)
  assert isinstance(uniform, samplers.UniformSampler) and uniform.batch_size == 30
  idx, mask = uniform.epoch(0, np.arange(3))
  for m in range(3):
    assert sorted(idx[m][mask[m]].tolist()) == np.flatnonzero(keep[m]).tolist()


def test_epsilon_by_epoch_grows_to_the_rdp_figure_of_the_run():
  keep = membership.keep_matrix(0, 3, 300)
  p = dp.plan(dp_cfg(enabled=True, noise_multiplier=1.0, accountant="rdp"), keep, 30, 3)
  by_epoch = dp.epsilon_by_epoch(p, 3)
  assert by_epoch[0] < by_epoch[1] < by_epoch[2]
  assert by_epoch[-1] == pytest.approx(p.epsilon(), rel=1e-6)   # RDP of all steps at once


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
