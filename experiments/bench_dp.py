"""Time and memory of one training step: plain vs DP-SGD (reference and fast clipping), on CPU.

Run: python -m experiments.bench_dp            (all cases, each variant in its own subprocess)
     python -m experiments.bench_dp --reps 10  (fewer rounds)
Writes experiments/results/bench_dp.md and experiments/results/bench_dp.json; the ratios of the
previous bench_dp.json stand beside the new ones, and the markdown's section "Kept across
reruns" is carried over.

Cases: the Purchase100 network (MLP 600-1024-512-256-128-100, tanh, 1.317M params) at batch 256
on 600-d binary inputs, and a Fashion-MNIST-sized CNN (28x28x1, channels (32, 64), GroupNorm)
at batch 128. Every step is built from the public API only: plain = jax.value_and_grad of the
mean of mia_jax.training.losses.softmax_cross_entropy, then optax.adam; DP =
mia_jax.privacy.clipped_grad's clipped sum, then optax.chain(gaussian_privatizer, adam).
Time: rounds interleaved across variants (the 2 cores are shared: absolute times drift, so each
ratio is the median over rounds of (variant / plain) within a round, with its 95% interval over
rounds from order statistics). Memory: XLA's compiled memory analysis (temporaries + arguments
+ outputs - aliased; deterministic) and the subprocess's peak RSS.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from mia_jax import privacy
from mia_jax.models.cnn import CNN
from mia_jax.models.mlp import MLP, PURCHASE_HIDDEN
from mia_jax.training import losses

CASES = {
    "mlp": [("plain", {}), ("dp_fast", {}), ("dp_reference", {"microbatch_size": 32})],
    "cnn": [("plain", {}), ("dp_fast", {}), ("dp_fast", {"conv_norm": "ghost"}),
            ("dp_fast", {"conv_norm": "vmap"}), ("dp_reference", {"microbatch_size": 32})],
}
PARTS = ("part: value_and_grad (no update)", "part: fast clipped sum (no noise/update)",
         "part: privatizer (noise)")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KEPT = "## Kept across reruns"
REFERENCE_EVERY = 5   # the reference variants run in every fifth round only (10-200x slower)


def _setup(case):
  rng = np.random.default_rng(0)
  if case == "mlp":
    model = MLP(hidden=PURCHASE_HIDDEN, num_classes=100, activation="tanh")
    x = (rng.random((256, 600)) < 0.2).astype(np.float32)
    y = rng.integers(0, 100, 256)
  else:
    model = CNN(channels=(32, 64), num_classes=10, norm="group")
    x = rng.normal(size=(128, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 128)
  params = model.init(jax.random.key(0), jnp.asarray(x[:1]))["params"]
  logits_fn = lambda p, inputs, rng: model.apply({"params": p}, inputs, train=True)
  return logits_fn, params, jnp.asarray(x), jnp.asarray(y, jnp.int32)


def _make_step(logits_fn, batch_size, variant, opts):
  """(tx, step(params, opt_state, x, y, mask, key) -> (params, opt_state)) of one variant."""
  if variant == "plain":
    tx = optax.adam(1e-3)

    def step(params, opt_state, x, y, mask, key):
      del key
      def mean_loss(p):
        return jnp.sum(losses.softmax_cross_entropy(logits_fn(p, x, None), y) * mask) / len(y)
      _, grads = jax.value_and_grad(mean_loss)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state
    return tx, step
  grad_fn = privacy.clipped_grad(losses.softmax_cross_entropy, clip_norm=1.0,
                                 method="fast" if variant == "dp_fast" else "reference", **opts)
  tx = optax.chain(privacy.gaussian_privatizer(noise_multiplier=1.0, l2_sensitivity=1.0,
                                               expected_batch_size=batch_size),
                   optax.adam(1e-3))

  def dp_step(params, opt_state, x, y, mask, key):
    grad_sum, _ = grad_fn(logits_fn, params, (x, y, mask))
    updates, opt_state = tx.update(grad_sum, opt_state, params, noise_key=key)
    return optax.apply_updates(params, updates), opt_state
  return tx, dp_step


def _label(variant, opts):
  opts = ",".join(f"{k}={v}" for k, v in opts.items())
  return variant + (f" ({opts})" if opts else "")


def _variants(case, with_parts):
  """{label: (function, args)} for every variant of `case` (and the parts of a step)."""
  logits_fn, params, x, y = _setup(case)
  mask = jnp.ones(x.shape[0], jnp.float32)
  key = jax.random.key(1)
  out = {}
  for variant, opts in CASES[case]:
    tx, step = _make_step(logits_fn, x.shape[0], variant, opts)
    out[_label(variant, opts)] = (step, (params, tx.init(params), x, y, mask, key))
  if with_parts:
    mean_loss = lambda p: jnp.mean(losses.softmax_cross_entropy(logits_fn(p, x, None), y))
    grad_fn = privacy.clipped_grad(losses.softmax_cross_entropy, clip_norm=1.0)
    privatizer = privacy.gaussian_privatizer(noise_multiplier=1.0, l2_sensitivity=1.0,
                                             expected_batch_size=1.0)
    out[PARTS[0]] = (jax.value_and_grad(mean_loss), (params,))
    out[PARTS[1]] = (lambda p: grad_fn(logits_fn, p, (x, y, mask)), (params,))
    out[PARTS[2]] = (lambda p, s: privatizer.update(p, s, noise_key=key),
                     (params, privatizer.init(params)))
  return int(x.shape[0]), out


def measure_memory(case, label):
  """XLA memory analysis and peak RSS of one variant, compiled (state donated) and run twice."""
  _, variants = _variants(case, with_parts=False)
  step, args = variants[label]
  t0 = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
          - mem.alias_size_in_bytes)
  params, opt_state = args[:2]
  for _ in range(2):
    params, opt_state = compiled(params, opt_state, *args[2:])
  jax.block_until_ready(params)
  return dict(case=case, label=label, compile_s=compile_s,
              xla_temp_mb=mem.temp_size_in_bytes / 2**20, xla_peak_mb=peak / 2**20,
              max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure_time(case, reps):
  """Per-round times (ms) of every variant of `case`, rounds interleaved against load drift;
  without donation, so every variant reuses the same inputs."""
  batch, variants = _variants(case, with_parts=True)
  compiled = {}
  for label, (fn, args) in variants.items():
    compiled[label] = (jax.jit(fn).lower(*args).compile(), args)
    jax.block_until_ready(compiled[label][0](*args))  # warm-up
  rounds = {label: [None] * reps for label in compiled}
  for r in range(reps):
    for label, (fn, args) in compiled.items():
      if "reference" in label and r % REFERENCE_EVERY:
        continue
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      rounds[label][r] = 1e3 * (time.perf_counter() - t)
  return {"batch": batch, "rounds_ms": rounds}


def median_interval(values, level=0.95):
  """The median of `values` and its distribution-free interval (binomial order statistics)."""
  v = np.sort(np.asarray(values, np.float64))
  n = len(v)
  k = max(int(stats.binom.ppf((1 - level) / 2, n, 0.5)), 1)   # [v_(k), v_(n-k+1)], 1-based
  return float(np.median(v)), float(v[k - 1]), float(v[n - k])


def ratio_to_plain(t, label):
  """Median over rounds of t[label] / t['plain'] within each round, and its 95% interval."""
  pairs = [a / b for a, b in zip(t["rounds_ms"][label], t["rounds_ms"]["plain"])
           if a is not None]
  return median_interval(pairs)


def _median_ms(t, label):
  return statistics.median(v for v in t["rounds_ms"][label] if v is not None)


def _previous_ratios(path_json):
  """{(case, label): (time ratio, memory ratio)} of a former bench_dp.json ({} if none)."""
  if not os.path.exists(path_json):
    return {}
  with open(path_json) as f:
    old = json.load(f)
  out = {}
  for case, t in old.get("time", {}).items():
    mem = {m["label"]: m["xla_peak_mb"] for m in old["memory"] if m["case"] == case}
    rename = {"part: privatize (noise)": PARTS[2]}
    for label, r in t.items():
      ratio = r["median_ms"] / t["plain"]["median_ms"] if "median_ms" in r else None
      mem_ratio = mem[label] / mem["plain"] if label in mem else None
      out[(case, rename.get(label, label))] = (ratio, mem_ratio)
  return out


def _fmt(v, digits=2):
  return "-" if v is None else f"{v:.{digits}f}"


def _table(results, before):
  lines = ["| case | variant | batch | median ms | x plain [95% interval over rounds] | "
           "before | XLA peak MB | x plain | before | RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for case in CASES:
    t = results["time"][case]
    mem = {m["label"]: m for m in results["memory"] if m["case"] == case}
    for label, m in mem.items():
      ratio, lo, hi = ratio_to_plain(t, label)
      old_t, old_m = before.get((case, label), (None, None))
      lines.append(
          f"| {case} | {label} | {t['batch']} | {_median_ms(t, label):.1f} | {ratio:.2f} "
          f"[{lo:.2f}, {hi:.2f}] | {_fmt(old_t)} | {m['xla_peak_mb']:.1f} | "
          f"{m['xla_peak_mb'] / mem['plain']['xla_peak_mb']:.2f} | {_fmt(old_m)} | "
          f"{m['max_rss_mb']:.0f} |")
  lines += ["", "Parts of a step (same interleaved runs):", "",
            "| case | part | median ms | x plain step [95% interval] | before |",
            "|---|---|---|---|---|"]
  for case in CASES:
    t = results["time"][case]
    for label in PARTS:
      ratio, lo, hi = ratio_to_plain(t, label)
      lines.append(f"| {case} | {label[6:]} | {_median_ms(t, label):.1f} | {ratio:.2f} "
                   f"[{lo:.2f}, {hi:.2f}] | {_fmt(before.get((case, label), (None,))[0])} |")
  return lines


def _goals(results):
  lines = ["", "Against the goals (median time ratio; XLA peak memory):", ""]
  for case, goal in (("mlp", 1.25), ("cnn", 1.5)):
    t = results["time"][case]
    mem = {m["label"]: m["xla_peak_mb"] for m in results["memory"] if m["case"] == case}
    ratio, lo, hi = ratio_to_plain(t, "dp_fast")
    memory = mem["dp_fast"] / mem["plain"]
    lines.append(f"- {case}: dp_fast {ratio:.2f}x plain [{lo:.2f}, {hi:.2f}] (goal {goal}x: "
                 f"{'met' if ratio <= goal else 'missed'}); memory {memory:.2f}x (goal 1.3x: "
                 f"{'met' if memory <= 1.3 else 'missed'}).")
  lines += ["", "Goals: dp_fast <= 1.25x plain (MLP), <= 1.5x (CNN); dp_fast memory <= 1.3x "
            "plain. dp_reference is jax_privacy's clipped_grad (vmapped per-example gradients) "
            "with the stated microbatch size; conv_norm selects how the fast path forms Conv "
            "per-example norms (auto = im2col patches at 28x28). 'before': the ratio of the "
            "previous bench_dp.json (a median of per-variant medians, no interval kept)."]
  return lines


def write_results(results, path_md, path_json):
  before = _previous_ratios(path_json)
  kept = []
  if os.path.exists(path_md):
    with open(path_md) as f:
      text = f.read()
    if KEPT in text:
      kept = ["", text[text.index(KEPT):].rstrip("\n")]
  with open(path_json, "w") as f:
    json.dump(results, f, indent=1)
  lines = ["# DP-SGD step cost on CPU", "",
           f"Machine: {results['machine']}; {results['reps']} interleaved rounds (reference "
           f"variants every {REFERENCE_EVERY}th); command: `{results['command']}`. Step = "
           "gradient + optax Adam update; DP = clipped_grad's clipped sum, then "
           "optax.chain(gaussian_privatizer, adam). XLA peak = temporaries + arguments + "
           "outputs - aliased (compiled memory analysis, with params and Adam state; "
           "deterministic, no interval); RSS = peak resident memory of a subprocess that "
           "compiles and runs that variant alone.", ""]
  lines += _table(results, before) + _goals(results) + kept
  with open(path_md, "w") as f:
    f.write("\n".join(lines) + "\n")


def _sub(*args):
  cmd = [sys.executable, "-m", "experiments.bench_dp", *args]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--memory", nargs=2, metavar=("CASE", "LABEL"))
  parser.add_argument("--time", metavar="CASE")
  parser.add_argument("--reps", type=int, default=30)
  args = parser.parse_args()
  if args.memory:
    print(json.dumps(measure_memory(*args.memory)))
    return
  if args.time:
    print(json.dumps(measure_time(args.time, args.reps)))
    return
  results = {"machine": f"{os.cpu_count()} CPU cores, jax {jax.__version__}",
             "command": " ".join(["python -m experiments.bench_dp"] + sys.argv[1:]),
             "reps": args.reps, "time": {}, "memory": []}
  for case in CASES:
    for variant, opts in CASES[case]:
      m = _sub("--memory", case, _label(variant, opts))
      print(f"{case:4s} {m['label']:32s} XLA peak {m['xla_peak_mb']:7.1f} MB  "
            f"RSS {m['max_rss_mb']:6.0f} MB  compile {m['compile_s']:.1f} s", flush=True)
      results["memory"].append(m)
    results["time"][case] = _sub("--time", case, "--reps", str(args.reps))
    for label in results["time"][case]["rounds_ms"]:
      ratio, lo, hi = ratio_to_plain(results["time"][case], label)
      print(f"{case:4s} {label:42s} {ratio:.2f}x plain [{lo:.2f}, {hi:.2f}]", flush=True)
  os.makedirs(OUT, exist_ok=True)
  write_results(results, os.path.join(OUT, "bench_dp.md"), os.path.join(OUT, "bench_dp.json"))


if __name__ == "__main__":
  main()
