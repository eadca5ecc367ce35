"""The train step, the loss, the keys, the ensemble trainer as a primitive, early stopping,
resume and inference."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mia_jax import inference, mapping
from mia_jax.data import augment, membership
from mia_jax.models import cnn, mlp
from mia_jax.training import ensemble, from_config, keys, losses, optim, progress, samplers, steps

from conftest import tiny_config


def train_cfg(**kw):
  c = tiny_config().train
  c.update(kw)
  return c


def toy_data(n=64, shape=(6, 6, 1), classes=3, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n).astype(np.int32)
  x = rng.normal(size=(n,) + shape).astype(np.float32) + y.reshape((-1,) + (1,) * len(shape))
  return x, y


def stack(trees):
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


@pytest.mark.parametrize("model", [mlp.MLP(hidden=(16,), num_classes=3, dropout=0.3),
                                   cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch")])
def test_vmapped_step_equals_single_step_per_model(model):
  x, y = toy_data()
  tx = optim.make_optimizer(train_cfg(optimizer="sgd", l2=1e-3, learning_rate=0.1), 10)
  step = steps.make_train_step(label_smoothing=0.1, crop_padding=1, flip=True)
  init_keys = jax.random.split(jax.random.key(0), 3)
  states = [steps.init_state(model, tx, k, x[:1]) for k in init_keys]
  rng = np.random.default_rng(1)
  idx = rng.integers(0, len(y), (3, 8))
  mask = (rng.uniform(size=(3, 8)) < 0.8).astype(np.float32)
  step_keys = jax.random.split(jax.random.key(5), 3)
  vstate, vmet = jax.jit(jax.vmap(step))(stack(states), steps.Batch(x[idx], y[idx], mask),
                                         step_keys)
  for m in range(3):
    s, met = jax.jit(step)(states[m], steps.Batch(x[idx[m]], y[idx[m]], mask[m]), step_keys[m])
    got = jax.tree.map(lambda a: a[m], vstate)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, s)
    np.testing.assert_allclose(vmet["loss_sum"][m], met["loss_sum"], rtol=1e-5)


def test_empty_batch_leaves_state_untouched():
  model = mlp.MLP(hidden=(8,), num_classes=3)
  x, y = toy_data()
  tx = optim.make_optimizer(train_cfg(optimizer="sgd", l2=1e-2, weight_decay=1e-2), 10)
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  # Momentum: take one real step first so a no-op step would still move the params.
  state, _ = steps.train_step(state, steps.Batch(x[:8], y[:8], jnp.ones(8)), jax.random.key(1))
  after, met = steps.train_step(state, steps.Batch(x[:8], y[:8], jnp.zeros(8)),
                                jax.random.key(2))
  jax.tree.map(np.testing.assert_array_equal, after, state)
  assert int(state.step) == int(after.step) == 1
  assert float(met["count"]) == 0


def test_coupled_l2_and_decoupled_weight_decay_against_hand_computation():
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([0.5, 0.5])}
  lr, lam = 0.1, 0.01
  # SGD without momentum: both forms give w - lr * (g + lam * w).
  for kw in ({"l2": lam}, {"weight_decay": lam}):
    tx = optim.make_optimizer(train_cfg(optimizer="sgd", momentum=0.0, learning_rate=lr,
                                        schedule="constant", **kw), 1)
    upd, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(upd["w"], -lr * (grads["w"] + lam * params["w"]), rtol=1e-6)
  # Adam: coupled L2 enters the moments (first step: update = -lr * sign(g + lam w));
  # decoupled decay does not (first step: -lr * (sign(g) + lam w)).
  g_plus = grads["w"] + lam * params["w"]
  tx = optim.make_optimizer(train_cfg(optimizer="adam", learning_rate=lr, schedule="constant",
                                      l2=lam), 1)
  upd, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(upd["w"], -lr * g_plus / (np.abs(g_plus) + 1e-8), rtol=1e-5)
  tx = optim.make_optimizer(train_cfg(optimizer="adam", learning_rate=lr, schedule="constant",
                                      weight_decay=lam), 1)
  upd, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(upd["w"], -lr * (1.0 + lam * params["w"]), rtol=1e-5)


def test_piecewise_schedule_divides_at_epochs():
  sched = optim.learning_rate_schedule(train_cfg(schedule="piecewise", learning_rate=0.1,
                                                 lr_decay_epochs=(2, 4), lr_decay_factor=0.1), 10)
  np.testing.assert_allclose([sched(0), sched(19), sched(20), sched(40)], [0.1, 0.1, 0.01, 0.001],
                             rtol=1e-6)


def test_epoch_batches_use_only_kept_examples():
  keep = membership.keep_matrix(0, 4, 50)
  idx, mask = samplers.epoch_batches(keep, 8, seed=0, epoch=3)
  assert idx.shape == mask.shape and idx.shape[1:] == (4, 8)
  for m in range(4):
    real = idx[:, m][mask[:, m] > 0]
    assert keep[m, idx[:, m]].all()                              # padding too: own examples
    np.testing.assert_array_equal(np.sort(real), np.flatnonzero(keep[m]))   # each once
  idx2, _ = samplers.epoch_batches(keep, 8, seed=0, epoch=4)
  assert not np.array_equal(idx, idx2)
  # A model's batches do not depend on the other models of the ensemble.
  idx_sub, mask_sub = samplers.epoch_batches(keep[2:3], 8, seed=0, epoch=3, model_ids=[2])
  n = int(keep[2].sum())
  np.testing.assert_array_equal(idx_sub[:, 0].ravel()[:n], idx[:, 2].ravel()[:n])
  np.testing.assert_array_equal(mask_sub[:, 0].ravel()[:n], 1.0)


def test_augment_shapes_and_flip():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  out = augment.augment(jax.random.key(0), x, crop_padding=1, flip=True)
  assert out.shape == x.shape
  flipped = augment.random_flip(jax.random.key(3), x)
  for b in range(2):
    assert (np.array_equal(flipped[b], x[b]) or np.array_equal(flipped[b], x[b, :, ::-1]))
  q = augment.queries(x, "mirror")
  np.testing.assert_array_equal(q[1], x[:, :, ::-1])
  assert augment.queries(x.reshape(2, -1), "mirror").shape[0] == 1   # tabular: Q = 1


def test_augment_queries_are_the_training_views():
  """'augment' queries: shifts by 0 and +-p along each axis of the reflect-padded image (the
  windows random_crop can draw), each followed by its mirror when training flips."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 6, 2)).astype(np.float32)
  q = np.asarray(augment.queries(jnp.asarray(x), "augment", crop_padding=2, flip=True))
  assert q.shape == (10, 3, 5, 6, 2)
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
  views = []
  for dy, dx in [(0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)]:
    v = padded[:, 2 + dy:7 + dy, 2 + dx:8 + dx]
    views += [v, v[:, :, ::-1]]
  np.testing.assert_array_equal(q, np.stack(views))
  np.testing.assert_array_equal(q[0], x)                    # query 0: the example itself
  # every view is a window random_crop draws: crops of the same image cover the 5 shifts
  crops = np.asarray(jax.vmap(lambda k: augment.random_crop(k, jnp.asarray(x[:1]), 2)[0])(
      jax.random.split(jax.random.key(0), 400)))
  for v in views[::2]:
    assert any(np.array_equal(c, v[0]) for c in crops)
  assert augment.queries(jnp.asarray(x), "augment", 0, False).shape[0] == 1
  assert augment.queries(jnp.asarray(x), "augment", 0, True).shape[0] == 2
  assert augment.queries(jnp.asarray(x).reshape(3, -1), "augment", 2, True).shape[0] == 1
  with pytest.raises(ValueError, match="query kind"):
    augment.queries(jnp.asarray(x), "rotations")


