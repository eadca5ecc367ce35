"""The null-test table: every attack on targets without membership signal, before and after.

  python -m experiments.null_table                   # 5 seeds, before = 6ca436a
  python -m experiments.null_table --seeds 2 --before ""   # a quick try, no before column

For M = 4, 8, 16 and 64 models and every size K of the shadow-scaling curve
(scaling.scaling_sizes(M): 2, 4, 8, ... and M - 1 = every other model), each seed s gives one
data set of mia_jax.attacks.synthetic.null_data (the data of tests/test_null.py: N = 20,000
pool examples, 2,000 population examples, shadows that memorise, and one target, model
(3 s + 1) mod M, whose outputs are drawn independently of its keep row). The figure is the
target's AUC against its keep row; a cell holds its mean over the seeds and the half-width of
the 95% t interval over them (the unit that varies is the target's data set). The positive
control is the same data with a target that memorises: AUC at K = M - 1.

The shadow-based attacks run through scaling.shadow_scaling (its point at K is what a run's
report shows at K shadows); the threshold attacks read no shadows and give one figure per M.
"Before" runs this measurement on the code of the commit given by --before (git archive into
a temporary folder, then this file in a child process with that folder first on PYTHONPATH;
the data come from this tree's synthetic.py, loaded by path, so both sides see the same
arrays). Writes experiments/results/null_table.{md,json}.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = (4, 8, 16, 64)
TOL = 0.015
# Non-default forms, measured where the code has them.
VARIANTS = {"lira_online_fixed_var": {"sigma": "total"},
            "lira_offline_fixed_var": {"sigma": "total"}}


def _synthetic():
  """This tree's synthetic.py, loaded by path (the before code has no such module)."""
  path = os.path.join(ROOT, "mia_jax", "attacks", "synthetic.py")
  spec = importlib.util.spec_from_file_location("null_table_synthetic", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def measure(seeds: int, models=MODELS) -> dict:
  """AUCs with whatever mia_jax is importable: {"null": {case: {M: {K: [per seed]}}},
  "control": {case: {M: [per seed]}}}, M and K as strings (JSON keys)."""
  from mia_jax import attacks, metrics
  from mia_jax.attacks import scaling
  synthetic = _synthetic()

  def auc(scores, member):
    fpr, tpr, _ = metrics.roc_curve(scores, member)
    return float(metrics.auc(fpr, tpr))

  cases = {name: (name, {}) for name in attacks.names()}
  for name, params in VARIANTS.items():
    if set(params) <= set(attacks.params_of(name)):
      cases[name + "".join(f"[{k}={v}]" for k, v in params.items())] = (name, params)
  null = {c: {str(m): {} for m in models} for c in cases}
  control = {c: {str(m): [] for m in models} for c in cases}
  for m in models:
    for seed in range(seeds):
      for is_null in (True, False):
        sizes = scaling.scaling_sizes(m) if is_null else [m - 1]
        data, t = synthetic.null_data(m, seed, null=is_null)
        curve = scaling.shadow_scaling(data, list(attacks.names()), [t], seed=seed,
                                       sizes=sizes)["attacks"]
        for case, (name, params) in cases.items():
          if name not in curve:             # reads no shadows: one figure for every K
            per = [auc(attacks.run(name, data, [t], **params)[0], data.keep[t])] * len(sizes)
          elif params:                      # a variant: the curve runs default parameters
            per = [auc(attacks.run(name, scaling.view(data, k, seed), [t], **params)[0],
                       data.keep[t]) for k in sizes]
          else:
            per = [p["auc"]["mean"] for p in curve[name]]
          for k, v in zip(sizes, per):
            if is_null:
              null[case][str(m)].setdefault(str(k), []).append(v)
            else:
              control[case][str(m)].append(v)
      print(f"M={m} seed {seed} done", file=sys.stderr, flush=True)
  return {"null": null, "control": control}


def _before(rev: str, seeds: int, models) -> dict:
  with tempfile.TemporaryDirectory() as tree:
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    out = os.path.join(tree, "before.json")
    env = dict(os.environ, PYTHONPATH=tree)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", out,
                    "--seeds", str(seeds), "--models", ",".join(map(str, models))],
                   check=True, env=env, cwd=tree)
    with open(out) as f:
      return json.load(f)


def _summary(values) -> dict:
  from mia_jax import stats
  values = [float(v) for v in values]
  lo, hi = stats.t_interval(values)
  return {"mean": float(np.mean(values)), "ci95": [lo, hi], "per_seed": values}


def _cell(s: dict | None) -> str:
  if s is None:
    return "—"
  half = (s["ci95"][1] - s["ci95"][0]) / 2
  text = f"{s['mean']:.3f} ± {half:.3f}"
  return f"**{text}**" if abs(s["mean"] - 0.5) > TOL else text


