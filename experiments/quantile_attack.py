"""Quantile regression (no shadow models) beside LiRA and RMIA on a finished audit run, and the
per-example risk over every target.

  nice -n 10 python -m experiments.quantile_attack --run /tmp/mia_runs/fm64 --targets 8

The run's WORKDIR holds logits.npz (pool and population outputs of M models), keep.npy and
run_config.json; the data are re-created from run_config.json with mia_jax.data.load (the
pool's labels are checked against the saved ones), the population being the run's test split.
The quantile attack's features are quantile.input_features: each example's pixels projected
on the first --pca principal components of the population's pixels (the regression's cost
grows with D; the projection sees no pool example) and its label one-hot (the attacker knows
it, and the signal's level differs by class).

Attacks, each on targets 0 .. T-1 with every other model as a reference where it reads any:
lira_online, lira_offline, rmia_offline, loss (the global threshold: no shadows, no
regression), and quantile_regression at alpha 1% and 0.1%
("quantile": fitted at that FPR) and "gaussian" (one fit for every FPR). For each: AUC and
TPR at 1% / 0.1% FPR with their 95% intervals over targets (attacks.evaluate_scores), the
shadow models it reads and its seconds (wall clock per target; the signals' shared work is
counted in the first attack that triggers it). Then risk.per_example over all M targets of
lira_online's scores and of the target's scaled logit, each written as .npz and .csv, with
its top examples. (LiRA online's references for a target exclude the target, so on an
example without memorisation the IN targets' scores sit a little below the OUT targets'
ones: its per-example risk falls below 0.5 there; the raw signal has no such shift.)

Writes experiments/results/quantile_attack_<dataset>.{md,json} and the per-example risk as
quantile_attack_<dataset>_risk_<scores>.{npz,csv} under --risk-dir (default: the run's
folder; the files are data, not results to commit).
"""

import argparse
import json
import os
import time

import ml_collections
import numpy as np
from mia_jax import attacks, data
from mia_jax.attacks import quantile, risk

FPRS = ("0.01", "0.001")
ATTACKS = (  # (label, registry name, params, shadow models read)
    ("lira_online", "lira_online", {}, "M-1"),
    ("lira_offline", "lira_offline", {}, "M-1"),
    ("rmia_offline", "rmia_offline", {}, "M-1"),
    ("loss (global threshold)", "loss", {}, "0"),
    ("quantile (alpha 1%)", "quantile_regression", {"alpha": 0.01}, "0"),
    ("quantile (alpha 0.1%)", "quantile_regression", {"alpha": 0.001}, "0"),
    ("quantile gaussian", "quantile_regression", {"method": "gaussian"}, "0"),
)

# Per-example risk of these scores over every target: LiRA online, and the target's own
# signal (which LiRA thresholds per example), whose references never differ by target.
RISK_SCORES = ("lira_online", "scaled_logit")


def load_run(run: str, pca: int) -> tuple[attacks.AttackData, dict]:
  """AttackData with features [N, pca + C] / [P, pca + C] from the run's re-created data."""
  config = json.load(open(os.path.join(run, "run_config.json")))
  arrays = dict(np.load(os.path.join(run, "logits.npz")))
  ds = data.load(ml_collections.ConfigDict(config["data"]))
  if not np.array_equal(ds.pool_y, arrays["labels"]) or not np.array_equal(
      ds.test_y, arrays["population_labels"]):
    raise SystemExit("the re-created data's labels differ from logits.npz: not this run's data")
  features, population_features = quantile.input_features(
      ds.test_x, ds.test_y, ds.pool_x, ds.pool_y, ds.num_classes, pca)
  return attacks.AttackData(
      logits=arrays["logits"], labels=arrays["labels"], keep=arrays["keep"],
      population_logits=arrays["population_logits"],
      population_labels=arrays["population_labels"],
      features=features, population_features=population_features), config


def _metric(summary: dict, key: str, fpr: str = None) -> dict:
  if fpr is None:
    return {"mean": summary[key]["mean"], "ci95": summary[f"{key}_ci95"]}
  return {"mean": summary[key][fpr]["mean"], "ci95": summary[f"{key}_ci95"][fpr]}


def compare(attack_data: attacks.AttackData, targets: list[int]) -> list[dict]:
  rows = []
  for label, name, params, shadows in ATTACKS:
    start = time.perf_counter()
    scores = attacks.run(name, attack_data, targets, **params)
    seconds = time.perf_counter() - start
    summary, _ = attacks.evaluate_scores(name, scores, attack_data.keep, targets, params=params)
    rows.append({"attack": label, "name": name, "params": params,
                 "shadow_models": (attack_data.num_models - 1 if shadows == "M-1" else 0),
                 "seconds_per_target": seconds / len(targets),
                 "auc": _metric(summary, "auc"),
                 "tpr_at_fpr": {f: _metric(summary, "tpr_at_fpr", f) for f in FPRS}})
    print(f"{label}: AUC {rows[-1]['auc']['mean']:.4f} in {seconds:.1f} s", flush=True)
  return rows