def _train(tmp_path, strategy, epochs=3, ckpt=True, **kw):
  x, y = toy_data(n=40, shape=(5, 5, 1))
  keep = membership.keep_matrix(0, 3, 40)
  cfg = train_cfg(epochs=epochs, batch_size=8, strategy=strategy, **kw)
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch", dropout=0.2)
  return from_config.train_from_config(model, cfg, x, y, keep, seed=3, val=(x[:10], y[:10]),
                                       checkpoint_dir=str(tmp_path) if ckpt else None,
                                       log=lambda s: None), model, x


@pytest.mark.slow
def test_loop_and_vmap_strategies_train_the_same_models(tmp_path):
  a, _, _ = _train(tmp_path / "a", "vmap", ckpt=False)      # auto: im2col convolutions
  b, _, _ = _train(tmp_path / "b", "loop", ckpt=False)      # auto: forward convolutions
  assert (a.strategy, b.strategy) == ("vmap+im2col", "loop+forward")
  # The convolution's bias before BatchNorm has a zero gradient up to rounding, which Adam
  # scales up to the learning rate: it drifts apart (by 3e-3 here) under different rewrites,
  # and BatchNorm removes it from the function. Every other parameter agrees.
  pa, pb = dict(a.state.params), dict(b.state.params)
  pa["Conv_0"] = {"kernel": pa["Conv_0"]["kernel"]}
  pb["Conv_0"] = {"kernel": pb["Conv_0"]["kernel"]}
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6), pa, pb)


class Killed(Exception):
  pass


