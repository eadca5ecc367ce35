"""Every mapping trains the same models; the CPU kernels equal lax with gradients; chunks of
models equal one chunk and resume; the logits store written to disk equals the one in memory."""

import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mia_jax import inference, kernels, mapping
from mia_jax.data import membership
from mia_jax.errors import ConfigError
from mia_jax.mapping import lanes as lanes_lib, loop, shared, xla_cpu
from mia_jax.models import cnn, mlp
from mia_jax.training import dp as dp_lib
from mia_jax.training import from_config, keys, optim, samplers, steps

from test_dp_training import dp_cfg
from test_training import toy_data, train_cfg


def close(a, b, rtol=2e-4, atol=2e-5):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


MODELS = {
    "mlp": mlp.MLP(hidden=(16,), num_classes=3),
    "cnn_bn": cnn.CNN(channels=(4, 4), num_classes=3, dense=8, norm="batch"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_strategy_trains_the_same_models(name):
  """Without dropout and augmentation (which draw per batch position, so differently on the
  shared batch) every mapping and convolution gives the same models, BatchNorm included."""
  model = MODELS[name]
  x, y = toy_data(n=40, shape=(6, 6, 1))
  keep = membership.keep_matrix(0, 3, 40)
  results = {}
  for strategy, conv in (("vmap", "lax"), ("loop", "lax"), ("shared", "lax"), ("vmap", "im2col"),
                         ("loop", "forward"), ("shared", "im2col"), ("auto", "auto")):
    cfg = train_cfg(epochs=2, batch_size=8, strategy=strategy, conv=conv, optimizer="sgd",
                    learning_rate=0.05)
    results[strategy, conv] = from_config.train_from_config(model, cfg, x, y, keep, seed=3,
                                                            log=lambda s: None)
  base = results["vmap", "lax"]
  for res in results.values():
    close(res.state.params, base.state.params)
    close(res.state.batch_stats, base.state.batch_stats)
    np.testing.assert_allclose(res.history[-1]["loss"], base.history[-1]["loss"], rtol=1e-4)
  assert results["auto", "auto"].strategy == ("loop+forward" if name == "cnn_bn"
                                              else "loop+2lanes")


def test_union_batches_masks_select_each_models_own_batch():
  keep = membership.keep_matrix(0, 4, 30)
  keep[0, np.flatnonzero(keep[0])[:3]] = False     # model 0: a shorter epoch (padded batches)
  idx, mask = samplers.UniformSampler(keep, 4, seed=0).epoch(1, np.arange(4))   # [M, S, B]
  union_idx, union_mask = shared.union_batches(idx, mask.astype(np.float32))
  for s in range(idx.shape[1]):
    for m in range(4):
      own = np.sort(idx[m, s][mask[m, s]])
      np.testing.assert_array_equal(np.sort(union_idx[s][union_mask[m, s, 0] > 0]), own)
      np.testing.assert_array_equal(np.sort(union_idx[s][union_mask[m, s, 1] > 0]),
                                    np.sort(idx[m, s]))


@pytest.mark.parametrize("conv", ["im2col", "forward"])
def test_rewritten_convolutions_and_pooling_equal_lax_with_gradients(conv):
  x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype(np.float32)
  for padding, ks in (("SAME", (3, 3)), ("VALID", (3, 2)), ("SAME", (2, 2))):
    layer = nn.Conv(4, ks, padding=padding)
    variables = layer.init(jax.random.key(0), x)

    def loss(apply_fn):
      return lambda v, a: jnp.sum(nn.max_pool(apply_fn(v, a), (2, 2), strides=(2, 2)) ** 2)
    want = jax.value_and_grad(loss(layer.apply), argnums=(0, 1))(variables, x)
    rewritten = kernels.with_window_max(jax.value_and_grad(
        loss(kernels.with_convolutions(layer.apply, conv)), argnums=(0, 1)))
    close(jax.jit(rewritten)(variables, x), want, rtol=1e-4, atol=1e-4)
    names = {e.primitive.name for e in xla_cpu.jaxpr_eqns(jax.make_jaxpr(rewritten)(variables,
                                                                                    x).jaxpr)}
    assert not names & {"reduce_window_max", "select_and_scatter_add"}


def test_window_max_gradient_goes_to_the_first_maximum_as_lax_does():
  x = np.array([[1., 3., 0., 0.], [3., 2., 0., 0.],       # ties: 3 at (0, 1) and (1, 0); zeros
                [5., 4., -1., 7.], [4., 5., 7., 7.]], np.float32).reshape(1, 4, 4, 1)
  lax_pool = lambda a: nn.max_pool(a, (2, 2), strides=(2, 2))
  weights = np.arange(1., 5.).reshape(1, 2, 2, 1)
  np.testing.assert_array_equal(kernels.window_max(x, (2, 2)), lax_pool(x))
  lax_grad = jax.grad(lambda a: (lax_pool(a) * weights).sum())
  want = lax_grad(x)
  got = jax.jit(jax.grad(lambda a: (kernels.window_max(a, (2, 2)) * weights).sum()))(x)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(jax.jit(kernels.with_window_max(lax_grad))(x), want)
  np.testing.assert_array_equal(got[0, :, :, 0], [[0, 1, 2, 0], [0, 0, 0, 0],
                                                  [3, 0, 0, 4], [0, 0, 0, 0]])
  # Odd sizes: VALID pooling drops the last row and column, and so does their gradient.
  odd = np.random.default_rng(1).normal(size=(2, 5, 7, 3)).astype(np.float32)
  square = jax.grad(lambda a: (lax_pool(a) ** 2).sum())
  np.testing.assert_array_equal(kernels.with_window_max(square)(odd), square(odd))


def test_kernels_rewrite_nothing_global_and_trace_in_threads_at_once():
  """The rewrites replace nothing in flax's namespace; two threads tracing them at once get
  what one thread alone gets."""
  model = MODELS["cnn_bn"]
  x, y = toy_data(n=8, shape=(6, 6, 1))
  pool_before = nn.max_pool
  apply_fn = kernels.with_convolutions(model.apply, "forward")
  state = steps.init_state(model, optax.sgd(0.1), jax.random.key(0), x[:1], apply_fn)
  step = kernels.with_window_max(steps.train_step)
  batch = steps.Batch(x, y, np.ones(8, np.float32))
  alone = jax.jit(step)(state, batch, jax.random.key(1))
  barrier = threading.Barrier(2, timeout=60)
  def trace():
    barrier.wait()
    return jax.jit(step)(state, batch, jax.random.key(1))
  both = lanes_lib.in_lanes([trace, trace], 2)
  for out in both:
    jax.tree.map(np.testing.assert_array_equal, out, alone)
  assert nn.max_pool is pool_before
  assert kernels.with_convolutions(apply_fn, "lax") == model.apply
  assert kernels.with_convolutions(model.apply, "im2col") == kernels.with_convolutions(
      apply_fn, "im2col")


def test_forward_convolutions_keep_a_cnn_step_in_the_loops_program():
  """Autodiff's convolution gradients are kept out of the loop's epoch program (XLA:CPU runs
  them far slower in a loop); with conv='forward' (or 'im2col') and the pooling rewritten every
  convolution of the step is a forward one, and the step runs inside it."""
  model = cnn.CNN(channels=(4, 4), num_classes=3, dense=8)
  x, y = toy_data(n=8, shape=(6, 6, 1))
  batch = steps.Batch(x, y, np.ones(8, np.float32))
  slow = {}
  for conv in kernels.CONVS:
    state = steps.init_state(model, optax.sgd(0.1), jax.random.key(0), x[:1],
                             kernels.with_convolutions(model.apply, conv))
    step, _ = from_config.make_step(train_cfg(), conv, optax.sgd(0.1))
    slow[conv] = xla_cpu.slow_in_loops(jax.make_jaxpr(step)(state, batch,
                                                            jax.random.key(0)).jaxpr)
  assert slow == {"lax": True, "im2col": False, "forward": False}


def test_compiler_options_this_xla_does_not_know_are_left_out():
  options = dict(xla_cpu.CPU_COMPILER_OPTIONS, xla_no_such_option_anywhere=True)
  known = dict(xla_cpu.known_options(options))
  assert "xla_no_such_option_anywhere" not in known
  assert known and all(options[k] == v for k, v in known.items())


def _chunked(tmp_path, chunk_size, epochs=3, log=lambda s: None, patience=0):
  x, y = toy_data(n=40, shape=(5, 5, 1))
  keep = membership.keep_matrix(0, 5, 40)
  # Model 4 keeps fewer examples than the others: its chunk has fewer steps per epoch.
  keep[4, np.flatnonzero(keep[4])[:6]] = False
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch", dropout=0.2)
  cfg = train_cfg(epochs=epochs, batch_size=8, strategy="vmap", chunk_size=chunk_size,
                  early_stopping_patience=patience)
  return from_config.train_from_config(model, cfg, x, y, keep, seed=3, val=(x[:10], y[:10]),
                                       checkpoint_dir=str(tmp_path) if tmp_path else None,
                                       log=log)


@pytest.mark.slow
def test_chunks_train_the_models_of_one_chunk():
  whole = _chunked(None, 0, patience=2)
  parts = _chunked(None, 2, patience=2)          # chunks of models 0-1, 2-3, 4
  close(parts.state, whole.state, rtol=1e-5, atol=1e-6)
  assert len(parts.history) == len(whole.history)
  np.testing.assert_allclose(parts.history[-1]["val_accuracy"], whole.history[-1]["val_accuracy"])


class Killed(Exception):
  pass


@pytest.mark.slow
def test_chunks_resume_after_interruption(tmp_path):
  full = _chunked(tmp_path / "full", 2)

  def kill_in_chunk_2(line):
    if line.startswith("chunk 2/3") and "epoch 2/" in line:
      raise Killed()

  with pytest.raises(Killed):
    _chunked(tmp_path / "cut", 2, log=kill_in_chunk_2)
  logs = []
  resumed = _chunked(tmp_path / "cut", 2, log=logs.append)
  assert any(l.startswith("chunk 1/3") and "resumed from the checkpoint of epoch 3" in l
             for l in logs)                                          # done: restored only
  assert any(l.startswith("chunk 2/3") and "resumed from the checkpoint of epoch 2" in l
             for l in logs)
  assert not any(l.startswith("chunk 1/3  epoch") for l in logs)     # not retrained
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_logits_store_on_disk_equals_memory(tmp_path, dtype):
  x, y = toy_data(n=12, shape=(5, 5, 1))
  keep = membership.keep_matrix(0, 2, 12)
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch")
  res = from_config.train_from_config(model, train_cfg(epochs=1, batch_size=4), x, y, keep,
                                      seed=0, log=lambda s: None)
  mem = inference.query_logits(model, res.state, x, "mirror", batch_size=5, dtype=dtype)
  disk = inference.query_logits(model, res.state, x, "mirror", batch_size=5, dtype=dtype,
                                out=str(tmp_path / "logits.npy"))
  assert mem.shape == disk.shape == (2, 12, 2, 3) and disk.dtype == dtype
  np.testing.assert_array_equal(mem, disk)
  np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), mem)


