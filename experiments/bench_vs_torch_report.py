"""The summary of experiments/bench_vs_torch.py's runs: figures over repeats, ratios, issue 18's
goals marked met or not, and the markdown table (experiments/results/bench_vs_torch.md).

A run is {"repeat", "case", "side" ('mia_jax' | 'torch' | 'torch1': PyTorch on 2 threads or
1), "load", "result"}: a CLI run's
figures (bench_vs_torch.cli_figures), a PyTorch worker's (bench_vs_torch_baseline.py) or a
step worker's {"kind/variant": [seconds per step]}.
"""

import os
import statistics


def spread(values) -> dict:
  values = [float(v) for v in values if v is not None]
  if not values:
    return {"n": 0}
  return {"median": statistics.median(values), "min": min(values), "max": max(values),
          "n": len(values), "values": values}


def fmt(f: dict, scale: float = 1.0, digits: int = 2) -> str:
  """'median [min, max]' of a spread (the median alone for one repeat); '-' if not measured."""
  if not f or not f.get("n"):
    return "-"
  median, low, high = (f"{f[k] * scale:.{digits}f}" for k in ("median", "min", "max"))
  return f"{median} [{low}, {high}]" if f["n"] > 1 else median


TORCH = ("torch", "torch1")   # PyTorch on 2 threads (the cores) and on 1


def paired(runs, case, fn_jax, fn_torch) -> dict:
  """`case`'s figure per side over repeats; PyTorch's best of its two thread counts per repeat;
  and the per-repeat ratios best PyTorch / mia_jax and 2 threads / mia_jax (above 1: mia_jax
  is faster)."""
  by_repeat = {}
  for run in runs:
    if run["case"] == case:
      by_repeat.setdefault(run["repeat"], {})[run["side"]] = run["result"]
  rows = [(fn_jax(v["mia_jax"]), {t: fn_torch(v[t]) for t in TORCH if t in v})
          for v in by_repeat.values() if "mia_jax" in v and any(t in v for t in TORCH)]
  return {"mia_jax": spread(j for j, _ in rows),
          **{t: spread(ts.get(t) for _, ts in rows) for t in TORCH},
          "ratio": spread(min(ts.values()) / j for j, ts in rows),
          "ratio_2_threads": spread(ts["torch"] / j for j, ts in rows if "torch" in ts)}


def of_case(runs, case, side="mia_jax"):
  return [r["result"] for r in runs if r["case"] == case and r["side"] == side]


TRAIN_FIGURES = {   # name: (mia_jax's figure from the CLI run, PyTorch's from its worker)
    "training stage s": (lambda r: r["timing"]["train_s"], lambda r: r["train_s"]),
    "model-epoch after the first epoch s": (
        lambda r: statistics.median(r["epoch_s"][1:]) / r["num_models"],
        lambda r: statistics.median(e for model in r["epoch_s"] for e in model[1:])),
    "inference s (every model on pool + test)": (lambda r: r["timing"]["inference_s"],
                                                lambda r: r["inference_s"]),
    "wall s (mia_jax: the whole audit; PyTorch: training + logits)": (
        lambda r: r["wall_s"], lambda r: r["wall_s"]),
}
STAGES = ("data_s", "train_s", "inference_s", "attack_s", "shadow_scaling_s", "figures_s",
          "total_s")
STEP_NAMES = {"mlp": "Fashion-MNIST MLP", "cnn": "CNN", "purchase": "Purchase100 MLP"}
# (label, numerator, denominator); "torch_best" is PyTorch's faster thread count per repeat.
STEP_RATIOS = [(f"{STEP_NAMES[k]}: {a_name} / {b_name}", f"{a}:{k}/{av}", f"{b}:{k}/{bv}")
               for k in ("purchase", "cnn")
               for a_name, a, av, b_name, b, bv in (
                   ("mia_jax DP", "mia_jax", "dp", "mia_jax plain", "mia_jax", "plain"),
                   ("Opacus ghost", "torch_best", "ghost", "PyTorch plain", "torch_best", "plain"),
                   ("Opacus ghost", "torch_best", "ghost", "mia_jax DP", "mia_jax", "dp"),
                   ("Opacus hooks", "torch_best", "hooks", "mia_jax DP", "mia_jax", "dp"),
                   ("PyTorch plain", "torch_best", "plain", "mia_jax plain", "mia_jax", "plain"))]
STEP_RATIOS.append(("Fashion-MNIST MLP: PyTorch plain / mia_jax plain", "torch_best:mlp/plain",
                    "mia_jax:mlp/plain"))


def step_times(runs) -> tuple[dict, dict]:
  """{"side:kind/variant": {repeat: median step s}} (with side torch_best: the faster of
  PyTorch's thread counts in that repeat) and {same key: the fastest single step s}."""
  medians, fastest = {}, {}
  for run in runs:
    if run["case"] != "steps":
      continue
    for key, times in run["result"].items():
      if key == "wall_s":
        continue
      for side in [run["side"]] + (["torch_best"] if run["side"] in TORCH else []):
        by_repeat = medians.setdefault(f"{side}:{key}", {})
        by_repeat[run["repeat"]] = min(by_repeat.get(run["repeat"], 1e9),
                                       statistics.median(times))
        fastest[f"{side}:{key}"] = min(fastest.get(f"{side}:{key}", 1e9), min(times))
  return medians, fastest