def _scores_for_risk(attack_data: attacks.AttackData, source: str) -> np.ndarray:
  """Scores [M, N] of every model as the target: an attack's, or the raw signal's."""
  everyone = list(range(attack_data.num_models))
  if source == "scaled_logit":
    return attack_data.target_signal("scaled_logit", everyone).mean(axis=-1)
  return attacks.run(source, attack_data, everyone)


def per_example_risk(attack_data: attacks.AttackData, source: str, out_stem: str,
                     top: int) -> dict:
  """risk.per_example of `source`'s scores over every target, written to out_stem.npz/.csv."""
  start = time.perf_counter()
  result = risk.per_example(_scores_for_risk(attack_data, source), attack_data.keep)
  seconds = time.perf_counter() - start
  for ext in (".npz", ".csv"):
    risk.write(out_stem + ext, result, labels=attack_data.labels)
  finite = np.isfinite(result["lo"])
  return {"scores": source, "targets": attack_data.num_models, "seconds": seconds,
          "files": [out_stem + ".npz", out_stem + ".csv"], "examples": int(finite.sum()),
          "lower_end_above_half": int((result["lo"][finite] > 0.5).sum()),
          "upper_end_below_half": int((result["hi"][finite] < 0.5).sum()),
          "at_least_0.99": int((result["risk"][finite] >= 0.99).sum()),
          "median_risk": float(np.nanmedian(result["risk"])),
          "top": risk.ranked(result, top, labels=attack_data.labels)}


def _train_seconds(run: str) -> float:
  with open(os.path.join(run, "results.json")) as f:
    return float(json.load(f)["timing"]["train_s"])


def _cell(m: dict, digits: int = 4) -> str:
  lo, hi = m["ci95"]
  return f"{m['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(result: dict) -> str:
  r = result["risk"]
  lines = [f"# Quantile regression beside LiRA and RMIA: {result['run']}", "",
           f"Command: `{result['command']}`", "",
           f"{result['num_models']} models, {result['num_examples']} pool examples, "
           f"{result['num_population']} population examples (the test split); targets "
           f"{result['targets']}; quantile features: {result['pca']} principal components "
           "of the population's pixels and the label one-hot. Each figure is the mean over "
           "targets with its 95% interval over targets (the target models are the unit). "
           "Seconds are wall clock per target on 2 shared cores (load "
           f"{result['load_start']:.1f} at the start) of attacks.run, after the models: the run "
           "trained its "
           f"{result['num_models']} models in {result['train_s']:.0f} s, the shadow-based "
           "attacks read M - 1 of them, the others none.", "",
           "| attack | shadow models | s / target | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR |",
           "|---|---:|---:|---|---|---|"]
  for row in result["attacks"]:
    lines.append(f"| {row['attack']} | {row['shadow_models']} | "
                 f"{row['seconds_per_target']:.2f} | {_cell(row['auc'])} | "
                 f"{_cell(row['tpr_at_fpr']['0.01'])} | {_cell(row['tpr_at_fpr']['0.001'])} |")
  for r in result["risk"].values():
    lines += ["", f"## Per-example risk of {r['scores']} over all {r['targets']} targets", "",
              f"risk = the AUC of an example's scores under the targets that trained on it "
              f"against those that did not, 95% interval over targets (mia_jax.attacks.risk); "
              f"{r['examples']} examples, median risk {r['median_risk']:.3f}; "
              f"{r['lower_end_above_half']} with the whole interval above 0.5, "
              f"{r['upper_end_below_half']} below it; {r['at_least_0.99']} at risk >= 0.99; "
              f"{r['seconds']:.1f} s (scores and risk). Ranked by risk, then by separation "
              "(the standardised IN - OUT mean score difference over targets).", "",
              risk.markdown(r["top"])]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run", default="/tmp/mia_runs/fm64")
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--pca", type=int, default=64)
  parser.add_argument("--top", type=int, default=20)
  parser.add_argument("--out", default="experiments/results")
  parser.add_argument("--risk-dir", default=None)
  args = parser.parse_args()
  load_start = os.getloadavg()[0]
  attack_data, config = load_run(args.run, args.pca)
  name = config["data"]["name"]
  targets = list(range(min(args.targets, attack_data.num_models)))
  result = {"run": args.run, "command": "python -m experiments.quantile_attack --run "
            f"{args.run} --targets {args.targets} --pca {args.pca}",
            "num_models": attack_data.num_models, "num_examples": attack_data.num_examples,
            "num_population": len(attack_data.population_labels), "targets": targets,
            "pca": args.pca, "load_start": load_start,
            "train_s": _train_seconds(args.run), "attacks": compare(attack_data, targets)}
  result["risk"] = {}
  for source in RISK_SCORES:
    stem = os.path.join(args.risk_dir or args.run, f"quantile_attack_{name}_risk_{source}")
    result["risk"][source] = per_example_risk(attack_data, source, stem, args.top)
  result["load_end"] = os.getloadavg()[0]
  out = os.path.join(args.out, f"quantile_attack_{name}")
  with open(out + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(out + ".md", "w") as f:
    f.write(markdown(result))
  print(markdown(result))


if __name__ == "__main__":
  main()
