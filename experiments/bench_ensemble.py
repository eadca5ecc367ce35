"""Benchmark: the ways of mapping the model axis side by side, on this machine, in one run.

  python -m experiments.bench_ensemble                    # every section (~15 minutes, 2 cores)
  python -m experiments.bench_ensemble --quick            # fewer rounds, fewer rows
  python -m experiments.bench_ensemble --sections=mlp,cnn # some sections only

Times the public API only: each row builds its strategy with mapping.resolve / make_mapping,
its step and optimizer with training.from_config.make_step, its state with
training.steps.init_ensemble on a kernels.with_convolutions apply_fn, and times one epoch of
mapping.epoch on the batches of training.samplers.UniformSampler with the keys of
training.keys.step_keys (what training.train_ensemble runs each epoch, host batching included).

Workloads (synthetic inputs of the real shapes: time does not depend on the values):
  mlp  16 Purchase100 networks (600-1024-512-256-128-100, tanh), pool 2048, batch 128, Adam.
  cnn  16 Fashion-MNIST CNNs (conv 32, conv 64, 3x3 + relu + 2x2 max-pool, dense 128), pool 512.
  dp   4 of those CNNs with GroupNorm under DP-SGD (fast clipping, sigma 1, C 1, batch 128).
Each time is the median over rounds in which every row runs one epoch in turn (side by side:
the machine is shared), after a warm-up epoch that compiles. The baseline of each table is the
loop with lax convolutions and one lane (for the CNNs it runs one jitted step at a time, as
XLA:CPU runs autodiff's convolution gradients slowly in a loop). GFLOP/s: XLA's cost analysis
of one plain single-model step (experiments/flops.py) times the model-steps with real examples,
over the epoch's time, as a fraction of the float32 matmul peak measured in the same rounds.
Writes experiments/results/bench_ensemble.{md,json}.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import flops
from mia_jax import attacks, inference, kernels, mapping
from mia_jax.data import membership
from mia_jax.models import cnn, mlp
from mia_jax.training import dp as dp_lib
from mia_jax.training import from_config, keys, optim, samplers, steps

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SECTIONS = ("mlp", "cnn", "dp", "scaling", "float16")


def train_config(batch_size: int = 128) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      epochs=100, batch_size=batch_size, optimizer="adam", learning_rate=1e-3, momentum=0.9,
      nesterov=False, schedule="constant", lr_decay_epochs=(), lr_decay_factor=0.1,
      warmup_epochs=1.0, l2=0.0, weight_decay=0.0, label_smoothing=0.0,
      early_stopping_patience=0, augment=dict(crop_padding=0, flip=False), strategy="auto",
      conv="auto", chunk_size=0))


def workload(name: str, num_models: int, pool: int, seed: int = 0):
  """(model, x [pool, ...], y [pool], keep [M, pool]) of 'mlp', 'cnn' or 'dp' (GroupNorm)."""
  rng = np.random.default_rng(seed)
  if name == "mlp":
    model = mlp.MLP(hidden=mlp.PURCHASE_HIDDEN, num_classes=100, activation="tanh")
    x = (rng.random((pool, 600)) < 0.2).astype(np.float32)
    y = rng.integers(0, 100, pool).astype(np.int32)
  else:
    norm = "group" if name == "dp" else "none"
    model = cnn.CNN(channels=(32, 64), num_classes=10, dense=128, norm=norm)
    x = rng.random((pool, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, pool).astype(np.int32)
  return model, x, y, membership.keep_matrix(seed, num_models, pool, 0.5)


def dp_plan(keep: np.ndarray, batch_size: int) -> dp_lib.DPPlan:
  """DP-SGD with fast clipping, sigma 1, C 1 on shuffled batches (the rows time the step)."""
  n = int(keep.sum(axis=1).min())
  return dp_lib.DPPlan(noise_multiplier=1.0, expected_batch_size=float(batch_size),
                       max_batch=batch_size, steps_per_epoch=samplers.steps_per_epoch(
                           keep, batch_size), steps=1, num_examples=n, delta=1.0 / n,
                       sampling="shuffle", accountant="rdp", clip_norm=1.0, clipping="fast")


class Runner:
  """One row's ensemble, ready to run epochs through the public API (compiled on the first)."""

  def __init__(self, strategy: mapping.Strategy, model, x, y, keep, plan=None):
    cfg = train_config()
    self.strategy, self.ids = strategy, np.arange(keep.shape[0], dtype=np.int32)
    self.sampler = samplers.UniformSampler(keep, cfg.batch_size, seed=0)
    tx = optim.make_optimizer(cfg, self.sampler.steps_per_epoch)
    self.step, tx = from_config.make_step(cfg, strategy.conv, tx, plan)
    apply_fn = kernels.with_convolutions(model.apply, strategy.conv)
    state = steps.init_ensemble(model, tx, keys.model_keys(0, self.ids), jnp.asarray(x[:1]),
                                apply_fn)
    self.state = strategy.mapping.put(jax.tree.map(np.asarray, state))
    self.pool = strategy.mapping.replicate((x, y))
    self.active = np.ones(keep.shape[0], np.float32)

  def epoch(self, epoch: int) -> float:
    """Seconds of one epoch (its batches drawn on the host included)."""
    t = time.perf_counter()
    idx, mask = self.sampler.epoch(epoch, self.ids)
    first = epoch * self.sampler.steps_per_epoch
    step_keys = keys.step_keys(0, self.ids, first + np.arange(idx.shape[1]))
    self.state, metrics = self.strategy.mapping.epoch(
        self.step, self.state, *self.pool, idx, mask.astype(np.float32), step_keys, self.active)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - t


