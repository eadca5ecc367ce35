"""The audit's written outputs in the workdir: results.json and report.md (figures: figures.py).

Files are written to a temporary name and renamed, so a run killed while writing leaves the
previous file whole.
"""

import json
import os
import tempfile

import numpy as np

FPRS = ("0.01", "0.001", "0.0001", "0.0")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str, write) -> None:
  """Calls write(f) on a binary temporary file beside `path`, then renames it to `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide the outputs from others
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj) -> None:
  atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=_jsonable).encode()))


def save_npz_atomic(path: str, **arrays) -> None:
  atomic_write(path, lambda f: np.savez(f, **arrays))


def _jsonable(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)



TABLE_FPRS = ("0.01", "0.001", "0.0001")  # the columns of the attack table (0.0 is in results.json)


def _pct(x, digits: int = 2) -> str:
  return "n/a" if x is None else f"{100 * x:.{digits}f}"


def _mean_std(stat: dict) -> str:
  return f"{_pct(stat['mean'])} ± {_pct(stat['std'])}"


def _ci(ci) -> str:
  return f" [{_pct(ci[0], 1)}, {_pct(ci[1], 1)}]" if ci else ""


def _alpha(key: str) -> str:
  return f"{100 * float(key):g}%"


def strongest(attacks: dict) -> str:
  """The attack with the highest mean TPR at 0.1% FPR (ties: the higher mean AUC)."""
  return max(attacks, key=lambda n: (attacks[n]["tpr_at_fpr"]["0.001"]["mean"],
                                     attacks[n]["auc"]["mean"]))


def _intro(results: dict) -> list[str]:
  m, ds, src = results["models"], results["dataset"], results.get("source", {})
  targets = len(results["targets"])
  if src.get("mode") == "attack_only":
    text = (f"Attack-only audit of the logits in `{src['logits_file']}` (no training here): "
            f"{results['num_models']} models, a pool of {ds['pool_size']} examples, "
            f"{ds['test_size']} population examples, {ds['num_classes']} classes, "
            f"{ds['num_queries']} queries per example")
  else:
    model = results.get("config", {}).get("model", {}).get("name")
    text = (f"Dataset `{ds['name']}`: pool of {ds['pool_size']} examples, {ds['test_size']} "
            f"held-out test examples, {ds['num_classes']} classes. Model `{model}`, "
            f"{results['num_models']} models each trained on a random subset of the pool "
            f"({m.get('epochs_run')} epochs)")
  text += (f"; every attack is evaluated on {targets} target models in turn, the other models "
           "serving as its shadows.")
  if ds.get("queries"):
    text += (f" Queries (`data.queries={ds['queries']['kind']}`): "
             f"{', '.join(ds['queries']['views'])}.")
  test_on = m.get("test_accuracy_on", "the held-out test split")
  train, test = np.mean(m["train_accuracy"]), np.mean(m["test_accuracy"])
  return [
      "# Membership inference audit", "", text, "",
      f"| models | train accuracy | test accuracy ({test_on}) | gap |", "|---|---|---|---|",
      f"| {results['num_models']} | {_pct(train)} ± {_pct(np.std(m['train_accuracy']))} | "
      f"{_pct(test)} ± {_pct(np.std(m['test_accuracy']))} | {_pct(train - test)} |", ""]


def _attack_table(results: dict) -> list[str]:
  attacks = results["attacks"]
  first = next(iter(attacks.values()))
  boot = results.get("config", {}).get("attack", {}).get("bootstrap", 0)
  n_non = first["per_target"][0]["num_nonmembers"] if first.get("per_target") else None
  budget = ", ".join(f"{_alpha(k)} FPR: {first['nonmembers_at_fpr'][k]['mean']:.3g}"
                     for k in TABLE_FPRS)
  lines = [
      "## Attacks", "",
      f"Percent; mean ± std over {len(results['targets'])} targets"
      + (f", then the 95% bootstrap interval of that mean ({boot} resamples of each target's "
         "members and non-members)" if boot else "")
      + ". TPR at FPR alpha is the largest TPR whose FPR <= alpha. "
      f"Each target has about {n_non} non-members, so the false positives each FPR allows "
      f"(the non-members it rests on) are {budget}; a TPR resting on fewer than ~10 is "
      "anecdotal, and one resting on 0 is the TPR at 0% FPR."
      + (" At such FPRs the percentile interval is biased upward (a resample lacks the top "
         "non-member about 37% of the time, which lowers the threshold), so it can lie above "
         "the mean; read it as rough." if boot else ""), "",
      "| attack | AUC | balanced accuracy | advantage | "
      + " | ".join(f"TPR @ {_alpha(k)} FPR" for k in TABLE_FPRS) + " |",
      "|---|---|---|---|" + "---|" * len(TABLE_FPRS)]
  for name, s in attacks.items():
    ci = s.get("tpr_at_fpr_ci95", {})
    cells = [f"{_mean_std(s['auc'])}{_ci(s.get('auc_ci95'))}", _mean_std(s["balanced_accuracy"]),
             _mean_std(s["advantage"])]
    cells += [f"{_mean_std(s['tpr_at_fpr'][k])}{_ci(ci.get(k))}" for k in TABLE_FPRS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines + [""]


def _slice_table(results: dict) -> list[str]:
  attacks = {n: s for n, s in results["attacks"].items() if "slices" in s}
  if not attacks:
    return []
  name = strongest(attacks)
  sl = attacks[name]["slices"]
  rows = [(f"class {c}", v) for c, v in sl["class"].items()]
  rows += [("correctly classified", sl["correct"]), ("misclassified", sl["incorrect"])]
  lines = [f"## Slices of `{name}` (the strongest attack at 0.1% FPR)", "",
           "Mean over targets (those whose slice holds members and non-members); members and "
           "non-members per target; AUC and TPR in percent, each slice with its own threshold. "
           "Every attack's slices are in results.json (`attacks.NAME.slices`).", "",
           "| slice | members | non-members | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR |",
           "|---|---|---|---|---|---|"]
  for label, v in rows:
    if "auc" not in v:
      lines.append(f"| {label} | {v['num_members']:.0f} | {v['num_nonmembers']:.0f} | "
                   "n/a | n/a | n/a |")
      continue
    lines.append(f"| {label} | {v['num_members']:.0f} | {v['num_nonmembers']:.0f} | "
                 f"{_mean_std(v['auc'])} | {_pct(v['tpr_at_fpr']['0.01']['mean'])} | "
                 f"{_pct(v['tpr_at_fpr']['0.001']['mean'])} |")
  return lines + [""]


def _scaling_table(results: dict) -> list[str]:
  scaling = results.get("shadow_scaling") or {}
  if not scaling.get("attacks"):
    return []
  sizes = scaling["sizes"]
  lines = ["## TPR at 0.1% FPR against the number of shadow models", "",
           f"Percent, mean over target(s) {scaling['targets']}; each rerun on a random subset of "
           "the other models (`figures/shadow_scaling.png`).", "",
           "| attack | " + " | ".join(str(s) for s in sizes) + " |",
           "|---|" + "---|" * len(sizes)]
  for name, points in scaling["attacks"].items():
    cells = [_pct(p["tpr_at_fpr"]["0.001"]["mean"]) if "auc" in p else "n/a" for p in points]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines + [""]


def _privacy_section(results: dict) -> list[str]:
  """The accountant's (epsilon, delta) of a DP-SGD run and the canary audit's lower bound."""
  p = results.get("privacy")
  if not p:
    return []
  lines = ["## Privacy", ""]
  if "epsilon" in p:
    lines.append(
        f"DP-SGD on every model: ({p['epsilon']:.3f}, {p['delta']:.2e})-DP by the "
        f"{p['accountant'].upper()} accountant ({p['sampling']} sampling, rate "
        f"{p['sampling_rate']:.4f}, {p['steps']} steps, noise multiplier "
        f"{p['noise_multiplier']:.4f}, clip norm {p['clip_norm']:g}, {p['clipping']} clipping).")
  if p.get("fault"):
    lines.append(f"**NOT private**: DP-SGD was broken on purpose (`dp.fault={p['fault']}`, an "
                 "audit power check); the epsilon above is what the run claims, not a guarantee.")
  a = p.get("audit")
  if a:
    lines.append(
        f"Empirical audit ({a['method']}: one training run, Steinke et al. 2023"
        f"{', f-DP analysis of Mahloujifar et al. 2024' if a['method'] == 'one_run_fdp' else ''}; "
        f"{a['num_canaries']} mislabelled "
        f"canaries scored by `{a['attack']}`, {100 * a['confidence']:.0f}% confidence, delta "
        f"{a['delta']:.2e}): epsilon lower bound {a['epsilon_lower_bound']:.3f}, holding at "
        f"{a['holds_at']}; per target {', '.join(f'{e:.3f}' for e in a['per_target'])} (each "
        f"at {100 * a['confidence']:g}% for its own target alone)." +
        "".join(f" Beside it, {m}: {b['epsilon_lower_bound']:.3f} (valid for {b['assumes']})."
                for m, b in a.get("beside", {}).items()) +
        (" It must not exceed the accountant's epsilon." if "epsilon" in p else
         " The models were trained without DP: no epsilon is claimed."))
  return lines + [""]


def markdown(results: dict) -> str:
  """The report a person reads: models, privacy, the attack table, slices, shadow scaling."""
  lines = (_intro(results) + _privacy_section(results) + _attack_table(results)
           + _slice_table(results))
  lines += _scaling_table(results)
  scaled = (results.get("shadow_scaling") or {}).get("attacks")
  lines += ["Figures: `figures/roc.png` (log-log ROC), `figures/score_hist.png` (scores of "
            "members and non-members)" + (", `figures/shadow_scaling.png`." if scaled else "."),
            ""]
  timing = results["timing"]
  parts = ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f}s" for k, v in timing.items()
                    if k.endswith("_s") and k != "total_s")
  lines += ["## Timing", "", f"{parts}; total {timing['total_s']:.1f}s.", ""]
  return "\n".join(lines)


def write(workdir: str, results: dict) -> None:
  """Writes results.json and report.md."""
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  text = markdown(results)
  atomic_write(os.path.join(workdir, "report.md"), lambda f: f.write(text.encode()))
