"""Time and memory of one training step: plain vs DP-SGD (reference and fast clipping), on CPU.

Run: python experiments/bench_dp.py            (all cases, each in its own subprocess)
     python experiments/bench_dp.py --quick    (fewer repetitions)
Writes experiments/results/bench_dp.md and experiments/results/bench_dp.json.

Cases: the Purchase100 network (MLP 600-1024-512-256-128-100, tanh, 1.317M params) at batch 256
on 600-d binary inputs, and a Fashion-MNIST-sized CNN (28x28x1, channels (32, 64), GroupNorm)
at batch 128. Each step = gradient + optax Adam update; DP steps add privatize (Gaussian noise on
the clipped sum). Time: median of `reps` jitted steps after warm-up. Memory: XLA's compiled
memory analysis (temporaries + arguments + outputs - aliased) and the subprocess's peak RSS.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    "mlp": [("plain", {}), ("dp_fast", {}), ("dp_reference", {"microbatch_size": 32})],
    "cnn": [("plain", {}), ("dp_fast", {}), ("dp_fast", {"conv_norm": "ghost"}),
            ("dp_fast", {"conv_norm": "vmap"}), ("dp_reference", {"microbatch_size": 32})],
}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _setup(case):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mia_jax.models.cnn import CNN
  from mia_jax.models.mlp import MLP, PURCHASE_HIDDEN
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
  return model, params, jnp.asarray(x), jnp.asarray(y, jnp.int32)


def _make_step(model, variant, opts):
  import jax
  import jax.numpy as jnp
  import optax
  from mia_jax import privacy
  tx = optax.adam(1e-3)
  apply_fn = privacy.apply_fn_for(model)

  if variant == "plain":
    def step(params, opt_state, x, y, mask, key, i):
      def loss(p):
        l = privacy.per_example_xent(apply_fn(p, x, None), y)
        return jnp.sum(l * mask) / x.shape[0]
      _, g = jax.value_and_grad(loss)(params)
      upd, opt_state = tx.update(g, opt_state, params)
      return optax.apply_updates(params, upd), opt_state
  else:
    method = "fast" if variant == "dp_fast" else "reference"

    def step(params, opt_state, x, y, mask, key, i):
      gsum, _ = privacy.clipped_grad_sum(apply_fn, params, x, y, mask, clip_norm=1.0,
                                         method=method, **opts)
      g = privacy.privatize(gsum, key, step=i, noise_multiplier=1.0, clip_norm=1.0,
                            expected_batch_size=x.shape[0])
      upd, opt_state = tx.update(g, opt_state, params)
      return optax.apply_updates(params, upd), opt_state
  return tx, jax.jit(step, donate_argnums=(0, 1))


def _label(variant, opts):
  opts = ",".join(f"{k}={v}" for k, v in opts.items())
  return variant + (f" ({opts})" if opts else "")


def _compiled_variants(case, with_parts):
  """{label: (compiled_fn, args, variant_dict)} for every variant of `case` (and parts)."""
  import jax
  import jax.numpy as jnp
  from mia_jax import privacy
  model, params, x, y = _setup(case)
  mask = jnp.ones(x.shape[0], jnp.float32)
  key = jax.random.key(1)
  out = {}
  for variant, opts in CASES[case]:
    tx, step = _make_step(model, variant, opts)
    args = (params, tx.init(params), x, y, mask, key, 0)
    out[_label(variant, opts)] = (step, args, {"variant": variant, "opts": opts})
  if with_parts:  # the pieces of a step, for the breakdown table
    apply_fn = privacy.apply_fn_for(model)
    mean_loss = lambda p: jnp.mean(privacy.per_example_xent(apply_fn(p, x, None), y))
    out["part: value_and_grad (no update)"] = (jax.jit(jax.value_and_grad(mean_loss)),
                                               (params,), None)
    out["part: fast clipped sum (no noise/update)"] = (jax.jit(
        lambda p: privacy.clipped_grad_sum(apply_fn, p, x, y, mask, clip_norm=1.0)), (params,),
                                                       None)
    out["part: privatize (noise)"] = (jax.jit(
        lambda p: privacy.privatize(p, key, step=3, noise_multiplier=1.0, clip_norm=1.0,
                                    expected_batch_size=1.0)), (params,), None)
  return int(x.shape[0]), out


def measure_memory(case, label):
  """XLA memory analysis and peak RSS of one variant, compiled and run twice in this process."""
  import jax
  _, variants = _compiled_variants(case, with_parts=False)
  step, args, meta = variants[label]
  t0 = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
          - mem.alias_size_in_bytes)
  params, opt_state = args[:2]
  for i in range(2):
    params, opt_state = compiled(params, opt_state, *args[2:6], i)
  jax.block_until_ready(params)
  return dict(meta, case=case, label=label, compile_s=compile_s,
              xla_temp_mb=mem.temp_size_in_bytes / 2**20, xla_peak_mb=peak / 2**20,
              max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure_time(case, reps):
  """Median step time of every variant of `case`, interleaved round-robin against load drift.

  Steps are run without donation so that every variant reuses the same inputs; the reference
  variants run in every fifth round only (they are 10-200x slower).
  """
  import jax
  batch, variants = _compiled_variants(case, with_parts=True)
  compiled = {}
  for label, (fn, args, _) in variants.items():
    fn = jax.jit(fn.__wrapped__) if hasattr(fn, "__wrapped__") else fn  # drop donation
    compiled[label] = (fn.lower(*args).compile(), args)
    jax.block_until_ready(compiled[label][0](*args))  # warm-up
  times = {label: [] for label in compiled}
  for r in range(reps):
    for label, (fn, args) in compiled.items():
      if "reference" in label and r % 5:
        continue
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[label].append(time.perf_counter() - t)
  return {label: {"median_ms": 1e3 * statistics.median(v),
                  "q25_ms": 1e3 * float(sorted(v)[len(v) // 4]), "min_ms": 1e3 * min(v),
                  "n": len(v), "batch": batch}
          for label, v in times.items()}


def write_results(results, path_md, path_json):
  with open(path_json, "w") as f:
    json.dump(results, f, indent=1)
  lines = ["# DP-SGD step cost on CPU", "",
           f"Machine: {results['machine']}. Step = gradient + optax Adam update (DP adds "
           "privatize: Gaussian noise on the clipped sum). Times: jitted steps interleaved "
           "round-robin across variants (the machine's 2 cores are shared, so absolute times "
           f"drift; ratios are taken within one interleaved run), {results['reps']} rounds "
           "(reference: every fifth). XLA peak = temporaries + arguments + outputs - aliased "
           "(compiled memory analysis, arguments include params and Adam state); RSS = peak "
           "resident memory of a subprocess that compiles and runs that variant alone.", "",
           "| case | variant | batch | median ms | q25 ms | x plain (median) | XLA peak MB | "
           "x plain | RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
  for case in CASES:
    t = results["time"][case]
    mem = {m["label"]: m for m in results["memory"] if m["case"] == case}
    plain_t, plain_m = t["plain"], mem["plain"]
    for label, m in mem.items():
      r = t[label]
      lines.append(
          f"| {case} | {label} | {r['batch']} | {r['median_ms']:.1f} | {r['q25_ms']:.1f} | "
          f"{r['median_ms'] / plain_t['median_ms']:.2f} | {m['xla_peak_mb']:.1f} | "
          f"{m['xla_peak_mb'] / plain_m['xla_peak_mb']:.2f} | {m['max_rss_mb']:.0f} |")
  lines += ["", "Parts of a step (same interleaved runs):", "",
            "| case | part | median ms | x plain step |", "|---|---|---|---|"]
  for case in CASES:
    t = results["time"][case]
    for label, r in t.items():
      if label.startswith("part:"):
        lines.append(f"| {case} | {label[6:]} | {r['median_ms']:.1f} | "
                     f"{r['median_ms'] / t['plain']['median_ms']:.2f} |")
  lines += ["", "Against the goals (median time; XLA peak memory):", ""]
  for case, goal in (("mlp", 1.25), ("cnn", 1.5)):
    t, mem = results["time"][case], {m["label"]: m for m in results["memory"] if m["case"] == case}
    rt = t["dp_fast"]["median_ms"] / t["plain"]["median_ms"]
    rq = t["dp_fast"]["q25_ms"] / t["plain"]["q25_ms"]
    rm = mem["dp_fast"]["xla_peak_mb"] / mem["plain"]["xla_peak_mb"]
    clip = t["part: fast clipped sum (no noise/update)"]["median_ms"] / t[
        "part: value_and_grad (no update)"]["median_ms"]
    noise = t["part: privatize (noise)"]["median_ms"] / t["plain"]["median_ms"]
    lines.append(
        f"- {case}: dp_fast {rt:.2f}x plain (q25 {rq:.2f}x; goal {goal}x: "
        f"{'met' if rt <= goal else 'missed'}); memory {rm:.2f}x (goal 1.3x: "
        f"{'met' if rm <= 1.3 else 'missed'}). Clipped sum alone {clip:.2f}x a plain "
        f"value_and_grad; the noise alone {noise:.2f}x a plain step.")
  lines += ["", "Goals: dp_fast <= 1.25x plain (MLP), <= 1.5x (CNN); dp_fast memory <= 1.3x "
            "plain. dp_reference is jax_privacy's clipped_grad (vmapped per-example gradients) "
            "with the stated microbatch size; conv_norm selects how the fast path forms Conv "
            "per-example norms (auto = im2col patches at 28x28)."]
  with open(path_md, "w") as f:
    f.write("\n".join(lines) + "\n")


def _sub(*args):
  cmd = [sys.executable, os.path.abspath(__file__), *args]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True)
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
  import jax
  results = {"machine": f"{os.cpu_count()} CPU cores, jax {jax.__version__}",
             "reps": args.reps, "time": {}, "memory": []}
  for case in CASES:
    for variant, opts in CASES[case]:
      label = _label(variant, opts)
      m = _sub("--memory", case, label)
      print(f"{case:4s} {label:32s} XLA peak {m['xla_peak_mb']:7.1f} MB  "
            f"RSS {m['max_rss_mb']:6.0f} MB  compile {m['compile_s']:.1f} s", flush=True)
      results["memory"].append(m)
    results["time"][case] = _sub("--time", case, "--reps", str(args.reps))
    for label, r in results["time"][case].items():
      print(f"{case:4s} {label:42s} {r['median_ms']:9.1f} ms (q25 {r['q25_ms']:.1f})",
            flush=True)
  os.makedirs(OUT, exist_ok=True)
  write_results(results, os.path.join(OUT, "bench_dp.md"), os.path.join(OUT, "bench_dp.json"))


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  main()