def test_lanes_resolve_for_the_loop_only():
  x = np.zeros((1, 4), np.float32)
  assert mapping.resolve("loop", MODELS["mlp"], x).lanes == mapping.auto.CPU_LANES
  assert mapping.resolve("loop", MODELS["mlp"], x, lanes=3).name == "loop+3lanes"
  assert mapping.resolve("loop", MODELS["mlp"], x, lanes=1).name == "loop"
  assert mapping.resolve("vmap", MODELS["mlp"], x).lanes == 1
  cnn_x = np.zeros((1, 6, 6, 1), np.float32)
  assert mapping.resolve("auto", MODELS["cnn_bn"], cnn_x).name == "loop+forward"
  assert mapping.resolve("vmap", MODELS["cnn_bn"], cnn_x).name == "vmap+im2col"
  with pytest.raises(ConfigError, match="loop strategy only"):
    mapping.resolve("vmap", MODELS["mlp"], x, lanes=2)
  with pytest.raises(ConfigError, match="integer >= 0"):
    mapping.resolve("loop", MODELS["mlp"], x, lanes=-1)


def test_unknown_strategy_is_a_config_error():
  with pytest.raises(ConfigError, match="strategy"):
    mapping.resolve("pmap", MODELS["mlp"], np.zeros((1, 4), np.float32))