def summarise(runs: list[dict]) -> dict:
  s = {"failed_runs": [f"{r['case']} {r['side']} (repeat {r['repeat']}): {r['error']}"
                       for r in runs if "error" in r]}
  runs = [r for r in runs if "result" in r]
  for case in ("train_mlp", "train_cnn", "train_mlp_20"):
    if of_case(runs, case):
      s[case] = {name: paired(runs, case, *fns) for name, fns in TRAIN_FIGURES.items()}
      s[case]["after training / training (mia_jax)"] = {"mia_jax": spread(
          sum(r["timing"][k] for k in STAGES[2:6]) / r["timing"]["train_s"]
          for r in of_case(runs, case))}
      s[case]["stages"] = {k: spread(r["timing"][k] for r in of_case(runs, case)) for k in STAGES}
  medians, fastest = step_times(runs)
  s["step_s"] = {k: spread(v.values()) for k, v in sorted(medians.items())}
  s["fastest_step_s"] = dict(sorted(fastest.items()))
  s["step_ratios"] = {label: spread(medians[a][r] / medians[b][r] for r in medians[a]
                                    if r in medians[b])
                      for label, a, b in STEP_RATIOS if a in medians and b in medians}
  s["fastest_step_ratios"] = {label: fastest[a] / fastest[b] for label, a, b in STEP_RATIOS
                              if a in fastest and b in fastest}
  s["dp_loop_mlp"] = dp_in_loop(runs)
  s["default_audit_wall_s"] = spread(r["wall_s"] for r in of_case(runs, "default_audit"))
  return s


