"""Every strategy trains the same models; chunks of models equal one chunk and resume; the
logits store written to disk equals the one in memory."""

import threading
from unittest import mock

import jax
import numpy as np
import pytest

from mia_jax import inference
from mia_jax.data import membership
from mia_jax.models import cnn, mlp
from mia_jax.errors import ConfigError
from mia_jax.training import ensemble, strategies

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
    results[strategy, conv] = ensemble.train_ensemble(model, cfg, x, y, keep, seed=3,
                                                      log=lambda s: None)
  base = results["vmap", "lax"]
  for key, res in results.items():
    close(res.state.params, base.state.params)
    close(res.state.batch_stats, base.state.batch_stats)
    np.testing.assert_allclose(res.history[-1]["loss"], base.history[-1]["loss"], rtol=1e-4)
  assert results["auto", "auto"].strategy == ("loop+forward" if name == "cnn_bn"
                                              else "loop+2lanes")


def test_union_batches_masks_select_each_models_own_batch():
  keep = membership.keep_matrix(0, 4, 30)
  keep[0, np.flatnonzero(keep[0])[:3]] = False     # model 0: a shorter epoch (padded batches)
  idx, mask = ensemble.epoch_batches(keep, 4, seed=0, epoch=1)
  uidx, umask = strategies.union_batches(idx, mask)
  for s in range(idx.shape[0]):
    for m in range(4):
      own = np.sort(idx[s, m][mask[s, m] > 0])
      np.testing.assert_array_equal(np.sort(uidx[s][umask[s, m, 0] > 0]), own)
      np.testing.assert_array_equal(np.sort(uidx[s][umask[s, m, 1] > 0]), np.sort(idx[s, m]))


@pytest.mark.parametrize("conv", ["im2col", "forward"])
def test_rewritten_convolutions_and_pooling_equal_lax_with_gradients(conv):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype(np.float32)
  for padding, ks in (("SAME", (3, 3)), ("VALID", (3, 2)), ("SAME", (2, 2))):
    layer = nn.Conv(4, ks, padding=padding)
    variables = layer.init(jax.random.key(0), x)

    def f(v, a):
      return jax.numpy.sum(nn.max_pool(layer.apply(v, a), (2, 2), strides=(2, 2)) ** 2)
    want = jax.value_and_grad(f, argnums=(0, 1))(variables, x)
    got = strategies.with_conv(jax.value_and_grad(f, argnums=(0, 1)), conv)(variables, x)
    close(got, want, rtol=1e-4, atol=1e-4)


def test_window_max_gradient_goes_to_the_first_maximum_as_lax_does():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = np.array([[1., 3., 0., 0.], [3., 2., 0., 0.],       # ties: 3 at (0, 1) and (1, 0); zeros
                [5., 4., -1., 7.], [4., 5., 7., 7.]], np.float32).reshape(1, 4, 4, 1)
  lax_pool = lambda a: nn.max_pool(a, (2, 2), strides=(2, 2))
  ours = lambda a: strategies.window_max(a, (2, 2))
  weights = np.arange(1., 5.).reshape(1, 2, 2, 1)
  np.testing.assert_array_equal(ours(x), lax_pool(x))
  want = jax.grad(lambda a: (lax_pool(a) * weights).sum())(x)
  got = jax.jit(jax.grad(lambda a: (ours(a) * weights).sum()))(x)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[0, :, :, 0], [[0, 1, 2, 0], [0, 0, 0, 0],
                                                  [3, 0, 0, 4], [0, 0, 0, 0]])


def test_forward_convolutions_keep_a_cnn_step_in_the_loops_program():
  """Autodiff's convolution gradients are kept out of the loop's epoch program (XLA:CPU runs
  them 40x slower in a loop); with conv='forward' every convolution of the step is a forward
  one, and the step runs inside it."""
  import functools  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from mia_jax.training import steps  # pylint: disable=g-import-not-at-top
  model = cnn.CNN(channels=(4, 4), num_classes=3, dense=8)
  tx = optax.sgd(0.1)
  state = steps.init_state(model, tx, jax.random.key(0), np.zeros((1, 6, 6, 1), np.float32))
  step = functools.partial(steps.train_step, model=model, tx=tx, cfg=steps.StepConfig())
  x, y = toy_data(n=8, shape=(6, 6, 1))
  slow = {}
  for conv in strategies.CONVS:
    jaxpr = jax.make_jaxpr(strategies.with_conv(step, conv))(state, x, y, np.ones(8, np.float32),
                                                             jax.random.key(0))
    slow[conv] = strategies._slow_in_loops(jaxpr.jaxpr)  # pylint: disable=protected-access
  assert slow == {"lax": True, "im2col": False, "forward": False}