def _epochs(name, conv, model, x, y, keep, active, *, epochs=2, batch_size=8, optimizer="adam",
            dp_plan=None, lanes=1):
  """`epochs` epochs of the mapping `name` (with `conv`) on the ensemble of `keep`, through the
  mapping's epoch alone: (host state, last metrics), and whether each epoch ran in the loop's
  program (loop only)."""
  cfg = train_cfg(optimizer=optimizer, learning_rate=0.01, batch_size=batch_size)
  sampler = samplers.UniformSampler(keep, batch_size, seed=3)
  step, tx = from_config.make_step(cfg, conv, optim.make_optimizer(cfg, sampler.steps_per_epoch),
                                   dp_plan)
  ids = np.arange(keep.shape[0], dtype=np.int32)
  state = steps.init_ensemble(model, tx, keys.model_keys(3, ids), jnp.asarray(x[:1]),
                              kernels.with_convolutions(model.apply, conv))
  mapper = mapping.make_mapping(name, lanes)
  pool = (jnp.asarray(x), jnp.asarray(y))
  used, metrics = [], None
  for e in range(epochs):
    idx, mask = sampler.epoch(e, ids)
    step_keys = keys.step_keys(3, ids, e * sampler.steps_per_epoch + np.arange(idx.shape[1]))
    mask = mask.astype(np.float32)
    if name == "loop":
      used.append(mapper.in_one_program(step, state, *pool, idx, mask))
    state, metrics = mapper.epoch(step, state, *pool, idx, mask, step_keys, active)
  return (mapper.get(state).replace(apply_fn=None, tx=None), mapper.get(metrics)), used