def dp_in_loop(runs) -> dict:
  """Per model-step ms after the first epoch in the CLI's epoch programs: DP / plain (the plain
  MLP run of the same repeat; each model's Poisson or shuffled steps per epoch)."""
  plain = {r["repeat"]: r["result"] for r in runs
           if r["case"] == "train_mlp" and r["side"] == "mia_jax"}
  per_step = lambda r, spe: 1e3 * statistics.median(r["epoch_s"][1:]) / (r["num_models"] * spe)
  pairs = [(per_step(r["result"], r["result"]["steps_per_epoch"]),
            per_step(plain[r["repeat"]], -(-(plain[r["repeat"]]["pool_size"] // 2) // 128)))
           for r in runs if r["case"] == "dp_loop_mlp" and r["repeat"] in plain]
  return {"dp_model_step_ms": spread(d for d, _ in pairs),
          "plain_model_step_ms": spread(p for _, p in pairs),
          "ratio": spread(d / p for d, p in pairs)}


GOALS = [   # (issue 18's goal, its figure's path in the summary, met when the median is ...)
    ("training 16 x 20 epochs, MLP: mia_jax >= 2x PyTorch",
     "train_mlp_20|training stage s|ratio", ">=", 2),
    ("training 16 x 20 epochs, CNN: mia_jax >= 2x PyTorch",
     "train_cnn_20|training stage s|ratio", ">=", 2),
    ("training 16 x 2 epochs, MLP: never slower than PyTorch",
     "train_mlp|training stage s|ratio", ">=", 1),
    ("training 16 x 2 epochs, CNN: never slower than PyTorch",
     "train_cnn|training stage s|ratio", ">=", 1),
    ("after training <= 20% of training: the 16-CNN audit (2 epochs here)",
     "train_cnn|after training / training (mia_jax)|mia_jax", "<=", 0.2),
    ("after training <= 20% of training: the 32-MLP audit (16 MLPs, 2 epochs here)",
     "train_mlp|after training / training (mia_jax)|mia_jax", "<=", 0.2),
    ("the default audit under 20 s wall", "default_audit_wall_s", "<=", 20),
] + [(f"DP step {goal}, {name}", f"step_ratios|{name}: {ratio}", op, threshold)
       for goal, ratio, op, threshold in (
           (">= 3x faster than Opacus ghost clipping", "Opacus ghost / mia_jax DP", ">=", 3),
           ("<= 1.3x its plain step", "mia_jax DP / mia_jax plain", "<=", 1.3))
       for name in ("Purchase100 MLP", "CNN")] + [
    ("in the loop (16 models, auto) DP model-step <= 1.3x plain, Fashion-MNIST MLP",
     "dp_loop_mlp|ratio", "<=", 1.3),
] + [(f"plain step no slower than PyTorch's, {name}",
      f"step_ratios|{name}: PyTorch plain / mia_jax plain", ">=", 1)
     for name in ("Fashion-MNIST MLP", "CNN", "Purchase100 MLP")] + [
    ("DP step no slower than Opacus's faster (ghost), CNN",
     "step_ratios|CNN: Opacus ghost / mia_jax DP", ">=", 1),
    ("inference of the same logits no slower than PyTorch's, MLP",
     "train_mlp|inference s (every model on pool + test)|ratio", ">=", 1),
    ("inference of the same logits no slower than PyTorch's, CNN",
     "train_cnn|inference s (every model on pool + test)|ratio", ">=", 1)]


def goals(s: dict) -> list[tuple[str, str, str]]:
  """(goal, 'met' | 'not met' | 'not measured', the measured figure)."""
  rows = []
  for goal, path, op, threshold in GOALS:
    figure = s
    for key in path.split("|"):
      figure = figure.get(key, {})
    met = figure.get("n") and (figure["median"] >= threshold if op == ">=" else
                               figure["median"] <= threshold)
    rows.append((goal, "not measured" if not figure.get("n") else "met" if met else "not met",
                 fmt(figure)))
  return rows + [("attack stage at M=64, N=10,000, every attack with intervals, < 30 s",
                  "not measured", "bench_attacks.md")]


def write_markdown(path: str, meta: dict, s: dict) -> None:
  lines = [
      "# mia_jax against PyTorch and Opacus (experiments/bench_vs_torch.py)", "",
      f"`{meta['command']}`, {meta['date']}: {meta['runs_done']} of {meta['runs_planned']} runs "
      f"in {meta['bench_s']:.0f} s; load average (1 min) before each run "
      f"{fmt(meta['load'], digits=1)} on {os.cpu_count()} cores shared with other jobs; "
      f"torch {meta['torch']} (2 threads and 1, OMP_WAIT_POLICY=PASSIVE), opacus "
      f"{meta['opacus']}, jax {meta['jax']}; "
      f"mia_jax at {meta['commit']}; {meta['sizes']['models']} models, pool "
      f"{meta['sizes']['pool']}.", "",
      "Figures: median [min, max] over the interleaved repeats (each a fresh process; n in the "
      "json); ratios per repeat, above 1 where mia_jax is faster unless named otherwise.", "",
      "## Training, batch 128, Adam", "",
      "| case | figure | mia_jax | PyTorch, 2 threads | PyTorch, 1 thread | best PyTorch / "
      "mia_jax | 2 threads / mia_jax |", "|---|---|---|---|---|---|---|"]
  for case in ("train_mlp", "train_cnn", "train_mlp_20"):
    for name in [n for n in s.get(case, {}) if n != "stages"]:
      f = s[case][name]
      lines.append(f"| {case} | {name} | " + " | ".join(fmt(f.get(k)) for k in (
          "mia_jax", "torch", "torch1", "ratio", "ratio_2_threads")) + " |")
  lines += ["", "mia_jax's stages (s, results.json `timing`):", "",
            "| case | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
  lines += [f"| {case} | " + " | ".join(fmt(s[case]["stages"][k], 1, 1) for k in STAGES) + " |"
            for case in ("train_mlp", "train_cnn", "train_mlp_20") if case in s]
  lines += ["", "## One step on its own (mia_jax's step jitted alone, one model)", "",
            "Median: of each process's step times, over repeats; fastest: the fastest step of "
            "all repeats (the least disturbed by the other jobs). torch: PyTorch on 2 threads, "
            "torch1: on 1, torch_best: the faster of the two in each repeat (the ratios' "
            "PyTorch).", "",
            "| step | mia_jax ms | torch ms | torch1 ms |", "|---|---|---|---|"]
  for step in sorted({k.split(":")[1] for k in s["step_s"]}):
    cells = [f"{fmt(s['step_s'][f'{side}:{step}'], 1e3, 1)} (fastest "
             f"{1e3 * s['fastest_step_s'][f'{side}:{step}']:.1f})"
             if f"{side}:{step}" in s["step_s"] else "-" for side in ("mia_jax",) + TORCH]
    lines.append(f"| {step} | " + " | ".join(cells) + " |")
  lines += ["", "| ratio of steps | of the medians | of the fastest |", "|---|---|---|"] + [
      f"| {k} | {fmt(v)} | {s['fastest_step_ratios'].get(k, float('nan')):.2f} |"
      for k, v in s["step_ratios"].items()]
  d = s["dp_loop_mlp"]
  lines += ["", f"DP-SGD in the training loop (CLI, the Fashion-MNIST MLP, auto): model-step "
            f"{fmt(d['dp_model_step_ms'], 1, 1)} ms against {fmt(d['plain_model_step_ms'], 1, 1)} "
            f"ms plain; DP / plain {fmt(d['ratio'])}. The default audit (configs/default.py as "
            f"shipped), CLI wall: {fmt(s['default_audit_wall_s'], digits=1)} s.", "",
            "## Issue 18's goals", "", "| goal | status | measured |", "|---|---|---|"]
  lines += [f"| {g} | {status} | {value} |" for g, status, value in goals(s)]
  lines += ["", "Failed runs: " + "; ".join(s["failed_runs"])] if s["failed_runs"] else []
  notes = ""   # a '## Notes' section written by hand below the tables is kept
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    notes = text[text.index("\n## Notes"):] if "\n## Notes" in text else ""
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n" + notes)
