"""Benchmark: every attack on synthetic logits of CIFAR-10 LiRA size, on the CPU.

  python -m experiments.bench_attacks           # M=256 N=50000 Q=2 C=10, 4 targets
  python -m experiments.bench_attacks --small   # a quick try: M=16 N=2000

Logits are float32 [M, N, Q, C] (1 GiB at full size), drawn as N(0, 1) noise plus a boost of
the true class: 1 + difficulty_i + vulnerability_i * keep[m, i] + 0.3 * N(0, 1), with
difficulty_i ~ N(0, 1) and vulnerability_i ~ Exp(0.5), and the mirror query a noisy copy.
Each attack runs on the same AttackData in the order below; an attack's time includes the
shared work it triggers first (signals over all models, LiRA's sorted shadow tables), and
the later ones reuse it from the cache, as `evaluate_attacks` does. A second pass over as
many new targets gives the marginal seconds per extra target. Times are wall-clock
seconds of `attacks.run` (scores) and of the per-target metrics; peak RSS is the process's
ru_maxrss after each attack. Last, the shadow-scaling curve of one target (every shadow-based
attack at every size of scaling.scaling_sizes(M), as a run with attack.scaling_targets=1
computes it). Writes experiments/results/bench_attacks.{md,json}.

To time another commit's attacks on the same data, run this file with that commit's tree
first on PYTHONPATH (it reads only attacks.run, metrics and scaling.shadow_scaling):
  git archive REV | tar -x -C /tmp/rev
  PYTHONPATH=/tmp/rev python experiments/bench_attacks.py --out /tmp/rev_bench
"""

import argparse
import json
import os
import platform
import resource
import time

import numpy as np

from mia_jax import attacks, metrics
from mia_jax.attacks import scaling

ORDER = ["loss", "confidence", "entropy", "modified_entropy", "lira_online",
         "lira_online_fixed_var", "lira_offline", "lira_offline_fixed_var",
         "lira_offline_logpdf", "rmia_online", "rmia_offline", "shokri"]