def step_flops(model, x, batch_size: int = 128) -> float:
  """XLA's FLOPs of one plain single-model train step (lax convolutions: the useful work)."""
  state = steps.init_state(model, optim.make_optimizer(train_config(), 1), jax.random.key(0),
                           jnp.asarray(x[:1]))
  batch = steps.Batch(jnp.asarray(x[:batch_size]), jnp.zeros(batch_size, jnp.int32),
                      jnp.ones(batch_size, jnp.float32))
  return flops.cost_flops(steps.train_step, state, batch, jax.random.key(0))


def rows_for(name: str, model, sample_x, quick: bool) -> dict:
  """label -> Strategy of a table's rows (the first is the baseline)."""
  make = lambda m, conv="lax", lanes=1: mapping.Strategy(mapping.make_mapping(m, lanes), conv)
  if name == "mlp":
    rows = {"loop (lax), 1 lane": make("loop"), "loop (lax), 2 lanes": make("loop", lanes=2),
            "vmap": make("vmap"), "shared (one round)": make("shared")}
  elif name == "cnn":
    rows = {"loop (lax)": make("loop"), "loop (im2col)": make("loop", "im2col"),
            "loop (forward convolutions)": make("loop", "forward"),
            "loop (forward convolutions), 2 lanes": make("loop", "forward", 2),
            "vmap (lax conv)": make("vmap"), "vmap (im2col)": make("vmap", "im2col"),
            "shared (im2col)": make("shared", "im2col")}
  else:
    rows = {"DP, loop (lax): one jitted step at a time": make("loop"),
            "DP, loop (forward convolutions)": make("loop", "forward"),
            "DP, auto": mapping.resolve("auto", model, sample_x)}
  if name != "dp":
    rows["sharded (1 device)"] = mapping.resolve("sharded", model, sample_x)
    rows["auto"] = mapping.resolve("auto", model, sample_x)
  if quick:
    rows = {k: v for k, v in rows.items() if "one round" not in k and "shared" not in k
            and "lax conv" not in k}
  return rows


def _single_round(label: str) -> bool:
  """Rows several times slower than the others: one round shows it."""
  return label.startswith("shared") or label.startswith("vmap (lax")