@pytest.mark.slow
def test_resume_after_interruption_is_bitwise_equal(tmp_path):
  full, _, _ = _train(tmp_path / "full", "vmap", epochs=4)

  def kill_after_epoch_2(line):
    if line.startswith("epoch 2/"):   # logged right after epoch 2's checkpoint is written
      raise Killed()

  x, y = toy_data(n=40, shape=(5, 5, 1))
  keep = membership.keep_matrix(0, 3, 40)
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch", dropout=0.2)
  run = functools.partial(from_config.train_from_config, model,
                          train_cfg(epochs=4, batch_size=8, strategy="vmap"), x, y, keep, seed=3,
                          val=(x[:10], y[:10]), checkpoint_dir=str(tmp_path / "cut"))
  with pytest.raises(Killed):
    run(log=kill_after_epoch_2)
  logs = []
  resumed = run(log=logs.append)             # the same command, started again
  assert resumed.resumed_from == 2 and "resumed" in logs[0]
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)
  assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]


def test_early_stopping_keeps_the_best_epoch(tmp_path):
  x, y = toy_data(n=40, shape=(5, 5, 1))
  keep = membership.keep_matrix(0, 2, 40)
  model = mlp.MLP(hidden=(8,), num_classes=3)
  cfg = train_cfg(epochs=30, batch_size=8, early_stopping_patience=2, learning_rate=0.05)
  vx, vy = x[:12], (y[:12] + 1) % 3      # a validation set the models cannot fit: stops early
  res = from_config.train_from_config(model, cfg, x, y, keep, seed=0, val=(vx, vy),
                                      log=lambda s: None)
  assert res.epochs_run < 30
  val = np.array([h["val_accuracy"] for h in res.history])     # [epochs, M]
  acc = steps.accuracy_fn(model.apply)(res.state.params, res.state.batch_stats, vx, vy)
  np.testing.assert_allclose(acc, val.max(axis=0), atol=1e-6)


def test_query_logits_are_eval_mode():
  """Dropout off and BatchNorm running statistics: repeated queries agree, and a batch of one
  example gives the same logits as the full batch (batch statistics would not)."""
  x, y = toy_data(n=16, shape=(5, 5, 1))
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch", dropout=0.5)
  tx = optax.sgd(0.1)
  keys = jax.random.split(jax.random.key(0), 2)
  state = jax.vmap(lambda k: steps.init_state(model, tx, k, x[:1]))(keys)
  state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.3, state.batch_stats))
  full = inference.query_logits(model, state, x, "mirror")
  assert full.shape == (2, 16, 2, 3)
  np.testing.assert_array_equal(full, inference.query_logits(model, state, x, "mirror"))
  one = inference.query_logits(model, state, x[3:4], "mirror", batch_size=1)
  np.testing.assert_allclose(one[:, 0], full[:, 3], rtol=1e-5, atol=1e-6)
  variables = {"params": jax.tree.map(lambda a: a[0], state.params),
               "batch_stats": jax.tree.map(lambda a: a[0], state.batch_stats)}
  train_mode, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)},
                              mutable=["batch_stats"])
  assert not np.allclose(train_mode, full[0, :, 0], atol=1e-3)


@pytest.mark.slow
def test_checkpoints_by_seconds_resume_bit_identical_from_an_earlier_epoch(tmp_path):
  """With checkpoint_seconds beyond the run, only the last epoch is saved; a run cut after
  epoch 2 then has no checkpoint, restarts, and still ends bit-identical; one cut after a save
  of epoch 1 (checkpoint_seconds 0 for that run) resumes from epoch 1."""
  full, _, _ = _train(tmp_path / "full", "vmap", epochs=4, checkpoint_seconds=1e9)
  assert sorted(os.listdir(tmp_path / "full")) == ["4"]          # the last epoch only

  def kill_after(epoch):
    def log(line):
      if line.startswith(f"epoch {epoch}/"):
        raise Killed()
    return log

  x, y = toy_data(n=40, shape=(5, 5, 1))
  keep = membership.keep_matrix(0, 3, 40)
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch", dropout=0.2)

  def run(every_s, log, folder="cut"):
    return from_config.train_from_config(
        model, train_cfg(epochs=4, batch_size=8, strategy="vmap", checkpoint_seconds=every_s),
        x, y, keep, seed=3, val=(x[:10], y[:10]), checkpoint_dir=str(tmp_path / folder), log=log)

  with pytest.raises(Killed):
    run(1e9, kill_after(2))
  assert not [d for d in os.listdir(tmp_path / "cut") if d.isdigit()]   # nothing saved yet
  again = run(1e9, lambda s: None)
  assert again.resumed_from == 0
  jax.tree.map(np.testing.assert_array_equal, again.state, full.state)
  with pytest.raises(Killed):
    run(0.0, kill_after(1), "cut1")
  logs = []
  resumed = run(1e9, logs.append, "cut1")
  assert resumed.resumed_from == 1 and "resumed" in logs[0]
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)
  assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]


