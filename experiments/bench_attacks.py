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
ru_maxrss after each attack. Then the array-level functions on one target with every other
model as references (lira.score, rmia.score: the references gathered and sorted per call, no
cache), metrics.evaluate per target, and last the shadow-scaling curve of one target (every
shadow-based attack at every size of scaling.scaling_sizes(M), as a run with
attack.scaling_targets=1 computes it). Writes experiments/results/bench_attacks.{md,json}.

To time another commit's attacks on the same data, run this file with that commit's tree
first on PYTHONPATH (it reads attacks.run, metrics and scaling.shadow_scaling; the array-level
rows are left out for a tree without lira.score):
  git archive REV | tar -x -C /tmp/rev
  PYTHONPATH=/tmp/rev python experiments/bench_attacks.py --out /tmp/rev_bench
  python -m experiments.bench_attacks --compare /tmp/rev_bench/bench_attacks.json \
      --compare-label "commit REV"
(this file both times, with the other tree's mia_jax the first: the two JSONs hold the same
keys).
"""

import argparse
import json
import os
import platform
import resource
import time

import numpy as np

from mia_jax import attacks, metrics
from mia_jax.attacks import references, scaling, signals

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


def time_array_functions(data: attacks.AttackData, target: int = 0) -> dict:
  """Seconds of lira.score and rmia.score on one target, every other model its references
  (the surplus shadow of the exact design masked out, as the registry does)."""
  if not hasattr(attacks.lira, "score"):
    return {}
  rows = np.delete(np.arange(data.num_models), target)
  refs = references.select(data.keep, target)
  mask, inside = (refs.inside | refs.outside)[rows], np.asarray(data.keep)[rows]
  t0 = time.perf_counter()
  phi = signals.scaled_logit(data.logits, data.labels[:, None])
  signal_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  attacks.lira.score(phi[target], phi[rows], inside, mask=mask)
  lira_s = time.perf_counter() - t0
  prob = attacks.rmia.probability(data.logits, data.labels)
  t0 = time.perf_counter()
  attacks.rmia.score(prob[target], prob[rows], inside, mask=mask, z_pool=~data.keep[target])
  return {"scaled_logit_all_models_s": signal_s, "lira_score_one_target_s": lira_s,
          "rmia_score_one_target_s": time.perf_counter() - t0}


def time_evaluate(scores: np.ndarray, keep: np.ndarray, repeats: int = 5) -> float:
  """Milliseconds of metrics.evaluate (every interval) on one target's scores, the best of
  `repeats` calls over each row of scores [T, N]."""
  best = []
  for row, member in zip(scores, keep):
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      metrics.evaluate(row, member)
      times.append(time.perf_counter() - t0)
    best.append(min(times))
  return 1e3 * float(np.median(best))


def time_registry(data: attacks.AttackData, targets: list[int]) -> list[dict]:
  """One row per attack of ORDER: seconds of attacks.run and of the per-target metrics, peak
  RSS, mean AUC and TPR at 0.1% FPR, and the marginal seconds per extra target."""
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
  extra = list(range(len(targets), min(2 * len(targets), data.num_models)))
  for row in rows:
    t0 = time.perf_counter()
    attacks.run(row["attack"], data, extra)
    row["per_extra_target_s"] = (time.perf_counter() - t0) / max(len(extra), 1)
  return rows


def comparison(result: dict, before: dict, label: str) -> list[str]:
  """A table of this run's seconds against `before` (another run's bench_attacks.json, e.g.
  another commit's on the same machine): each attack's scores, its marginal target, and the
  totals, with the ratio now / before."""
  old = {r["attack"]: r for r in before["attacks"]}
  load = before.get("load_average_1min")
  at = f", run at 1-minute load {load[0]:.1f}-{load[1]:.1f}" if load else ""
  lines = [f"Against {label} (its bench_attacks.json{at}; ratio = now / before):", "",
           "| attack | scores (s) now / before | ratio | s per extra target now / before | "
           "ratio |", "|---|---:|---:|---:|---:|"]
  ratio = lambda a, b: f"{a / b:.2f}" if b > 0 else "n/a"
  for r in result["attacks"]:
    if r["attack"] not in old:
      continue
    o = old[r["attack"]]
    lines.append(f"| {r['attack']} | {r['run_s']:.2f} / {o['run_s']:.2f} | "
                 f"{ratio(r['run_s'], o['run_s'])} | {r['per_extra_target_s']:.3f} / "
                 f"{o['per_extra_target_s']:.3f} | "
                 f"{ratio(r['per_extra_target_s'], o['per_extra_target_s'])} |")
  for key in ("total_attack_s", "scaling_one_target_s", "bootstrap_1000_one_target_s",
              "evaluate_one_target_ms"):
    if key in before:
      lines.append(f"| {key} | {result[key]:.2f} / {before[key]:.2f} | "
                   f"{ratio(result[key], before[key])} | | |")
  return lines + [""]


def markdown(result: dict, rows: list[dict]) -> list[str]:
  """The lines of bench_attacks.md from the result dict and the attack rows."""
  m, n, q, c = (result["shape"][k] for k in "MNQC")
  targets = result["targets"]
  lines = [
      "# Attack benchmark (CPU)", "",
      f"Synthetic float32 logits M={m} models, N={n} examples, Q={q} queries, C={c} classes "
      f"({m * n * q * c * 4 / 2**30:.2f} GiB); {len(targets)} targets {targets}; "
      f"{result['cpu_count']} CPU cores (shared; 1-minute load average "
      f"{result['load_average_1min'][0]:.1f} at the start, "
      f"{result['load_average_1min'][1]:.1f} at the end), numpy "
      f"{result['numpy']}. Generated in "
      f"{result['generate_s']:.1f}s; peak RSS after generation "
      f"{result['rss_after_generation_gib']:.2f} GiB.", "",
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
  lines += ["", f"Total {result['total_attack_s']:.1f}s for all attacks and metrics on "
            f"{len(targets)} targets; peak RSS {result['peak_rss_gib']:.2f} GiB (goal: under "
            "60 s and 8 GiB). The last column is the marginal time per target, measured "
            f"afterwards on {len(targets)} new targets with the shared caches warm (it excludes "
            "metrics and is not in the total). metrics.evaluate on one target's "
            f"{n} scores (every interval; the median over targets of the best of 5): "
            f"{result['evaluate_one_target_ms']:.1f} ms; with bootstrap=1000: "
            f"{result['bootstrap_1000_one_target_s']:.2f}s.", ""]
  if "lira_score_one_target_s" in result:
    lines += [f"Array level, one target, the {m - 1} other models as references: "
              f"lira.score {result['lira_score_one_target_s']:.2f}s, rmia.score "
              f"{result['rmia_score_one_target_s']:.2f}s (signals.scaled_logit over all models "
              f"{result['scaled_logit_all_models_s']:.2f}s first); no cache, so each call "
              "gathers and sorts its references.", ""]
  lines += [f"Shadow-scaling curve of one target (every shadow-based attack, sizes "
            f"{result['scaling_sizes']}): {result['scaling_one_target_s']:.1f}s.", ""]
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", type=int, default=256)
  parser.add_argument("--examples", type=int, default=50_000)
  parser.add_argument("--queries", type=int, default=2)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--targets", type=int, default=4)
  parser.add_argument("--small", action="store_true", help="M=16, N=2000")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  parser.add_argument("--compare", default=None,
                      help="another run's bench_attacks.json: adds a table of ratios")
  parser.add_argument("--compare-label", default="the earlier run")
  args = parser.parse_args()
  if args.small:
    args.models, args.examples = 16, 2000
  shape = (args.models, args.examples, args.queries, args.classes)
  targets = list(range(args.targets))

  load_start = os.getloadavg()[0]
  t0 = time.perf_counter()
  data = synthetic(*shape)
  gen_s = time.perf_counter() - t0
  base_rss = peak_rss_gib()
  print(f"synthetic logits {shape} float32 in {gen_s:.1f}s, peak RSS {base_rss:.2f} GiB")
  rows = time_registry(data, targets)
  lira_scores = attacks.run("lira_online", data, targets)
  evaluate_ms = time_evaluate(lira_scores, np.asarray(data.keep)[targets])
  t0 = time.perf_counter()
  metrics.evaluate(lira_scores[0], data.keep[0], bootstrap=1000)
  bootstrap_s = time.perf_counter() - t0
  arrays = time_array_functions(data)
  t0 = time.perf_counter()
  curve = scaling.shadow_scaling(data, ORDER, [0], seed=0)
  scaling_s = time.perf_counter() - t0
  print(f"shadow-scaling curve, one target, sizes {curve['sizes']}: {scaling_s:.1f}s")

  result = {
      "shape": {"M": shape[0], "N": shape[1], "Q": shape[2], "C": shape[3]},
      "dtype": "float32", "targets": targets, "generate_s": gen_s,
      "rss_after_generation_gib": base_rss,
      "total_attack_s": sum(r["run_s"] + r["metrics_s"] for r in rows),
      "peak_rss_gib": max(r["peak_rss_gib"] for r in rows),
      "bootstrap_1000_one_target_s": bootstrap_s, "evaluate_one_target_ms": evaluate_ms,
      **arrays, "scaling_one_target_s": scaling_s, "scaling_sizes": curve["sizes"],
      "scaling_attacks": sorted(curve["attacks"]),
      "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
      "load_average_1min": [load_start, os.getloadavg()[0]],
      "numpy": np.__version__, "attacks": rows,
  }
  lines = markdown(result, rows)
  if args.compare:
    with open(args.compare) as f:
      lines += comparison(result, json.load(f), args.compare_label)
  os.makedirs(args.out, exist_ok=True)
  suffix = "_small" if args.small else ""
  with open(os.path.join(args.out, f"bench_attacks{suffix}.md"), "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(args.out, f"bench_attacks{suffix}.json"), "w") as f:
    json.dump(result, f, indent=2)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
