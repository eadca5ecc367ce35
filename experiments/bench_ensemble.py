"""Benchmark: the ensemble strategies side by side, on this machine, in one run.

  python -m experiments.bench_ensemble            # the full table (under ~10 minutes, 2-core CPU)
  python -m experiments.bench_ensemble --quick    # a quick try (fewer rounds, smaller pools)

Workloads (synthetic inputs of the real shapes: time does not depend on the values):
  mlp  16 copies of the Purchase100 network (600-1024-512-256-128-100, tanh; 1.32M parameters),
       a pool of 4,096 examples, pkeep 0.5, batch 128, Adam.
  cnn  16 copies of the Fashion-MNIST CNN (conv 32, conv 64, each 3x3 + relu + 2x2 max-pool,
       global average pool, dense 128, dense 10) on 28x28x1 inputs, a pool of 1,024, pkeep 0.5,
       batch 128, Adam.
For each strategy: the time of one training epoch of all 16 models (host-side batching
included), the median over rounds in which every strategy runs one epoch in turn (side by side,
since the machine is shared), after one warm-up epoch that compiles. `loop` with lax
convolutions is the sequential loop of single models (the baseline).
Training FLOP/s: the useful FLOPs of an epoch (XLA's cost analysis of ONE plain single-model
train step, times the steps with real examples, times the models: redundant work such as the
shared strategy's is not counted) over its time, as a fraction of the float32 matmul peak
(a 2048 x 2048 matmul) measured in the same run.
Scaling: the MLP under `auto` for M = 8, 16, 32, 64, and the peak RSS of a fresh process that
trains M = 64 for two epochs with train_ensemble. The float16 logits store: LiRA (online)
scores of 4 targets from float16 vs float32 logits of the trained MLPs.
Writes experiments/results/bench_ensemble.{md,json}.
"""

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mia_jax import attacks, inference, metrics
from mia_jax.data import membership
from mia_jax.models import cnn, mlp
from mia_jax.training import ensemble, optim, steps, strategies

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def train_config(batch_size: int = 128, epochs: int = 100) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      epochs=epochs, batch_size=batch_size, optimizer="adam", learning_rate=1e-3, momentum=0.9,
      nesterov=False, schedule="constant", lr_decay_epochs=(), lr_decay_factor=0.1,
      warmup_epochs=1.0, l2=0.0, weight_decay=0.0, label_smoothing=0.0,
      early_stopping_patience=0, augment=dict(crop_padding=0, flip=False), strategy="auto",
      conv="auto", chunk_size=0))


