"""Coverage of the 95% intervals on synthetic scores drawn from known distributions.

  python experiments/interval_coverage.py                 # about 30 minutes on a 2-core CPU
  python experiments/interval_coverage.py --draws=100     # a quick try

Writes experiments/results/interval_coverage.{md,json}: for each interval method, the share
of draws whose 95% interval holds the true value (with its Clopper-Pearson interval over the
draws), the mean width, and how many intervals exclude their own estimate.

Per target (the examples vary, the model is fixed): n members and n non-members per draw,
n = 500 or 5,000, scores from one of three scenarios with closed-form truths:
  shift  non-members N(0, 1), members N(1, 1): AUC = Phi(1 / sqrt 2), TPR(alpha) = Phi(1 - z)
  tail   members N(0, 1), but 10% of them N(4, 1) (a few very vulnerable examples, as LiRA
         finds): AUC = 0.45 + 0.1 Phi(4 / sqrt 2), TPR(alpha) = 0.9 alpha + 0.1 Phi(4 - z)
  null   members and non-members N(0, 1): AUC = 0.5, TPR(alpha) = alpha
(z = Phi^-1(1 - alpha)). Methods: the analytic intervals of mia_jax.metrics (AUC: DeLong on the
logit scale; TPR: "quadrature", the default, and the "union" band) against the percentile
bootstrap they replace (`--bootstrap` resamples).

Mean over T = 2, 4, 16 targets, and 64 with n = 500 as in a 64-model audit (models vary, with
example noise inside): target t's members are N(d_t, 1), d_t = 1 + 0.1 N(0, 1) (a model-to-
model random effect), so the truth is the mean over models, E Phi(d_t / sqrt 2) = Phi(1 / sqrt(2 + 0.01)) and E Phi(d_t - z) =
Phi((1 - z) / sqrt(1.01)). Methods: attacks.evaluate.over_targets (Student t over the
targets) against the former interval (the percentile bootstrap of the mean, every target's
members and non-members resampled with the targets held fixed). The synthetic targets are
independent; real targets share one pool (attacks/evaluate.py says what that leaves out).
"""

import argparse
import json
import os
import time
from typing import Sequence

import numpy as np
from scipy import stats as sps

from mia_jax import metrics, stats
from mia_jax.attacks import evaluate as attack_eval

ALPHAS = (1e-2, 1e-3, 1e-4)
RANDOM_EFFECT = 0.1     # std of the members' shift across target models
TAIL_SHARE, TAIL_SHIFT = 0.1, 4.0


def truth(scenario: str, metric: str, alpha: float = 0.0, random_effect: float = 0.0) -> float:
  """The population value of `metric` ("auc" or "tpr") in `scenario`, averaged over models."""
  z = float(sps.norm.isf(alpha)) if metric == "tpr" else 0.0
  if scenario == "null":
    return 0.5 if metric == "auc" else alpha
  if scenario == "shift":
    scale = np.sqrt(2 + random_effect ** 2) if metric == "auc" else np.sqrt(1 + random_effect ** 2)
    return float(sps.norm.cdf((1.0 - (0 if metric == "auc" else z)) / scale))
  if metric == "auc":
    return (1 - TAIL_SHARE) * 0.5 + TAIL_SHARE * float(sps.norm.cdf(TAIL_SHIFT / np.sqrt(2)))
  return (1 - TAIL_SHARE) * alpha + TAIL_SHARE * float(sps.norm.sf(z - TAIL_SHIFT))