def test_compiler_options_this_xla_does_not_know_are_left_out(monkeypatch):
  monkeypatch.setitem(strategies._CPU_COMPILER_OPTIONS,  # pylint: disable=protected-access
                      "xla_no_such_option_anywhere", True)
  strategies._cpu_compiler_options.cache_clear()  # pylint: disable=protected-access
  try:
    known = dict(strategies._cpu_compiler_options())  # pylint: disable=protected-access
    assert "xla_no_such_option_anywhere" not in known
    options = strategies._CPU_COMPILER_OPTIONS  # pylint: disable=protected-access
    assert known and all(options[k] == v for k, v in known.items())
  finally:
    strategies._cpu_compiler_options.cache_clear()  # pylint: disable=protected-access


def _chunked(tmp_path, chunk_size, epochs=3, log=lambda s: None, patience=0):
  x, y = toy_data(n=40, shape=(5, 5, 1))
  keep = membership.keep_matrix(0, 5, 40)
  # Model 4 keeps fewer examples than the others: its chunk has fewer steps per epoch.
  keep[4, np.flatnonzero(keep[4])[:6]] = False
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch", dropout=0.2)
  cfg = train_cfg(epochs=epochs, batch_size=8, strategy="vmap", chunk_size=chunk_size,
                  early_stopping_patience=patience)
  return ensemble.train_ensemble(model, cfg, x, y, keep, seed=3, val=(x[:10], y[:10]),
                                 checkpoint_dir=str(tmp_path) if tmp_path else None, log=log)


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
  res = ensemble.train_ensemble(model, train_cfg(epochs=1, batch_size=4), x, y, keep, seed=0,
                                log=lambda s: None)
  mem = inference.query_logits(model, res.state, x, "mirror", batch_size=5, dtype=dtype)
  disk = inference.query_logits(model, res.state, x, "mirror", batch_size=5, dtype=dtype,
                                out=str(tmp_path / "logits.npy"))
  assert mem.shape == disk.shape == (2, 12, 2, 3) and disk.dtype == dtype
  np.testing.assert_array_equal(mem, disk)
  np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), mem)


def test_lanes_resolve_for_the_loop_only():
  x = np.zeros((1, 4), np.float32)
  assert strategies.resolve("loop", MODELS["mlp"], x).lanes == strategies.CPU_LANES
  assert strategies.resolve("loop", MODELS["mlp"], x, lanes=3).name == "loop+3lanes"
  assert strategies.resolve("loop", MODELS["mlp"], x, lanes=1).name == "loop"
  assert strategies.resolve("vmap", MODELS["mlp"], x).lanes == 1
  cnn_x = np.zeros((1, 6, 6, 1), np.float32)
  assert strategies.resolve("auto", MODELS["cnn_bn"], cnn_x).name == "loop+forward"
  with pytest.raises(ConfigError, match="loop strategy only"):
    strategies.resolve("vmap", MODELS["mlp"], x, lanes=2)
  with pytest.raises(ConfigError, match="integer >= 0"):
    strategies.resolve("loop", MODELS["mlp"], x, lanes=-1)


def test_unknown_strategy_is_a_config_error():
  with pytest.raises(ConfigError, match="strategy"):
    strategies.resolve("pmap", MODELS["mlp"], np.zeros((1, 4), np.float32))


