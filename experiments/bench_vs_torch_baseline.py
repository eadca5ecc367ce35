r"""The PyTorch and Opacus side of experiments/bench_vs_torch.py: the straightforward loop a user
would write, run by bench_vs_torch.py in worker processes (torch imported there only).

  python -m experiments.bench_vs_torch_baseline train --model mlp --epochs 2 --models 16 \
      --pool 10000 --val 2000 --test 10000 --result /tmp/r.json
  python -m experiments.bench_vs_torch_baseline steps --steps 20 --few 5 --result /tmp/r.json

`train`: Fashion-MNIST split as mia_jax.data splits it (the 70k images joined, shuffled with
seed 0; pool, val, test), keep [M, N] with every example IN for exactly half the models; the
models trained one after another, each an epoch at a time over a fresh permutation of its
members in batches of 128 (the last one partial), Adam lr 1e-3; then every model's eval-mode
logits on the pool and the test split, batch 1024. `steps`: the per-step seconds of plain Adam
steps and of Opacus's DP-SGD (hooks and ghost clipping; clip 1, noise multiplier 1, a fixed
batch: no Poisson loader) on the batches of `step_data`. torch runs on --threads
threads (2: the machine's cores; 1: what a machine loaded by other jobs disturbs least), with
OMP_WAIT_POLICY=PASSIVE unless the environment sets it: with OpenMP's default (spinning)
policy, torch's threads stall each other when other processes hold the cores (the MLP step
0.2-0.6 s instead of 10-30 ms at load 9; see experiments/results/bench_vs_torch.md).
"""

import argparse
import gzip
import json
import os
import time

import numpy as np

FMNIST = "/usr/share/datasets/fashion-mnist"


def step_data(kind: str, layout: str = "nhwc"):
  """x, y of one step case: batch 128 of Fashion-MNIST shape, or 256 Purchase100-shaped rows."""
  rng = np.random.default_rng(0)
  if kind == "purchase":
    return (rng.random((256, 600)) < 0.2).astype(np.float32), rng.integers(0, 100, 256)
  x = rng.normal(size=(128, 28, 28, 1)).astype(np.float32)
  return (x.transpose(0, 3, 1, 2).copy() if layout == "nchw" else x), rng.integers(0, 10, 128)


def load_fashion_mnist(pool: int, test: int, val: int):
  """The pool, and the test split after `val` held out, as mia_jax.data splits the 70k images
  (seed 0), standardised with the pool's mean and std: x [n, 28, 28, 1] float32, y [n]."""
  def idx(name):
    with gzip.open(os.path.join(FMNIST, name), "rb") as f:
      data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
  x = np.concatenate([idx("train-images-idx3-ubyte.gz"), idx("t10k-images-idx3-ubyte.gz")])
  y = np.concatenate([idx("train-labels-idx1-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")])
  order = np.random.default_rng(0).permutation(len(y))
  x = (x[order].astype(np.float32) / 255.0)[..., None]
  y = y[order].astype(np.int64)
  x = (x - x[:pool].mean()) / (x[:pool].std() + 1e-8)
  return x[:pool], y[:pool], x[pool + val:pool + val + test], y[pool + val:pool + val + test]


def keep_matrix(models: int, pool: int, seed: int = 0) -> np.ndarray:
  """bool [M, N]: every example IN for exactly half the models (LiRA's design)."""
  ranks = np.argsort(np.argsort(np.random.default_rng(seed).random((models, pool)), 0), 0)
  return ranks < models // 2


def torch_module(kind: str):
  import torch.nn as tnn
  if kind == "mlp":
    return tnn.Sequential(tnn.Flatten(), tnn.Linear(784, 512), tnn.ReLU(), tnn.Linear(512, 256),
                          tnn.ReLU(), tnn.Linear(256, 10))
  if kind == "purchase":
    layers, width = [], 600
    for hidden in (1024, 512, 256, 128):
      layers += [tnn.Linear(width, hidden), tnn.Tanh()]
      width = hidden
    return tnn.Sequential(*layers, tnn.Linear(width, 100))
  return tnn.Sequential(tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                        tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                        tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 128),
                        tnn.ReLU(), tnn.Linear(128, 10))


def worker_torch_train(a) -> dict:
  """16 models trained one after another, then every model's eval-mode logits."""
  import torch
  import torch.nn.functional as F
  torch.set_num_threads(a.threads)
  t0 = time.perf_counter()
  px, py, tx_, ty = load_fashion_mnist(a.pool, a.test, a.val)
  px, tx_ = (torch.from_numpy(v.transpose(0, 3, 1, 2).copy()) for v in (px, tx_))
  py = torch.from_numpy(py)
  keep = keep_matrix(a.models, a.pool)
  data_s, t1 = time.perf_counter() - t0, time.perf_counter()
  epoch_s, rng, models = [], np.random.default_rng(1), []
  for m in range(a.models):
    torch.manual_seed(m)
    net = torch_module(a.model)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    members, times = np.flatnonzero(keep[m]), []
    for _ in range(a.epochs):
      te = time.perf_counter()
      order = torch.from_numpy(rng.permutation(members))
      for b in range(0, len(order), 128):
        batch = order[b:b + 128]
        opt.zero_grad()
        F.cross_entropy(net(px[batch]), py[batch]).backward()
        opt.step()
      times.append(time.perf_counter() - te)
    epoch_s.append(times)
    models.append(net)
  train_s, t2 = time.perf_counter() - t1, time.perf_counter()
  with torch.no_grad():
    for net in models:
      net.eval()
      for xs in (px, tx_):
        for b in range(0, len(xs), 1024):
          net(xs[b:b + 1024])
  return {"data_s": data_s, "train_s": train_s, "inference_s": time.perf_counter() - t2,
          "epoch_s": epoch_s}


def worker_torch_steps(a) -> dict:
  """Per-step seconds: plain Adam steps, Opacus ghost clipping and Opacus hooks."""
  import torch
  import torch.nn.functional as F
  from opacus import PrivacyEngine
  torch.set_num_threads(a.threads)
  out = {}
  for kind, variants in (("mlp", ("plain",)), ("cnn", ("plain", "ghost", "hooks")),
                         ("purchase", ("plain", "ghost", "hooks"))):
    x, y = (torch.from_numpy(v) for v in step_data(kind, "nchw"))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=len(y))
    for variant in variants:
      torch.manual_seed(0)
      net = torch_module(kind)
      opt = torch.optim.Adam(net.parameters(), lr=1e-3)
      loss_fn = F.cross_entropy
      if variant != "plain":
        made = PrivacyEngine().make_private(
            module=net, optimizer=opt, data_loader=loader, criterion=torch.nn.CrossEntropyLoss(),
            noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
            grad_sample_mode=variant)
        net, opt, loss_fn = made[0], made[1], (made[2] if variant == "ghost" else F.cross_entropy)

      def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
      out[f"{kind}/{variant}"] = time_calls(step, a.steps if variant != "hooks" else a.few)
  return out


def time_calls(fn, n: int, warmup: int = 2) -> list[float]:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("worker", choices=("train", "steps"))
  p.add_argument("--result", required=True, help="the json file written")
  p.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
  for name in ("--epochs", "--models", "--pool", "--val", "--test", "--steps", "--few"):
    p.add_argument(name, type=int, default=0)
  p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  args = p.parse_args()
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # read when torch loads OpenMP
  result = (worker_torch_train if args.worker == "train" else worker_torch_steps)(args)
  with open(args.result, "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main()