def workload(name: str, num_models: int, pool: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  if name == "mlp":
    model = mlp.MLP(hidden=mlp.PURCHASE_HIDDEN, num_classes=100, activation="tanh")
    x = (rng.random((pool, 600)) < 0.2).astype(np.float32)
    y = rng.integers(0, 100, pool).astype(np.int32)
  else:
    model = cnn.CNN(channels=(32, 64), num_classes=10, dense=128)
    x = rng.random((pool, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, pool).astype(np.int32)
  keep = membership.keep_matrix(seed, num_models, pool, 0.5)
  return model, x, y, keep


def matmul_peak(n: int = 2048, reps: int = 3) -> float:
  """float32 matmul GFLOP/s (median of reps)."""
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / np.median(times) / 1e9


def step_flops(model, tx, x, batch_size: int) -> float:
  """XLA's FLOP count of one plain (lax convolution) single-model train step."""
  state = steps.init_state(model, tx, jax.random.key(0), x[:1])
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, cfg=steps.StepConfig()))
  xb = jnp.asarray(x[:batch_size])
  cost = step.lower(state, xb, jnp.zeros(batch_size, jnp.int32), jnp.ones(batch_size),
                    jax.random.key(0)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


class Runner:
  """One strategy's ensemble, ready to run epochs (compiled on the first)."""

  def __init__(self, strategy, model, x, y, keep, cfg):
    self.strategy, self.keep, self.cfg = strategy, keep, cfg
    self.spe = ensemble.steps_per_epoch(keep, cfg.batch_size)
    tx = optim.make_optimizer(cfg, self.spe)
    self.ids = np.arange(keep.shape[0], dtype=np.int32)
    state = ensemble.init_ensemble(model, tx, 0, keep.shape[0], jnp.asarray(x[:1]), self.ids)
    self.state = strategy.put(jax.tree.map(np.asarray, state))
    self.run = strategy.epoch_fn(model, tx, steps.StepConfig())
    self.px, self.py = strategy.replicate((x, y))
    self.model_ids = strategy.put(self.ids)
    self.active = strategy.put(np.ones(keep.shape[0], np.float32))

  def epoch(self, e: int) -> float:
    t = time.perf_counter()
    idx, mask = ensemble.epoch_batches(self.keep, self.cfg.batch_size, 0, e, self.ids)
    self.state, metrics = self.run(self.state, self.px, self.py, self.strategy.put(idx, axis=1),
                                   self.strategy.put(mask, axis=1), self.model_ids, np.uint32(0),
                                   np.int32(e * self.spe), self.active)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - t


def compare(name: str, variants: dict, num_models: int, pool: int, rounds: int, peak: float,
            log) -> dict:
  """Times one epoch of each variant, side by side, `rounds` times; returns per variant the
  median seconds, speed-up over the loop and FLOP/s fraction."""
  model, x, y, keep = workload(name, num_models, pool)
  cfg = train_config()
  flops = step_flops(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size)
  real_steps = int(np.ceil(keep.sum(1) / cfg.batch_size).sum())
  epoch_flops = flops * real_steps
  runners, times = {}, {}
  for label, strat in variants.items():
    t = time.perf_counter()
    runners[label] = Runner(strat, model, x, y, keep, cfg)
    runners[label].epoch(0)
    times[label] = []
    log(f"{name} {label}: compiled and warmed up in {time.perf_counter() - t:.1f}s")
  peaks = []
  for r in range(rounds):
    peaks.append(matmul_peak(reps=1))
    for label, runner in runners.items():
      slow = label.startswith("shared") or label.startswith("vmap (lax")
      if slow and r >= 1:
        continue          # several times slower: one round is enough to show it
      times[label].append(runner.epoch(r + 1))
    log(f"{name} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
  base = np.median(times["loop (lax)"])
  peak = float(np.median(peaks))
  rows = {}
  for label, ts in times.items():
    sec = float(np.median(ts))
    rows[label] = {"strategy": variants[label].name, "seconds_per_epoch": sec,
                   "rounds": len(ts), "times": ts, "speedup_vs_loop": float(base / sec),
                   "gflops": epoch_flops / sec / 1e9,
                   "peak_fraction": epoch_flops / sec / 1e9 / peak}
  return {"models": num_models, "pool": pool, "batch_size": cfg.batch_size, "round_peaks": peaks,
          "peak_gflops": peak,
          "flops_per_model_step": flops, "real_steps_per_epoch": real_steps, "rows": rows}


def scaling(sizes, pool: int, rounds: int, peak: float, log) -> dict:
  model, x, y, _ = workload("mlp", max(sizes), pool)
  cfg = train_config()
  strat = strategies.resolve("auto", model, x[:1])
  flops = step_flops(model, optim.make_optimizer(cfg, 1), x, cfg.batch_size)
  runners = {}
  for m in sizes:
    keep = membership.keep_matrix(0, m, pool, 0.5)
    runners[m] = Runner(strat, model, x, y, keep, cfg)
    runners[m].epoch(0)
  times = {m: [] for m in sizes}
  peaks = []
  for r in range(rounds):
    peaks.append(matmul_peak(reps=1))
    for m in sizes:
      times[m].append(runners[m].epoch(r + 1))
    log(f"scaling round {r + 1}: " + ", ".join(f"M={m} {v[-1]:.2f}s" for m, v in times.items()))
  out = {}
  peak = float(np.median(peaks))
  for m in sizes:
    sec = float(np.median(times[m]))
    real = int(np.ceil(runners[m].keep.sum(1) / cfg.batch_size).sum())
    out[m] = {"seconds_per_epoch": sec, "seconds_per_model": sec / m, "times": times[m],
              "peak_fraction": flops * real / sec / 1e9 / peak}
  per_model = [v["seconds_per_model"] for v in out.values()]
  return {"strategy": strat.name, "pool": pool, "sizes": out, "peak_gflops": peak,
          "max_over_min_seconds_per_model": float(max(per_model) / min(per_model))}


def rss_of_training(num_models: int, pool: int) -> dict:
  """Peak RSS (VmHWM: ru_maxrss would carry the parent's over exec) of a fresh process
  training `num_models` MLPs for two epochs with train_ensemble."""
  code = (f"import time, numpy as np, sys; sys.argv=['x'];"
          f"from experiments import bench_ensemble as b; from mia_jax.training import ensemble;"
          f"model, x, y, keep = b.workload('mlp', {num_models}, {pool});"
          f"t = time.perf_counter();"
          f"r = ensemble.train_ensemble(model, b.train_config(epochs=2), x, y, keep, seed=0, "
          f"log=lambda s: None);"
          f"hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
          f"print(hwm, time.perf_counter() - t, "
          f"r.history[-1]['seconds'], r.strategy)")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       check=True).stdout.split()
  params = 1_317_672 * num_models
  return {"models": num_models, "peak_rss_mib": int(out[0]) / 1024, "train_s_two_epochs":
          float(out[1]), "strategy": out[3],
          "state_mib": params * 4 * 3 / 2 ** 20}   # params + Adam's two moments, float32


def float16_store(log) -> dict:
  """LiRA online scores of 4 targets from float16 vs float32 logits of trained MLPs."""
  model, x, y, keep = workload("mlp", 16, 2048, seed=1)
  cfg = train_config(epochs=8)
  res = ensemble.train_ensemble(model, cfg, x, y, keep, seed=0, log=lambda s: None)
  out = {}
  with tempfile.TemporaryDirectory() as d:
    for dt in ("float32", "float16"):
      out[dt] = inference.query_logits(model, res.state, x, "none", dtype=np.dtype(dt),
                                       out=os.path.join(d, f"{dt}.npy"))
  rows = {}
  for dt in ("float32", "float16"):
    data = attacks.AttackData(logits=np.asarray(out[dt]), labels=y, keep=keep)
    rows[dt] = attacks.run("lira_online", data, targets=[0, 1, 2, 3])
  diff = np.abs(rows["float16"] - rows["float32"])
  ev = {dt: [metrics.evaluate(rows[dt][t], keep[t]) for t in range(4)] for dt in rows}
  auc = {dt: [e["auc"] for e in ev[dt]] for dt in ev}
  tpr = {dt: [e["tpr_at_fpr"]["0.001"] for e in ev[dt]] for dt in ev}
  result = {"train_accuracy_mean": float(inference.accuracy(out["float32"], y, keep).mean()),
            "max_abs_score_diff": float(diff.max()),
            "median_abs_score_diff": float(np.median(diff)),
            "score_scale_median_abs": float(np.median(np.abs(rows["float32"]))),
            "max_abs_auc_diff": float(np.max(np.abs(np.subtract(auc["float16"], auc["float32"])))),
            "max_abs_tpr_at_0.1%_diff": float(np.max(np.abs(np.subtract(tpr["float16"],
                                                                       tpr["float32"])))),
            "auc_float32": auc["float32"], "auc_float16": auc["float16"]}
  log(f"float16 store: {result}")
  return result


def variants_for(name: str, model, sample_x) -> dict:
  rows = {"loop (lax)": strategies.Strategy("loop", "lax")}
  if name == "cnn":
    rows["loop (im2col)"] = strategies.Strategy("loop", "im2col")
    rows["vmap (lax conv)"] = strategies.Strategy("vmap", "lax")
    rows["vmap (im2col)"] = strategies.Strategy("vmap", "im2col")
    rows["shared (im2col)"] = strategies.Strategy("shared", "im2col")
  else:
    rows["vmap"] = strategies.Strategy("vmap", "lax")
    rows["shared (one round)"] = strategies.Strategy("shared", "lax")
  rows["sharded (1 device)"] = strategies.resolve("sharded", model, sample_x)
  rows["auto"] = strategies.resolve("auto", model, sample_x)
  return rows


def markdown(r: dict) -> str:
  lines = [f"# Ensemble strategies on {r['machine']}", "",
           f"jax {r['jax']}, backend {r['backend']}, {r['devices']} device(s); float32 matmul "
           f"(2048 x 2048) peak measured in this run: {r['peak_gflops']:.1f} GFLOP/s at the "
           f"start, {r['peak_gflops_end']:.1f} at the end. Other people's work shared the "
           "machine: each time is the median over rounds in which every strategy ran one epoch "
           "in turn, and each FLOP/s fraction is of the peak measured in the same rounds.", "",
           "Command: `python -m experiments.bench_ensemble" + (" --quick`" if r["quick"] else "`"),
           ""]
  for name, title in (("mlp", "16 Purchase100 MLPs"), ("cnn", "16 Fashion-MNIST CNNs")):
    b = r[name]
    lines += [f"## {title} (pool {b['pool']}, batch {b['batch_size']}, "
              f"{b['real_steps_per_epoch']} model-steps per epoch, "
              f"{b['flops_per_model_step'] / 1e9:.2f} GFLOP per model-step)", "",
              f"Matmul peak measured in each round: "
              f"{', '.join(f'{p:.0f}' for p in b['round_peaks'])} GFLOP/s (median "
              f"{b['peak_gflops']:.0f}: the fractions below are of it).", "",
              "| strategy | resolves to | s / epoch | rounds | vs sequential loop | GFLOP/s | "
              "of matmul peak |", "|---|---|---|---|---|---|---|"]
    for label, row in b["rows"].items():
      lines.append(f"| {label} | {row['strategy']} | {row['seconds_per_epoch']:.2f} | "
                   f"{row['rounds']} | {row['speedup_vs_loop']:.2f}x | {row['gflops']:.1f} | "
                   f"{100 * row['peak_fraction']:.0f}% |")
    lines.append("")
  s = r["scaling"]
  lines += [f"## Scaling, MLP under auto ({s['strategy']}), pool {s['pool']}, matmul peak "
            f"{s['peak_gflops']:.0f} GFLOP/s", "",
            "| M | s / epoch | s / model | of matmul peak |", "|---|---|---|---|"]
  for m, v in s["sizes"].items():
    lines.append(f"| {m} | {v['seconds_per_epoch']:.2f} | {v['seconds_per_model']:.3f} | "
                 f"{100 * v['peak_fraction']:.0f}% |")
  lines += ["", f"Seconds per model, largest over smallest: "
            f"{s['max_over_min_seconds_per_model']:.3f} (linear within 10% if <= 1.10).", ""]
  m = r["memory"]
  lines += [f"Peak RSS of a fresh process training M = {m['models']} MLPs for two epochs "
            f"({m['strategy']}): **{m['peak_rss_mib']:.0f} MiB** (parameters and Adam moments: "
            f"{m['state_mib']:.0f} MiB); {m['train_s_two_epochs']:.1f}s with compilation.", ""]
  mlp_rows, cnn_rows = r["mlp"]["rows"], r["cnn"]["rows"]
  ratio = {k: v["rows"]["auto"]["speedup_vs_loop"] for k, v in (("mlp", r["mlp"]),
                                                                  ("cnn", r["cnn"]))}
  ok = lambda c: "met" if c else "**not met**"
  lines += ["## Goals", "",
            "| goal | measured | |", "|---|---|---|",
            f"| auto never slower than the sequential loop | MLP {ratio['mlp']:.2f}x, CNN "
            f"{ratio['cnn']:.2f}x (auto is the loop itself for the MLP: equal up to noise) | "
            f"{ok(ratio['mlp'] >= 0.95 and ratio['cnn'] >= 1.0)} |",
            f"| CNN: auto at least 1.5x faster than the loop | {ratio['cnn']:.2f}x | "
            f"{ok(ratio['cnn'] >= 1.5)} |",
            f"| MLP: at least 70% of the matmul peak | "
            f"{100 * max(v['peak_fraction'] for v in mlp_rows.values()):.0f}% (best strategy; "
            f"{100 * max(v['peak_fraction'] for v in s['sizes'].values()):.0f}% in the scaling "
            f"rounds) | {ok(max(v['peak_fraction'] for v in mlp_rows.values()) >= 0.7)} |",
            f"| CNN: at least 40% of the matmul peak | "
            f"{100 * max(v['peak_fraction'] for v in cnn_rows.values()):.0f}% (best strategy) | "
            f"{ok(max(v['peak_fraction'] for v in cnn_rows.values()) >= 0.4)} |",
            f"| MLP time linear in M within 10% | {s['max_over_min_seconds_per_model']:.3f} | "
            f"{ok(s['max_over_min_seconds_per_model'] <= 1.1)} |", ""]
  f = r["float16"]
  lines += ["## float16 logits store (LiRA online, 4 targets, 16 MLPs)", "",
            f"Scores differ by at most {f['max_abs_score_diff']:.3g} (median "
            f"{f['median_abs_score_diff']:.2g}; median |score| {f['score_scale_median_abs']:.3g});"
            f" AUC by at most {f['max_abs_auc_diff']:.2g}; TPR at 0.1% FPR by at most "
            f"{f['max_abs_tpr_at_0.1%_diff']:.2g}.", ""]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=os.path.join(RESULTS, "bench_ensemble"))
  p.add_argument("--markdown_only", action="store_true",
                 help="rewrite OUT.md from OUT.json without measuring")
  args = p.parse_args(argv)
  if args.markdown_only:
    with open(args.out + ".json") as f:
      result = json.load(f)
    with open(args.out + ".md", "w") as f:
      f.write(markdown(result))
    return
  log = lambda s: print(s, flush=True)
  t0 = time.perf_counter()
  rounds = 1 if args.quick else 3
  peak = matmul_peak(1024 if args.quick else 2048)
  log(f"matmul peak {peak:.1f} GFLOP/s")
  result = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": jax.device_count(), "quick": args.quick, "peak_gflops": peak}
  for name, pool in (("mlp", 1024 if args.quick else 2048), ("cnn", 256 if args.quick else 512)):
    model, x, _, _ = workload(name, 16, 8)
    result[name] = compare(name, variants_for(name, model, x[:1]), 16, pool, rounds, peak, log)
  result["scaling"] = scaling((8, 16) if args.quick else (8, 16, 32, 64),
                              1024 if args.quick else 2048, rounds, peak, log)
  result["memory"] = rss_of_training(16 if args.quick else 64, 1024 if args.quick else 2048)
  log(f"memory: {result['memory']}")
  result["float16"] = float16_store(log)
  result["peak_gflops_end"] = matmul_peak(1024 if args.quick else 2048)
  result["total_s"] = time.perf_counter() - t0
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(result, f, indent=1, default=float)
  with open(args.out + ".md", "w") as f:
    f.write(markdown(result))
  log(markdown(result))
  log(f"total {result['total_s']:.0f}s")


if __name__ == "__main__":
  main()