def draw(rng, scenario: str, n: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """scores [2n] (n members, then n non-members) and is_member [2n]."""
  members = rng.normal(size=n)
  if scenario == "shift":
    members += shift
  elif scenario == "tail":
    members[rng.random(n) < TAIL_SHARE] += TAIL_SHIFT
  return np.r_[members, rng.normal(size=n)], np.r_[np.ones(n, bool), np.zeros(n, bool)]


class Cell:
  """Tallies one (quantity, set-up) cell: per method, covered / excludes-estimate / widths."""

  def __init__(self, name: str, true_value: float, **info):
    self.name, self.true_value, self.info = name, true_value, info
    self.hits, self.excludes, self.widths = {}, {}, {}

  def add(self, method: str, ci, estimate: float) -> None:
    lo, hi = ci
    self.hits.setdefault(method, []).append(lo <= self.true_value <= hi)
    self.excludes.setdefault(method, []).append(not lo <= estimate <= hi)
    self.widths.setdefault(method, []).append(hi - lo)

  def summary(self) -> dict:
    out = {"cell": self.name, "true_value": self.true_value, **self.info, "methods": {}}
    for m, hits in self.hits.items():
      k, n = int(np.sum(hits)), len(hits)
      out["methods"][m] = {"coverage": k / n, "coverage_ci95": list(stats.clopper_pearson(k, n)),
                           "draws": n, "mean_width": float(np.mean(self.widths[m])),
                           "excludes_estimate": int(np.sum(self.excludes[m]))}
    return out


def per_target_cells(rng, scenario: str, n: int, draws: int, boot: int) -> list[dict]:
  auc_cell = Cell(f"per target AUC, {scenario}", truth(scenario, "auc"), scenario=scenario,
                  nonmembers=n, quantity="auc", unit="examples")
  tpr_cells = {a: Cell(f"per target TPR @ {100 * a:g}% FPR, {scenario}", truth(scenario, "tpr", a),
                       scenario=scenario, nonmembers=n, quantity=f"tpr@{a:g}", unit="examples",
                       false_positives_allowed=int(np.floor(a * n + 1e-9)))
               for a in ALPHAS}
  for _ in range(draws):
    s, m = draw(rng, scenario, n)
    out = metrics.evaluate(s, m, ALPHAS, bootstrap=boot, seed=int(rng.integers(1 << 31)))
    t = metrics.tally(s, m)
    auc_cell.add("delong_logit (new)", out["auc_ci95"], out["auc"])
    auc_cell.add("percentile bootstrap (old)", out["bootstrap_ci95"]["auc"], out["auc"])
    for a, cell in tpr_cells.items():
      key, est = str(a), out["tpr_at_fpr"][str(a)]
      cell.add("quadrature (new default)", out["tpr_at_fpr_ci95"][key], est)
      cell.add("union band (new, any distribution)", metrics.tpr_interval(t, a, method="union"),
               est)
      cell.add("percentile bootstrap (old)", out["bootstrap_ci95"]["tpr_at_fpr"][key], est)
  return [auc_cell.summary()] + [c.summary() for c in tpr_cells.values()]


def mean_cells(rng, n: int, targets: int, quantities: Sequence[tuple[str, float]],
               draws: int, boot: int) -> list[dict]:
  """Cells of the mean over `targets` targets for each (metric, alpha), from the same draws."""
  alphas = tuple(a for m, a in quantities if m == "tpr")
  cells = {}
  for metric, alpha in quantities:
    label = "AUC" if metric == "auc" else f"TPR @ {100 * alpha:g}% FPR"
    info = {"false_positives_allowed": int(np.floor(alpha * n + 1e-9))} if metric == "tpr" else {}
    cells[metric, alpha] = Cell(f"mean over targets, {label}",
                                truth("shift", metric, alpha, RANDOM_EFFECT),
                                scenario="shift + random effect", nonmembers=n, targets=targets,
                                quantity=metric if metric == "auc" else f"tpr@{alpha:g}",
                                unit="targets", **info)
  for _ in range(draws):
    items, reps = [], []
    for _ in range(targets):
      s, m = draw(rng, "shift", n, shift=1.0 + RANDOM_EFFECT * rng.normal())
      items.append(metrics.evaluate(s, m, alphas))
      reps.append(metrics.bootstrap_replicates(s, m, alphas, boot, int(rng.integers(1 << 31))))
    new = attack_eval.over_targets(items)
    for (metric, alpha), cell in cells.items():
      if metric == "auc":
        values, new_ci, rep = [r["auc"] for r in items], new["auc_ci95"], [r["auc"] for r in reps]
      else:
        key = str(alpha)
        values, new_ci = [r["tpr_at_fpr"][key] for r in items], new["tpr_at_fpr_ci95"][key]
        rep = [r["tpr_at_fpr"][key] for r in reps]
      est = float(np.mean(values))
      cell.add("t over targets (new)", new_ci, est)
      cell.add("bootstrap of the mean, targets fixed (old)", metrics.ci95(np.mean(rep, axis=0)),
               est)
  return [c.summary() for c in cells.values()]


def _row(c: dict) -> list[str]:
  setup = f"n = {c['nonmembers']}"
  if "targets" in c:
    setup += f", T = {c['targets']}"
  if "false_positives_allowed" in c:
    k = c["false_positives_allowed"]
    setup += f", k = {k}" + (" (not resolved: reported n/a)" if k == 0 else "")
  rows = []
  for m, v in c["methods"].items():
    lo, hi = v["coverage_ci95"]
    rows.append(f"| {c['cell']} | {setup} | {100 * c['true_value']:.3f} | {m} | "
                f"{100 * v['coverage']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                f"{100 * v['mean_width']:.2f} | {v['excludes_estimate']} |")
  return rows


def markdown(res: dict) -> str:
  lines = [
      "# Coverage of the 95% intervals", "",
      f"`python experiments/interval_coverage.py --draws={res['draws']} "
      f"--mean-draws={res['mean_draws']} --bootstrap={res['bootstrap']} "
      f"--mean-bootstrap={res['mean_bootstrap']}` "
      f"({res['seconds']:.0f} s on a 2-core CPU shared with other jobs). Synthetic scores with "
      "known truths (the script's docstring); n members and n non-members per target; k = "
      "floor(alpha n), the false positives the FPR allows. Coverage: the share of draws whose "
      "interval holds the true value, in percent, with its 95% Clopper-Pearson interval over "
      "the draws; width and true value in percent points; the last column counts the draws "
      "whose interval excludes its own estimate.", "",
      "| quantity | set-up | true value (%) | method | coverage (%) | mean width | "
      "excludes estimate |",
      "|---|---|---|---|---|---|---|"]
  for c in res["per_target"] + res["mean_over_targets"]:
    lines += _row(c)
  return "\n".join(lines + [""])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--draws", type=int, default=400, help="draws per per-target cell")
  parser.add_argument("--mean-draws", type=int, default=300,
                      help="draws per mean-over-targets cell")
  parser.add_argument("--bootstrap", type=int, default=200,
                      help="resamples of the old method, per target")
  parser.add_argument("--mean-bootstrap", type=int, default=100,
                      help="resamples of the old method, mean over targets")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="experiments/results/interval_coverage")
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  t0 = time.perf_counter()
  per_target = []
  for scenario in ("shift", "tail", "null"):
    for n in (500, 5000):
      per_target += per_target_cells(rng, scenario, n, args.draws, args.bootstrap)
      print(f"per target {scenario} n={n}: {time.perf_counter() - t0:.0f}s", flush=True)
  mean = []
  every = (("auc", 0.0), ("tpr", 1e-2), ("tpr", 1e-3))
  for n, sizes in ((500, (2, 4, 16, 64)), (5000, (2, 4, 16))):
    for targets in sizes:
      mean += mean_cells(rng, n, targets, every, args.mean_draws, args.mean_bootstrap)
      print(f"mean n={n} T={targets}: {time.perf_counter() - t0:.0f}s", flush=True)
  res = {"draws": args.draws, "mean_draws": args.mean_draws, "bootstrap": args.bootstrap,
         "mean_bootstrap": args.mean_bootstrap,
         "seed": args.seed, "random_effect": RANDOM_EFFECT, "per_target": per_target,
         "mean_over_targets": mean, "seconds": time.perf_counter() - t0}
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(res, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write(markdown(res))
  print(markdown(res))


if __name__ == "__main__":
  main()