def _epochs(strategy, model, step_cfg, x, y, keep, active, epochs=2, batch_size=8,
            optimizer="adam"):
  """`epochs` epochs of strategy.epoch_fn on the ensemble of `keep` (the trainer's inputs)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mia_jax.training import optim  # pylint: disable=g-import-not-at-top
  cfg = train_cfg(optimizer=optimizer, learning_rate=0.01, batch_size=batch_size)
  spe = ensemble.steps_per_epoch(keep, batch_size)
  tx = optim.make_optimizer(cfg, spe)
  ids = np.arange(keep.shape[0], dtype=np.int32)
  state = ensemble.init_ensemble(model, tx, 3, keep.shape[0], jnp.asarray(x[:1]), ids)
  run = strategy.epoch_fn(model, tx, step_cfg)
  state = strategy.running(state)
  out, metrics = [], None
  for e in range(epochs):
    idx, mask = ensemble.epoch_batches(keep, batch_size, 3, e, ids)
    args = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx), jnp.asarray(mask), jnp.asarray(ids),
            np.uint32(3), np.int32(e * spe), jnp.asarray(active))
    if hasattr(run, "in_one_program"):
      out.append(run.in_one_program(state, *args[:4]))
    state, metrics = run(state, *args)
  return (strategy.get_stacked(state), jax.tree.map(np.asarray, metrics)), out


@pytest.mark.slow
@pytest.mark.parametrize("name,conv,optimizer", [("mlp", "lax", "adam"),
                                                 ("cnn_bn", "im2col", "sgd"),
                                                 ("cnn_bn", "lax", "sgd")])
def test_loop_epoch_in_one_program_equals_step_by_step_and_vmap(name, conv, optimizer):
  """The loop's whole-epoch program (steps in a loop, the batch gathered inside, the state
  donated) trains what one jitted step at a time and vmap train: a model with fewer examples
  (a shorter epoch) and a stopped one (active 0: untouched) included. With lax convolutions
  the loop runs step by step. (SGD for the CNN: a conv bias before BatchNorm has a zero
  gradient up to rounding, which Adam's normalisation turns into steps of the learning rate.)"""
  from mia_jax.training import steps  # pylint: disable=g-import-not-at-top
  x, y = toy_data(n=40, shape=(6, 6, 1))
  keep = membership.keep_matrix(0, 3, 40)
  keep[0, np.flatnonzero(keep[0])[:5]] = False
  active = np.array([1.0, 0.0, 1.0], np.float32)
  model = MODELS[name]
  res = {label: _epochs(strategies.Strategy(mapping, conv, epoch_jit), model, steps.StepConfig(),
                        x, y, keep, active, optimizer=optimizer)
         for label, mapping, epoch_jit in (("program", "loop", True), ("step", "loop", False),
                                           ("vmap", "vmap", True))}
  assert res["program"][1] == [conv != "lax" or name == "mlp"] * 2
  assert res["step"][1] == [False] * 2
  np.testing.assert_array_equal(res["program"][0][1]["count"][1], 0.0)
  # The same computation; XLA may fuse it differently inside a loop (the last bit of a float).
  close(res["program"][0], res["step"][0], rtol=1e-5, atol=1e-6)
  close(res["program"][0], res["vmap"][0])
  untouched = _epochs(strategies.Strategy("loop", conv), model, steps.StepConfig(), x, y, keep,
                      active, epochs=0, optimizer=optimizer)[0]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[1], b[1]), res["program"][0][0],
               untouched[0])
  # Groups of models trained in lanes (threads) at once: each model computes what it computes
  # in one lane, to the bit; every program is traced in the calling thread.
  traced_in = []
  layers = strategies._matmul_layers
  def spy(c):
    traced_in.append(threading.current_thread() is threading.main_thread())
    return layers(c)
  for label, epoch_jit in (("program", True), ("step", False)):
    with mock.patch.object(strategies, "_matmul_layers", spy):
      lanes = _epochs(strategies.Strategy("loop", conv, epoch_jit, lanes=2), model,
                      steps.StepConfig(), x, y, keep, active, optimizer=optimizer)
    assert lanes[1] == res[label][1]
    jax.tree.map(np.testing.assert_array_equal, lanes[0], res[label][0])
  assert all(traced_in) and (len(traced_in) > 0) == (conv != "lax")


@pytest.mark.slow
def test_loop_runs_every_dp_step_as_vmap_does():
  """DP-SGD releases a noisy update on an empty batch too: the loop runs the empty steps of a
  model with fewer examples, as vmap does."""
  from mia_jax.training import dp as dp_lib, steps  # pylint: disable=g-import-not-at-top
  x, y = toy_data(n=40, shape=(6, 6, 1))
  keep = membership.keep_matrix(0, 2, 40)
  keep[0, np.flatnonzero(keep[0])[:9]] = False          # model 0: one step fewer than model 1
  assert ensemble.steps_per_epoch(keep[:1], 8) < ensemble.steps_per_epoch(keep, 8)
  step_cfg = steps.StepConfig(dp=dp_lib.DPStepConfig(clip_norm=1.0, noise_multiplier=1.0,
                                                     expected_batch_size=8.0))
  active = np.ones(2, np.float32)
  model = MODELS["mlp"]
  loop, used = _epochs(strategies.Strategy("loop"), model, step_cfg, x, y, keep, active)
  step, _ = _epochs(strategies.Strategy("loop", epoch_jit=False), model, step_cfg, x, y, keep,
                    active)
  vmap, _ = _epochs(strategies.Strategy("vmap"), model, step_cfg, x, y, keep, active)
  assert used == [True, True]
  close(loop[0], vmap[0])
  close(step[0], vmap[0])