@pytest.mark.slow
@pytest.mark.parametrize("name,conv,optimizer", [("mlp", "lax", "adam"),
                                                 ("cnn_bn", "im2col", "sgd"),
                                                 ("cnn_bn", "lax", "sgd")])
def test_loop_epoch_in_one_program_equals_vmap(name, conv, optimizer):
  """The loop's whole-epoch program (steps in a loop, the batch gathered inside, the state
  donated) trains what vmap trains: a model with fewer examples (a shorter epoch) and a stopped
  one (active 0: untouched) included. With lax convolutions the loop runs one jitted step at a
  time. Two lanes (threads) compute what one lane computes, to the bit. (SGD for the CNN: a conv
  bias before BatchNorm has a zero gradient up to rounding, which Adam's normalisation turns
  into steps of the learning rate.)"""
  x, y = toy_data(n=40, shape=(6, 6, 1))
  keep = membership.keep_matrix(0, 3, 40)
  keep[0, np.flatnonzero(keep[0])[:5]] = False
  active = np.array([1.0, 0.0, 1.0], np.float32)
  model = MODELS[name]
  looped, used = _epochs("loop", conv, model, x, y, keep, active, optimizer=optimizer)
  vmapped, _ = _epochs("vmap", conv, model, x, y, keep, active, optimizer=optimizer)
  assert used == [conv != "lax" or name == "mlp"] * 2
  np.testing.assert_array_equal(looped[1]["count"][1], 0.0)
  close(looped, vmapped)
  untouched = _epochs("loop", conv, model, x, y, keep, active, epochs=0, optimizer=optimizer)[0]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[1], b[1]), looped[0],
               untouched[0])
  in_lanes, used_lanes = _epochs("loop", conv, model, x, y, keep, active, optimizer=optimizer,
                                 lanes=2)
  assert used_lanes == used
  jax.tree.map(np.testing.assert_array_equal, in_lanes, looped)


@pytest.mark.slow
def test_loop_runs_every_dp_step_as_vmap_does():
  """DP-SGD releases a noisy update on an empty batch too: the loop runs the empty steps of a
  model with fewer examples, as vmap does."""
  x, y = toy_data(n=40, shape=(6, 6, 1))
  keep = membership.keep_matrix(0, 2, 40)
  keep[0, np.flatnonzero(keep[0])[:9]] = False          # model 0: one step fewer than model 1
  assert samplers.steps_per_epoch(keep[:1], 8) < samplers.steps_per_epoch(keep, 8)
  plan = dp_lib.plan(dp_cfg(enabled=True, noise_multiplier=1.0, sampling="shuffle"), keep, 8, 2)
  active = np.ones(2, np.float32)
  model = MODELS["mlp"]
  looped, used = _epochs("loop", "lax", model, x, y, keep, active, dp_plan=plan)
  vmapped, _ = _epochs("vmap", "lax", model, x, y, keep, active, dp_plan=plan)
  assert used == [True, True]
  close(looped[0], vmapped[0])
  assert int(np.asarray(looped[0].step)[0]) == 2 * samplers.steps_per_epoch(keep, 8)


