"""The audit's outputs in the workdir: results.json, report.md and figures/roc.png.

Files are written to a temporary name and renamed, so a run killed while writing leaves the
previous file whole.
"""

import json
import os
import tempfile

import numpy as np

FPRS = ("0.01", "0.001", "0.0001", "0.0")


def _atomic(path: str, write) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj) -> None:
  _atomic(path, lambda f: f.write(json.dumps(obj, indent=2, default=_jsonable).encode()))


def save_npz_atomic(path: str, **arrays) -> None:
  _atomic(path, lambda f: np.savez(f, **arrays))


def _jsonable(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


def _pct(x) -> str:
  return "n/a" if x is None else f"{100 * x:.2f}"


def _mean_std(stat: dict) -> str:
  return f"{_pct(stat['mean'])} ± {_pct(stat['std'])}"


def _ci(ci) -> str:
  return f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""


def markdown(results: dict) -> str:
  """The report a person reads: the models, then one row per attack."""
  m = results["models"]
  ds = results["dataset"]
  cfg = results.get("config", {})
  lines = [
      "# Membership inference audit", "",
      f"Dataset `{ds['name']}`: pool of {ds['pool_size']} examples, {ds['test_size']} held-out "
      f"test examples, {ds['num_classes']} classes. Model `{cfg.get('model', {}).get('name')}`, "
      f"{results['num_models']} models each trained on a random half of the pool "
      f"({m['epochs_run']} epochs); every attack is evaluated on {len(results['targets'])} "
      "target models in turn, the other models serving as its shadows.", "",
      "| models | train accuracy | test accuracy | gap |", "|---|---|---|---|",
      f"| {results['num_models']} | {_pct(np.mean(m['train_accuracy']))} ± "
      f"{_pct(np.std(m['train_accuracy']))} | {_pct(np.mean(m['test_accuracy']))} ± "
      f"{_pct(np.std(m['test_accuracy']))} | "
      f"{_pct(np.mean(m['train_accuracy']) - np.mean(m['test_accuracy']))} |", "",
      "## Attacks", "",
      "Percent, mean ± std over targets; [95% bootstrap interval] where computed. "
      "TPR at FPR alpha is the largest TPR whose FPR <= alpha.", "",
      "| attack | AUC | balanced accuracy | advantage | TPR @ 1% FPR | TPR @ 0.1% FPR | "
      "TPR @ 0.01% FPR | TPR @ 0% FPR |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for name, s in results["attacks"].items():
    tpr = s["tpr_at_fpr"]
    ci_tpr = s.get("tpr_at_fpr_ci95", {}).get("0.001")
    lines.append(
        f"| {name} | {_mean_std(s['auc'])}{_ci(s.get('auc_ci95'))} | "
        f"{_mean_std(s['balanced_accuracy'])} | {_mean_std(s['advantage'])} | "
        f"{_mean_std(tpr['0.01'])} | {_mean_std(tpr['0.001'])}{_ci(ci_tpr)} | "
        f"{_mean_std(tpr['0.0001'])} | {_mean_std(tpr['0.0'])} |")
  nonmem = None
  for s in results["attacks"].values():
    nonmem = s.get("nonmembers_at_fpr")
    break
  if nonmem:
    parts = ", ".join(f"{float(k):g}: {v['mean'] if isinstance(v, dict) else v:g}"
                      for k, v in nonmem.items())
    lines += ["", f"Non-members each low-FPR figure rests on, per target (FPR: count): {parts}. "
              "A TPR at an FPR resting on fewer than ~10 non-members is anecdotal."]
  t = results["timing"]
  lines += ["", "## Timing", "",
            f"data {t['data_s']:.1f}s, training {t['train_s']:.1f}s, inference "
            f"{t['inference_s']:.1f}s, attacks {t['attack_s']:.1f}s; total {t['total_s']:.1f}s.", ""]
  return "\n".join(lines)


def roc_figure(path: str, curves: dict) -> None:
  """Log-log ROC of each attack: thin lines per target, a thick line for their mean TPR."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  grid = np.logspace(-5, 0, 400)
  fig, ax = plt.subplots(figsize=(5.5, 5))
  for i, (name, per_target) in enumerate(curves.items()):
    color = f"C{i % 10}"
    tprs = []
    for fpr, tpr in per_target:
      ax.plot(fpr, tpr, color=color, alpha=0.15, lw=0.7)
      tprs.append(np.interp(grid, fpr, tpr))
    ax.plot(grid, np.mean(tprs, axis=0), color=color, lw=2, label=name)
  ax.plot(grid, grid, "k--", lw=0.8, label="chance")
  ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1),
         xlabel="false positive rate", ylabel="true positive rate", title="Membership inference ROC")
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(workdir: str, results: dict, curves: dict) -> None:
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  text = markdown(results)
  _atomic(os.path.join(workdir, "report.md"), lambda f: f.write(text.encode()))
  roc_figure(os.path.join(workdir, "figures", "roc.png"), curves)