def synthetic(m: int, n: int, q: int, c: int, seed: int = 0) -> attacks.AttackData:
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
  difficulty = rng.normal(size=n).astype(np.float32)
  vulnerability = rng.exponential(0.5, size=n).astype(np.float32)
  logits = np.empty((m, n, q, c), np.float32)
  rows = np.arange(n)
  for k in range(m):
    z = rng.standard_normal((n, q, c), dtype=np.float32)
    for j in range(1, q):
      z[:, j] = z[:, 0] + 0.3 * rng.standard_normal((n, c), dtype=np.float32)
    boost = (1.0 + difficulty + vulnerability * keep[k]
             + 0.3 * rng.standard_normal(n, dtype=np.float32))
    z[rows, :, labels] += boost[:, None]
    logits[k] = z
  return attacks.AttackData(logits=logits, labels=labels, keep=keep)


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", type=int, default=256)
  parser.add_argument("--examples", type=int, default=50_000)
  parser.add_argument("--queries", type=int, default=2)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--targets", type=int, default=4)
  parser.add_argument("--small", action="store_true", help="M=16, N=2000")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = parser.parse_args()
  if args.small:
    args.models, args.examples = 16, 2000
  shape = (args.models, args.examples, args.queries, args.classes)
  targets = list(range(args.targets))

  t0 = time.perf_counter()
  data = synthetic(*shape)
  gen_s = time.perf_counter() - t0
  base_rss = peak_rss_gib()
  print(f"synthetic logits {shape} float32 in {gen_s:.1f}s, peak RSS {base_rss:.2f} GiB")

  rows = []
  for name in ORDER:
    t0 = time.perf_counter()
    scores = attacks.run(name, data, targets)
    run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    per = [metrics.evaluate(scores[r], data.keep[t]) for r, t in enumerate(targets)]
    metric_s = time.perf_counter() - t0
    row = {"attack": name, "run_s": run_s, "metrics_s": metric_s,
           "peak_rss_gib": peak_rss_gib(),
           "auc_mean": float(np.mean([p["auc"] for p in per])),
           "tpr_at_0.001_mean": float(np.mean([p["tpr_at_fpr"]["0.001"] for p in per]))}
    rows.append(row)
    print(f"{name:24s} run {run_s:6.2f}s  metrics {metric_s:5.2f}s  "
          f"peak {row['peak_rss_gib']:.2f} GiB  AUC {row['auc_mean']:.4f}  "
          f"TPR@0.1% {row['tpr_at_0.001_mean']:.4f}")

  # Marginal cost: the same attacks on as many NEW targets, shared caches already warm.
  extra = list(range(len(targets), min(2 * len(targets), shape[0])))
  for row in rows:
    t0 = time.perf_counter()
    attacks.run(row["attack"], data, extra)
    row["per_extra_target_s"] = (time.perf_counter() - t0) / max(len(extra), 1)

  t0 = time.perf_counter()
  metrics.evaluate(attacks.run("lira_online", data, [0])[0], data.keep[0], bootstrap=1000)
  bootstrap_s = time.perf_counter() - t0

  t0 = time.perf_counter()
  curve = scaling.shadow_scaling(data, ORDER, [0], seed=0)
  scaling_s = time.perf_counter() - t0
  print(f"shadow-scaling curve, one target, sizes {curve['sizes']}: {scaling_s:.1f}s")

  total = sum(r["run_s"] + r["metrics_s"] for r in rows)
  peak = max(r["peak_rss_gib"] for r in rows)
  result = {
      "shape": {"M": shape[0], "N": shape[1], "Q": shape[2], "C": shape[3]},
      "dtype": "float32", "targets": targets, "generate_s": gen_s,
      "rss_after_generation_gib": base_rss, "total_attack_s": total, "peak_rss_gib": peak,
      "bootstrap_1000_one_target_s": bootstrap_s,
      "scaling_one_target_s": scaling_s, "scaling_sizes": curve["sizes"],
      "scaling_attacks": sorted(curve["attacks"]),
      "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
      "numpy": np.__version__, "attacks": rows,
  }
  lines = [
      "# Attack benchmark (CPU)", "",
      f"Synthetic float32 logits M={shape[0]} models, N={shape[1]} examples, Q={shape[2]} "
      f"queries, C={shape[3]} classes ({np.prod(shape) * 4 / 2**30:.2f} GiB); "
      f"{len(targets)} targets {targets}; {os.cpu_count()} CPU cores (shared), numpy "
      f"{np.__version__}. Generated in {gen_s:.1f}s; peak RSS after generation "
      f"{base_rss:.2f} GiB.", "",
      "Attacks run in this order on one AttackData; the first to need a shared cache "
      "(signals over all models, LiRA's sorted tables) pays for it.", "",
      "| attack | scores (s) | metrics (s) | peak RSS (GiB) | AUC (mean) | TPR @ 0.1% FPR "
      "| s per extra target |",
      "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    lines.append(f"| {r['attack']} | {r['run_s']:.2f} | {r['metrics_s']:.2f} | "
                 f"{r['peak_rss_gib']:.2f} | {r['auc_mean']:.4f} | "
                 f"{r['tpr_at_0.001_mean']:.4f} | {r['per_extra_target_s']:.3f} |")
  lines += ["", f"Total {total:.1f}s for all attacks and metrics on {len(targets)} targets; "
            f"peak RSS {peak:.2f} GiB (goal: under 60 s and 8 GiB). The last column is the "
            f"marginal time per target, measured afterwards on {len(extra)} new targets with "
            "the shared caches warm (it excludes metrics and is not in the total). "
            f"metrics.evaluate with bootstrap=1000 on one target: {bootstrap_s:.2f}s.", "",
            f"Shadow-scaling curve of one target (every shadow-based attack, sizes "
            f"{curve['sizes']}): {scaling_s:.1f}s.", ""]
  os.makedirs(args.out, exist_ok=True)
  suffix = "_small" if args.small else ""
  with open(os.path.join(args.out, f"bench_attacks{suffix}.md"), "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(args.out, f"bench_attacks{suffix}.json"), "w") as f:
    json.dump(result, f, indent=2)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