def test_time_left_counts_the_epochs_and_their_checkpoints():
  # only the first epoch (compilation included) measured: an upper bound
  assert progress.time_left([5.0], [], 10, 0.0) == (10 * 5.0 + 10 * 5.0, True)
  # later epochs at their median; a save every epoch at the mean save
  left, bound = progress.time_left([5.0, 1.0, 3.0, 1.0], [0.5, 0.3], 4, 0.0)
  assert not bound and left == pytest.approx(4 * 1.0 + 4 * 0.4)
  # a save every 2 s of training: 4 epochs of 1 s are 4 s, 2 saves and the last one
  left, _ = progress.time_left([5.0, 1.0, 1.0], [0.5], 4, 2.0)
  assert left == pytest.approx(4.0 + 3 * 0.5)
  assert progress.time_left([5.0, 1.0], [0.5], 0, 2.0) == (0.0, False)


def test_softmax_cross_entropy_against_float64_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 4)) * 3
  labels = rng.integers(0, 4, 7)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for smoothing in (0.0, 0.2):
    target = (1 - smoothing) * np.eye(4)[labels] + smoothing / 4
    want = -(target * log_p).sum(-1)
    got = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.float32), labels, smoothing)
    assert got.shape == (7,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_keys_are_the_documented_fold_ins():
  got = keys.step_keys(11, [4, 0], [7, 9])
  assert got.shape == (2, 2)
  for row, m in enumerate([4, 0]):
    for col, t in enumerate([7, 9]):
      want = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
          jax.random.key(11), m), 1), t)
      np.testing.assert_array_equal(jax.random.key_data(got[row, col]),
                                    jax.random.key_data(want))
  np.testing.assert_array_equal(jax.random.key_data(keys.model_keys(11, [3])[0]),
                                jax.random.key_data(jax.random.fold_in(jax.random.key(11), 3)))


def test_apply_gradients_is_one_update_of_the_states_tx():
  params = {"w": jnp.array([1.0, -2.0])}
  tx = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1, momentum=0.9))
  state = steps.TrainState.create(apply_fn=None, params=params, tx=tx)
  grads = {"w": jnp.array([3.0, 4.0])}                 # norm 5: clipped to 0.5
  new = state.apply_gradients(grads)
  np.testing.assert_allclose(new.params["w"], params["w"] - 0.1 * grads["w"] / 10, rtol=1e-6)
  assert int(new.step) == 1 and new.tx is tx


class TwoLayer(nn.Module):
  """A user's own module (train: the flag every mia_jax step passes)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dropout(0.2, deterministic=not train)(nn.relu(nn.Dense(12)(x)))
    return nn.Dense(3)(x)


@pytest.mark.parametrize("mapper", ["vmap", "loop"])
def test_train_ensemble_of_a_user_module_equals_each_model_trained_alone(mapper):
  """The primitive on a user's module, optax chain, sampler and mapping trains what a plain
  Python loop of the jitted single-model step trains, model by model, on the sampler's batches
  with the trainer's keys (the slower reference path)."""
  x, y = toy_data(n=40, shape=(5,))
  keep = membership.keep_matrix(0, 3, 40)
  module = TwoLayer()
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  sampler = samplers.UniformSampler(keep, 8, seed=4)
  init = steps.init_ensemble(module, tx, keys.model_keys(4, range(3)), x[:1])
  mapping_obj = mapping.make_mapping(mapper)
  res = ensemble.train_ensemble(steps.train_step, init, sampler, mapping_obj, pool_x=x,
                                pool_y=y, epochs=2, seed=4, log=lambda s: None)
  step = jax.jit(steps.train_step)
  for m in range(3):
    state = jax.tree.map(lambda a: a[m], init)
    for epoch in range(2):
      idx, mask = sampler.epoch(epoch, np.array([m]))
      step_keys = keys.step_keys(4, [m], epoch * sampler.steps_per_epoch
                                 + np.arange(sampler.steps_per_epoch))
      for s in range(sampler.steps_per_epoch):
        batch = steps.Batch(x[idx[0, s]], y[idx[0, s]], mask[0, s].astype(np.float32))
        state, _ = step(state, batch, step_keys[0, s])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[m], b, rtol=1e-5, atol=1e-6),
                 res.state.params, state.params)
  assert [len(h["loss"]) for h in res.history] == [3, 3] and res.epochs_run == 2