def compare(name: str, num_models: int, pool: int, rounds: int, quick: bool, log) -> dict:
  """One table: every row's epoch, side by side, `rounds` times; medians, ratios, FLOP/s."""
  model, x, y, keep = workload(name, num_models, pool)
  rows = rows_for(name, model, x[:1], quick)
  plan = dp_plan(keep, 128) if name == "dp" else None
  runners, times = {}, {}
  for label, strategy in rows.items():
    t = time.perf_counter()
    runners[label] = Runner(strategy, model, x, y, keep, plan)
    runners[label].epoch(0)
    times[label] = []
    log(f"{name} {label} ({strategy.name}): compiled and warmed up in "
        f"{time.perf_counter() - t:.1f}s")
  if name == "dp":
    no_dp = mapping.resolve("auto", model, x[:1])
    runners["no DP, auto"] = Runner(no_dp, model, x, y, keep)
    runners["no DP, auto"].epoch(0)
    rows["no DP, auto"], times["no DP, auto"] = no_dp, []
  peaks = []
  for r in range(rounds):
    peaks.append(flops.matmul_peak())
    for label, runner in runners.items():
      if not (_single_round(label) and r >= 1):
        times[label].append(runner.epoch(r + 1))
    log(f"{name} round {r + 1}: peak {peaks[-1]:.0f} GFLOP/s, "
        + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
  real_steps = int(np.ceil(keep.sum(1) / 128).sum())
  epoch_flops = step_flops(model, x) * real_steps
  peak = float(np.median(peaks))
  base = float(np.median(times[next(iter(times))]))
  table = {}
  for label, ts in times.items():
    sec = float(np.median(ts))
    table[label] = {"strategy": rows[label].name, "seconds_per_epoch": sec, "rounds": len(ts),
                    "times": ts, "vs_baseline": base / sec,
                    "ms_per_model_step": 1e3 * sec / real_steps,
                    "gflops": epoch_flops / sec / 1e9, "peak_fraction": epoch_flops / sec / 1e9
                    / peak}
  return {"models": num_models, "pool": pool, "batch_size": 128, "round_peaks": peaks,
          "peak_gflops": peak, "flops_per_model_step": epoch_flops / real_steps,
          "real_steps_per_epoch": real_steps, "rows": table}


def scaling(sizes, pool: int, rounds: int, log) -> dict:
  """The MLP under auto for each M in `sizes`: seconds per epoch and per model."""
  out = {}
  for num_models in sizes:
    model, x, y, keep = workload("mlp", num_models, pool)
    runner = Runner(mapping.resolve("auto", model, x[:1]), model, x, y, keep)
    runner.epoch(0)
    sec = float(np.median([runner.epoch(r + 1) for r in range(rounds)]))
    out[num_models] = {"seconds_per_epoch": sec, "seconds_per_model": sec / num_models}
    log(f"scaling M={num_models}: {sec:.2f}s an epoch")
  return out


def float16_store(log) -> dict:
  """LiRA online scores of 4 targets from float16 against float32 logits of 16 trained MLPs."""
  model, x, y, keep = workload("mlp", 16, 1024)
  cfg = train_config(batch_size=64)
  cfg.epochs = 3
  res = from_config.train_from_config(model, cfg, x, y, keep, seed=0, log=lambda s: None)
  scores = {}
  for dtype in (np.float32, np.float16):
    logits = inference.query_logits(model, res.state, x, "none", dtype=dtype)
    data = attacks.AttackData(logits=np.asarray(logits, np.float32), labels=y, keep=keep)
    scores[dtype.__name__] = attacks.run("lira_online", data, targets=[0, 1, 2, 3])
  diff = np.abs(scores["float16"] - scores["float32"])
  log(f"float16 store: scores differ by at most {diff.max():.3g}")
  return {"max_abs_diff": float(diff.max()), "median_abs_diff": float(np.median(diff)),
          "median_abs_score": float(np.median(np.abs(scores["float32"])))}


def _table(section: dict, title: str) -> list[str]:
  lines = [f"## {title}", "", "Matmul peak in each round: "
           + ", ".join(f"{p:.0f}" for p in section["round_peaks"])
           + f" GFLOP/s (median {section['peak_gflops']:.0f}); "
           f"{section['real_steps_per_epoch']} model-steps with real examples per epoch, "
           f"{section['flops_per_model_step'] / 1e9:.2f} GFLOP each.", "",
           "| row | resolves to | s / epoch | rounds | vs baseline | ms / model-step | GFLOP/s "
           "| of matmul peak |", "|---|---|---|---|---|---|---|---|"]
  for label, row in section["rows"].items():
    lines.append(f"| {label} | {row['strategy']} | {row['seconds_per_epoch']:.2f} | "
                 f"{row['rounds']} | {row['vs_baseline']:.2f}x | {row['ms_per_model_step']:.1f} | "
                 f"{row['gflops']:.1f} | {100 * row['peak_fraction']:.0f}% |")
  return lines + [""]


TITLES = {"mlp": "{models} Purchase100 MLPs (pool {pool}, batch 128, Adam)",
          "cnn": "{models} Fashion-MNIST CNNs (pool {pool}, batch 128, Adam)",
          "dp": "DP-SGD: {models} CNNs with GroupNorm (pool {pool}, batch 128, fast clipping, "
                "sigma 1, C 1)"}


def markdown(results: dict) -> str:
  lines = [f"# Ensemble mappings on {results['machine']}", "",
           f"jax {results['jax']}, backend {results['backend']}, {results['devices']} device(s); "
           f"load average {results['load']} at the start. Command: `{results['command']}`.", "",
           (__doc__.split("\n\n")[2] + "\n").replace("\n", " ").strip(), ""]
  for name in ("mlp", "cnn", "dp"):
    if name in results:
      lines += _table(results[name], TITLES[name].format(**results[name]))
  if "scaling" in results:
    lines += ["## Scaling, MLP under auto", "", "| M | s / epoch | s / model |", "|---|---|---|"]
    per_model = [v["seconds_per_model"] for v in results["scaling"].values()]
    for m, v in results["scaling"].items():
      lines.append(f"| {m} | {v['seconds_per_epoch']:.2f} | {v['seconds_per_model']:.3f} |")
    lines += ["", f"Seconds per model, largest over smallest: "
              f"{max(per_model) / min(per_model):.3f}.", ""]
  if "float16" in results:
    f16 = results["float16"]
    lines += ["## float16 logits store (LiRA online, 4 targets, 16 MLPs)", "",
              f"Scores differ by at most {f16['max_abs_diff']:.3g} (median "
              f"{f16['median_abs_diff']:.3g}; median |score| {f16['median_abs_score']:.3g}).", ""]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--sections", default=",".join(SECTIONS))
  p.add_argument("--rounds", type=int, default=0, help="0: 5 (3 with --quick)")
  p.add_argument("--out", default=os.path.join(RESULTS, "bench_ensemble"))
  args = p.parse_args(argv)
  sections = args.sections.split(",")
  rounds = args.rounds or (3 if args.quick else 5)
  log = lambda s: print(s, flush=True)
  results = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
             "jax": jax.__version__, "backend": jax.default_backend(),
             "devices": jax.device_count(), "load": f"{os.getloadavg()[0]:.1f}",
             "command": " ".join(["python -m experiments.bench_ensemble"]
                                 + list(sys.argv[1:] if argv is None else argv))}
  sizes = {"mlp": (16, 2048), "cnn": (16, 512), "dp": (4, 512)}
  for name in ("mlp", "cnn", "dp"):
    if name in sections:
      results[name] = compare(name, *sizes[name], rounds, args.quick, log)
  if "scaling" in sections:
    results["scaling"] = scaling((8, 16, 32) if args.quick else (8, 16, 32, 64), 2048,
                                 rounds, log)
  if "float16" in sections:
    results["float16"] = float16_store(log)
  with open(args.out + ".json", "w") as f:
    json.dump(results, f, indent=1, default=float)
  with open(args.out + ".md", "w") as f:
    f.write(markdown(results))
  print(markdown(results))


if __name__ == "__main__":
  main()