@pytest.mark.slow
def test_dp_cnn_runs_forward_convolutions_in_the_loops_program():
  """DP-SGD's clipping sees every convolution under conv='forward' and 'im2col' (the rewrite
  is registered inside its interceptor): the DP step of a CNN runs in the loop's epoch program
  and trains the models of vmap with lax convolutions."""
  x, y = toy_data(n=40, shape=(8, 8, 1))
  keep = membership.keep_matrix(0, 3, 40)
  model = cnn.CNN(channels=(4, 8), num_classes=3, dense=8, norm="group")
  plan = dp_lib.plan(dp_cfg(enabled=True, noise_multiplier=1.0, sampling="shuffle"), keep, 8, 2)
  active = np.ones(3, np.float32)
  base, _ = _epochs("vmap", "lax", model, x, y, keep, active, dp_plan=plan)
  for name, conv in (("loop", "forward"), ("vmap", "im2col")):
    res, used = _epochs(name, conv, model, x, y, keep, active, dp_plan=plan)
    assert used == ([True, True] if name == "loop" else [])
    close(res, base, rtol=1e-4, atol=1e-5)
  plan = dp_lib.plan(dp_cfg(enabled=True, noise_multiplier=1.0), keep, 8, 1)
  res = from_config.train_from_config(model, train_cfg(epochs=1, batch_size=8, strategy="auto"),
                                      x, y, keep, seed=0, log=lambda s: None, dp_plan=plan)
  assert res.strategy == "loop+forward"
  assert np.isfinite(res.history[-1]["loss"]).all()


def test_lane_bounds_cover_the_models():
  assert lanes_lib.lane_bounds(5, 2) == ((0, 2), (2, 5))
  assert lanes_lib.lane_bounds(1, 2) == ((0, 1),)
  assert lanes_lib.lane_bounds(7, 3) == ((0, 2), (2, 5), (5, 7))
  for lanes in (1, 2, 3, 9):
    bounds = lanes_lib.lane_bounds(7, lanes)
    assert len(bounds) == min(lanes, 7) and bounds[0][0] == 0 and bounds[-1][1] == 7
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:]))


def test_loop_skips_only_the_steps_without_real_examples():
  mask = np.zeros((2, 4, 3), np.float32)
  mask[0, [0, 2]] = 1.0
  mask[1, 3, 0] = 1.0
  order, counts = loop.real_steps(mask, np.array([1.0, 1.0]), every_step=False)
  assert counts.tolist() == [2, 1] and order[0, :2].tolist() == [0, 2] and order[1, 0] == 3
  order, counts = loop.real_steps(mask, np.array([1.0, 0.0]), every_step=False)
  assert counts.tolist() == [2, 0]
  order, counts = loop.real_steps(mask, np.array([1.0, 0.0]), every_step=True)
  assert counts.tolist() == [4, 4] and order[1].tolist() == [0, 1, 2, 3]


def test_in_lanes_keeps_the_order_and_raises_what_a_task_raises():
  met = threading.Barrier(3, timeout=30)    # passes only if three tasks run at once
  def task(i):
    if i < 3:
      met.wait()
    return i * i
  tasks = [lambda i=i: task(i) for i in range(7)]
  assert lanes_lib.in_lanes(tasks, 3) == [i * i for i in range(7)]
  assert lanes_lib.in_lanes(tasks[3:], 1) == [i * i for i in range(3, 7)]
  def fails():
    raise ValueError("lane failed")
  with pytest.raises(ValueError, match="lane failed"):
    lanes_lib.in_lanes(tasks[3:5] + [fails], 2)


@pytest.mark.slow
def test_loop_in_lanes_resumes_and_stops_early_as_vmap_does(tmp_path):
  """The MLP's loop on a CPU runs in two lanes: early stopping, checkpoints and resuming see
  the ensemble's stacked state, and the models equal vmap's."""
  x, y = toy_data(n=48, shape=(6,))
  keep = membership.keep_matrix(0, 5, 48)
  vx, vy = x[:12], (y[:12] + 1) % 3
  model = MODELS["mlp"]
  def run(strategy, ckpt=None, log=lambda s: None):
    cfg = train_cfg(epochs=5, batch_size=8, strategy=strategy, early_stopping_patience=2,
                    learning_rate=0.05)
    return from_config.train_from_config(model, cfg, x, y, keep, seed=1, val=(vx, vy),
                                         checkpoint_dir=ckpt, log=log)
  vmapped = run("vmap")
  full = run("loop", str(tmp_path / "full"))
  assert full.strategy == "loop+2lanes"
  assert full.epochs_run < 5                      # every model stopped early
  def kill_after_epoch_2(line):
    if line.startswith("epoch 2/"):
      raise Killed()
  with pytest.raises(Killed):
    run("loop", str(tmp_path / "cut"), kill_after_epoch_2)
  resumed = run("loop", str(tmp_path / "cut"))
  assert resumed.resumed_from == 2
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)
  close(full.state, vmapped.state)
  assert [h["val_accuracy"] for h in full.history] == [h["val_accuracy"] for h in vmapped.history]