@pytest.mark.slow
def test_dp_cnn_runs_forward_convolutions_in_the_loops_program():
  """DP-SGD's clipping sees every convolution under conv='forward' and 'im2col' (the rewrite
  is registered inside its interceptor): the DP step of a CNN runs in the loop's epoch program
  and trains the models of vmap with lax convolutions."""
  from mia_jax.training import dp as dp_lib, steps  # pylint: disable=g-import-not-at-top
  x, y = toy_data(n=40, shape=(8, 8, 1))
  keep = membership.keep_matrix(0, 3, 40)
  model = cnn.CNN(channels=(4, 8), num_classes=3, dense=8, norm="group")
  step_cfg = steps.StepConfig(dp=dp_lib.DPStepConfig(clip_norm=1.0, noise_multiplier=1.0,
                                                     expected_batch_size=8.0))
  active = np.ones(3, np.float32)
  base, _ = _epochs(strategies.Strategy("vmap", "lax"), model, step_cfg, x, y, keep, active)
  for strategy in (strategies.Strategy("loop", "forward"), strategies.Strategy("vmap", "im2col")):
    res, used = _epochs(strategy, model, step_cfg, x, y, keep, active)
    assert used == ([True, True] if strategy.mapping == "loop" else [])
    close(res, base, rtol=1e-4, atol=1e-5)
  # The trainer no longer falls back to lax convolutions under DP-SGD.
  plan = dp_lib.plan(dp_cfg(enabled=True, noise_multiplier=1.0), keep, 8, 1)
  res = ensemble.train_ensemble(model, train_cfg(epochs=1, batch_size=8, strategy="auto"), x, y,
                                keep, seed=0, log=lambda s: None, dp_plan=plan)
  assert res.strategy == "loop+forward"
  assert np.isfinite(res.history[-1]["loss"]).all()


def test_lane_groups_cover_the_models_and_round_trip():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  assert strategies.lane_bounds(5, 2) == ((0, 2), (2, 5))
  assert strategies.lane_bounds(1, 2) == ((0, 1),)
  assert strategies.lane_bounds(7, 3) == ((0, 2), (2, 5), (5, 7))
  tree = {"w": jnp.arange(21.0).reshape(7, 3), "b": jnp.arange(7)}
  for lanes in (1, 2, 3, 9):
    s = strategies.Strategy("loop", lanes=lanes)
    groups = s.running(tree)
    assert len(groups) == min(lanes, 7)
    assert [int(g["b"][0]) for g in groups] == [lo for lo, _ in strategies.lane_bounds(7, lanes)]
    jax.tree.map(np.testing.assert_array_equal, s.stacked(groups), tree)
    jax.tree.map(np.testing.assert_array_equal, s.get_stacked(groups), tree)
    host = s.running(jax.tree.map(np.asarray, tree))
    jax.tree.map(np.testing.assert_array_equal, s.get_stacked(host), tree)
  jax.tree.map(np.testing.assert_array_equal, strategies.Strategy("vmap").running(tree), tree)


def test_in_lanes_keeps_the_order_and_raises_what_a_task_raises():
  import threading  # pylint: disable=g-import-not-at-top
  met = threading.Barrier(3, timeout=30)    # passes only if three tasks run at once
  def task(i):
    if i < 3:
      met.wait()
    return i * i
  tasks = [lambda i=i: task(i) for i in range(7)]
  assert strategies.in_lanes(tasks, 3) == [i * i for i in range(7)]
  assert strategies.in_lanes(tasks[3:], 1) == [i * i for i in range(3, 7)]
  def fails():
    raise ValueError("lane failed")
  with pytest.raises(ValueError, match="lane failed"):
    strategies.in_lanes(tasks[3:5] + [fails], 2)


@pytest.mark.slow
def test_loop_in_lanes_resumes_and_stops_early_as_vmap_does(tmp_path):
  """The MLP's loop on a CPU runs in two lanes: early stopping, checkpoints and resuming see
  the ensemble's stacked state, and the models equal vmap's."""
  class Killed(Exception):
    pass
  x, y = toy_data(n=48, shape=(6,))
  keep = membership.keep_matrix(0, 5, 48)
  vx, vy = x[:12], (y[:12] + 1) % 3
  model = MODELS["mlp"]
  def run(strategy, ckpt=None, log=lambda s: None):
    cfg = train_cfg(epochs=5, batch_size=8, strategy=strategy, early_stopping_patience=2,
                    learning_rate=0.05)
    return ensemble.train_ensemble(model, cfg, x, y, keep, seed=1, val=(vx, vy),
                                   checkpoint_dir=ckpt, log=log)
  vmap = run("vmap")
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
  close(full.state, vmap.state)
  assert [h["val_accuracy"] for h in full.history] == [h["val_accuracy"] for h in vmap.history]