def _table(result: dict, seeds: int, rev: str, models) -> list[str]:
  lines = ["# Null-test table: attacks on targets without membership signal", "",
           "Written by `python -m experiments.null_table` (experiments/null_table.py has the "
           "set-up). Each cell: AUC of the null target, mean over "
           f"{seeds} seeds (one data set and target each) ± the half-width of its 95% t "
           "interval over them; N = 20,000 pool examples, shadows that memorise, the target's "
           "outputs drawn independently of its keep row. Columns: K references per example "
           "(the shadow-scaling curve's sizes; M - 1 = every other model). In bold: mean "
           f"outside 0.5 ± {TOL}, the band tests/test_null.py enforces.", ""]
  if rev:
    lines += [f"Each cell: before → after. Before: the code at {rev}, where rmia_online's "
              "prior was the plain mean over every other model and the scaling curve attacked "
              f"random subsets of K models. After: the tree at {result.get('after_rev', '?')} "
              "(and its uncommitted changes, if any), where every shadow-based attack "
              "takes its references from mia_jax/attacks/references.py (counts balanced on "
              "the full set, K/2 IN and K/2 OUT drawn per example at K) and rmia_online's "
              "prior is (mean_IN + mean_OUT) / 2. Threshold attacks read no shadows, so their "
              "row is one figure per M, the same before and after; the sigma=total variants "
              "did not exist before.", ""]
  cases = list(result["after"]["null"])
  for m in models:
    m_key = str(m)
    sizes = sorted(int(k) for k in result["after"]["null"][cases[0]][m_key])
    lines += [f"## M = {m} models", "",
              "| attack | " + " | ".join(f"K = {k}" for k in sizes) + " |",
              "|---|" + "---:|" * len(sizes)]
    for case in cases:
      row = []
      for k in sizes:
        after = result["after"]["null"][case][m_key][str(k)]
        before = (result.get("before") or {}).get("null", {}).get(case, {}).get(m_key, {}).get(
            str(k))
        row.append(f"{_cell(before)} → {_cell(after)}" if rev else _cell(after))
      lines.append(f"| {case} | " + " | ".join(row) + " |")
    lines.append("")
  lines += ["## Positive control (after): the same data, a target that memorises", "",
            "AUC at K = M - 1, mean ± 95% half-width over the seeds.", "",
            "| attack | " + " | ".join(f"M = {m}" for m in models) + " |",
            "|---|" + "---:|" * len(models)]
  for case in cases:
    cells = [_cell(result["after"]["control"][case][str(m)]).strip("*") for m in models]
    lines.append(f"| {case} | " + " | ".join(cells) + " |")
  worst = {side: max((abs(s["mean"] - 0.5), case, m, k)
                     for case, by_m in result[side]["null"].items()
                     for m, by_k in by_m.items() for k, s in by_k.items())
           for side in ("before", "after") if result.get(side)}
  lines.append("")
  for side, (dev, case, m, k) in worst.items():
    lines.append(f"Largest |AUC - 0.5| {side}: {dev:.3f} ({case}, M = {m}, K = {k}).")
  return lines + [""]


def _summarise(raw: dict) -> dict:
  return {"null": {c: {m: {k: _summary(v) for k, v in by_k.items()}
                       for m, by_k in by_m.items()} for c, by_m in raw["null"].items()},
          "control": {c: {m: _summary(v) for m, v in by_m.items()}
                      for c, by_m in raw["control"].items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--before", default="6ca436a",
                      help="commit whose code gives the before column ('' for none)")
  parser.add_argument("--models", default=",".join(map(str, MODELS)),
                      help="comma-separated model counts M (a quick try: 4,8)")
  parser.add_argument("--render", action="store_true",
                      help="only rewrite null_table.md from the null_table.json in --out")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"))
  args = parser.parse_args()
  models = [int(m) for m in args.models.split(",")]
  if args.worker:
    raw = measure(args.seeds, models)
    with open(args.worker, "w") as f:
      json.dump(raw, f)
    return
  sys.path.insert(0, ROOT)
  if args.render:
    with open(os.path.join(args.out, "null_table.json")) as f:
      result = json.load(f)
    _write_md(result, args.out)
    return
  t0 = time.perf_counter()
  head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True).stdout.strip()
  result = {"seeds": args.seeds, "before_rev": args.before, "after_rev": head,
            "tolerance": TOL, "models": models}
  if args.before:
    result["before"] = _summarise(_before(args.before, args.seeds, models))
  result["after"] = _summarise(measure(args.seeds, models))
  result["seconds"] = time.perf_counter() - t0
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "null_table.json"), "w") as f:
    json.dump(result, f, indent=1)
  _write_md(result, args.out)


def _write_md(result: dict, out: str) -> None:
  lines = _table(result, result["seeds"], result["before_rev"], result["models"])
  with open(os.path.join(out, "null_table.md"), "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
