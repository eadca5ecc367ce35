"""The sharded strategy: over 4 devices of one process, and over 2 processes joined by
jax.distributed on loopback (CPU collectives), it trains the models single-device training does.

Several CPU devices need XLA_FLAGS before jax is imported, so each run is a subprocess that runs
this file as a script (`python tests/test_ensemble_sharded.py STRATEGY OUT [PROCESS_ID PORT]`).
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def problem():
  """6 CNNs with BatchNorm (per-model batch statistics) on 48 toy images, 2 epochs."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mia_jax.data import membership  # pylint: disable=g-import-not-at-top
  from mia_jax.models import cnn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 48).astype(np.int32)
  x = rng.normal(size=(48, 6, 6, 1)).astype(np.float32) + y[:, None, None, None]
  keep = membership.keep_matrix(0, 6, 48)
  cfg = ml_collections.ConfigDict(dict(
      epochs=2, batch_size=8, optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=False,
      schedule="constant", l2=0.0, weight_decay=0.0, label_smoothing=0.0,
      early_stopping_patience=2, augment=dict(crop_padding=0, flip=False), strategy="vmap",
      conv="auto", chunk_size=0))
  model = cnn.CNN(channels=(4,), num_classes=3, dense=8, norm="batch")
  return model, cfg, x, y, keep


def worker(strategy: str, out: str, process_id: int = -1, port: int = 0) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if process_id >= 0:
    from mia_jax.training import launch  # pylint: disable=g-import-not-at-top
    launch.initialize(f"127.0.0.1:{port}", 2, process_id)
  from mia_jax.training import from_config  # pylint: disable=g-import-not-at-top
  model, cfg, x, y, keep = problem()
  cfg.strategy = strategy
  res = from_config.train_from_config(model, cfg, x, y, keep, seed=1, val=(x[:12], y[:12]),
                                      log=lambda s: None)
  leaves = jax.tree.leaves((res.state.params, res.state.batch_stats))
  if jax.process_index() == 0:
    np.savez(out, *leaves, devices=jax.device_count(), strategy=res.strategy,
             val=np.asarray(res.history[-1]["val_accuracy"]))
  if process_id >= 0:
    jax.distributed.shutdown()


def run_workers(tmp_path, strategy, devices_per_process, processes=1):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
             JAX_PLATFORMS="cpu")
  out = str(tmp_path / f"{strategy}_{processes}x{devices_per_process}.npz")
  if processes == 1:
    cmds = [[sys.executable, __file__, strategy, out]]
  else:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    cmds = [[sys.executable, __file__, strategy, out, str(p), str(port)] for p in range(processes)]
  procs = [subprocess.Popen(c, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for c in cmds]
  for p in procs:
    text, _ = p.communicate(timeout=600)
    assert p.returncode == 0, text[-3000:]
  return np.load(out)


def assert_same_models(a, b):
  keys = [k for k in a.files if k.startswith("arr_")]
  assert keys == [k for k in b.files if k.startswith("arr_")]
  for k in keys:
    np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=k)
  np.testing.assert_allclose(a["val"], b["val"])


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  return run_workers(tmp_path_factory.mktemp("single"), "vmap", 1)


@pytest.mark.slow
def test_sharded_over_4_devices_equals_single_device(tmp_path, single):
  sharded = run_workers(tmp_path, "sharded", 4)      # 6 models padded to 8 over 4 devices
  assert int(sharded["devices"]) == 4 and str(sharded["strategy"]).startswith("sharded")
  assert int(single["devices"]) == 1
  assert_same_models(sharded, single)


@pytest.mark.slow
def test_two_processes_with_jax_distributed_equal_single_process(tmp_path, single):
  two = run_workers(tmp_path, "sharded", 2, processes=2)   # 2 hosts x 2 devices
  assert int(two["devices"]) == 4
  assert_same_models(two, single)


if __name__ == "__main__":
  args = sys.argv[1:]
  worker(args[0], args[1], *(int(a) for a in args[2:]))
