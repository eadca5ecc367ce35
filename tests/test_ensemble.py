"""Every strategy trains the same models; chunks of models equal one chunk and resume; the
logits store written to disk equals the one in memory."""

import jax
import numpy as np
import pytest

from mia_jax import inference
from mia_jax.data import membership
from mia_jax.models import cnn, mlp
from mia_jax.training import ensemble, strategies

from test_training import toy_data, train_cfg


def close(a, b, rtol=2e-4, atol=2e-5):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


MODELS = {
    "mlp": mlp.MLP(hidden=(16,), num_classes=3),
    "cnn_bn": cnn.CNN(channels=(4, 4), num_classes=3, dense=8, norm="batch"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_strategy_trains_the_same_models(name):
  """Without dropout and augmentation (which draw per batch position, so differently on the
  shared batch) every mapping and convolution gives the same models, BatchNorm included."""
  model = MODELS[name]
  x, y = toy_data(n=40, shape=(6, 6, 1))
  keep = membership.keep_matrix(0, 3, 40)
  results = {}
  for strategy, conv in (("vmap", "lax"), ("loop", "lax"), ("shared", "lax"), ("vmap", "im2col"),
                         ("loop", "matmul_grad"), ("shared", "im2col"), ("auto", "auto")):
    cfg = train_cfg(epochs=2, batch_size=8, strategy=strategy, conv=conv, optimizer="sgd",
                    learning_rate=0.05)
    results[strategy, conv] = ensemble.train_ensemble(model, cfg, x, y, keep, seed=3,
                                                      log=lambda s: None)
  base = results["vmap", "lax"]
  for key, res in results.items():
    close(res.state.params, base.state.params)
    close(res.state.batch_stats, base.state.batch_stats)
    np.testing.assert_allclose(res.history[-1]["loss"], base.history[-1]["loss"], rtol=1e-4)
  assert results["auto", "auto"].strategy == ("loop+im2col" if name == "cnn_bn" else "loop")


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


@pytest.mark.parametrize("conv", ["im2col", "matmul_grad"])
def test_matmul_convolutions_and_pooling_equal_lax_with_gradients(conv):
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


def test_chunks_train_the_models_of_one_chunk():
  whole = _chunked(None, 0, patience=2)
  parts = _chunked(None, 2, patience=2)          # chunks of models 0-1, 2-3, 4
  close(parts.state, whole.state, rtol=1e-5, atol=1e-6)
  assert len(parts.history) == len(whole.history)
  np.testing.assert_allclose(parts.history[-1]["val_accuracy"], whole.history[-1]["val_accuracy"])


class Killed(Exception):
  pass


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


def test_unknown_strategy_is_a_config_error():
  from mia_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="strategy"):
    strategies.resolve("pmap", MODELS["mlp"], np.zeros((1, 4), np.float32))
