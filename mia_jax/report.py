"""The audit's written outputs in the workdir: results.json and report.md (figures: figures.py).

Files are written to a temporary name and renamed, so a run killed while writing leaves the
previous file whole.
"""

import json
import math
import os
import tempfile
import time

import numpy as np

from mia_jax import stats
from mia_jax.attacks import risk as attacks_risk

FPRS = ("0.01", "0.001", "0.0001", "0.0")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class StageClock:
  """Wall and CPU seconds of a run's stages, lap by lap: results.json "timing".

  Wall is time.perf_counter; CPU is time.process_time, every thread of the process (XLA's
  included), which a machine loaded by other jobs hardly inflates. `timing()` gives
  {STAGE_s: wall} in lap order, "total_s", and "cpu": {"startup_s" (the process' CPU before
  the clock started: interpreter, imports, flags), STAGE_s..., "total_s"}.
  """

  def __init__(self):
    self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
    self._last = (self._wall0, self._cpu0)
    self.wall: dict[str, float] = {}
    self.cpu: dict[str, float] = {"startup_s": self._cpu0}

  def lap(self, stage: str) -> float:
    """Adds the seconds since the last lap to `stage` (a stage may take several laps);
    returns the wall seconds of this lap."""
    wall, cpu = time.perf_counter(), time.process_time()
    key = f"{stage}_s"
    self.wall[key] = self.wall.get(key, 0.0) + wall - self._last[0]
    self.cpu[key] = self.cpu.get(key, 0.0) + cpu - self._last[1]
    lap_wall, self._last = wall - self._last[0], (wall, cpu)
    return lap_wall

  def timing(self) -> dict:
    """The stages' seconds so far, with the totals since the clock started."""
    total_cpu = time.process_time() - self._cpu0
    return {**self.wall, "total_s": time.perf_counter() - self._wall0,
            "cpu": {**self.cpu, "total_s": total_cpu}}


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


def interval_text(ci, digits: int = 2) -> str:
  """' [lo, hi]' in percent, rounded outward so the shown interval holds the shown estimate."""
  if not ci:
    return ""
  scale = 10 ** digits
  lo = math.floor(100 * ci[0] * scale + 1e-6) / scale
  hi = math.ceil(100 * ci[1] * scale - 1e-6) / scale
  return f" [{lo:.{digits}f}, {hi:.{digits}f}]"


def alpha_text(key: str) -> str:
  """An FPR key as a percentage: "0.001" -> "0.1%"."""
  return f"{100 * float(key):g}%"


def _unresolved(num_nonmembers: float) -> str:
  return f"n/a ({num_nonmembers:.0f} non-members)"


def tpr_cell(s: dict, key: str, num_nonmembers: float, spread: bool = True) -> str:
  """TPR at FPR key as "mean ± std [interval]", or n/a where the FPR is not resolved."""
  if not s.get("tpr_at_fpr_resolved", {}).get(key, True):
    return _unresolved(num_nonmembers)
  stat = s["tpr_at_fpr"][key]
  shown = _mean_std(stat) if spread else _pct(stat["mean"])
  return shown + interval_text(s.get("tpr_at_fpr_ci95", {}).get(key))


def headline_fpr(summaries) -> str:
  """0.1% FPR if every summary resolves it, else 1% (else 0.1%, every value n/a)."""
  summaries = list(summaries)
  for key in ("0.001", "0.01"):
    if all(s.get("tpr_at_fpr_resolved", {}).get(key, True) for s in summaries):
      return key
  return "0.001"


def strongest(attacks: dict) -> str:
  """The attack with the highest mean TPR at the headline FPR (ties: the higher mean AUC)."""
  key = headline_fpr(attacks.values())
  return max(attacks, key=lambda n: (attacks[n]["tpr_at_fpr"][key]["mean"],
                                     attacks[n]["auc"]["mean"]))


def _intro(results: dict) -> list[str]:
  m, ds, src = results["models"], results["dataset"], results.get("source", {})
  targets = len(results["targets"])
  if src.get("mode") == "attack_only":
    text = (f"Attack-only audit of the logits in `{src['logits_file']}` (no training here): "
            f"{results['num_models']} models, a pool of {ds['pool_size']} examples, "
            f"{ds['test_size']} population examples, {ds['num_classes']} classes, "
            f"{ds['num_queries']} quer{'y' if ds['num_queries'] == 1 else 'ies'} per example")
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
  train, test = np.asarray(m["train_accuracy"]), np.asarray(m["test_accuracy"])
  gap = train - test if train.shape == test.shape else np.array([train.mean() - test.mean()])

  def acc(v):
    shown = f"{_pct(v.mean())} ± {_pct(v.std(ddof=1) if v.size > 1 else 0.0)}"
    return shown + (interval_text(stats.t_interval(v)) if v.size > 1 else "")

  return [
      "# Membership inference audit", "", text, "",
      "Accuracies in percent: mean ± std over the models [95% t interval of the mean over "
      "models].", "",
      f"| models | train accuracy | test accuracy ({test_on}) | gap |", "|---|---|---|---|",
      f"| {results['num_models']} | {acc(train)} | {acc(test)} | {acc(gap)} |", ""]


def _interval_words(results: dict) -> str:
  first = next(iter(results["attacks"].values()))
  if first.get("interval_unit", "targets") == "examples":
    return ("the 95% interval of the one target's value over its examples (one target: the "
            "model-to-model variance is not covered)")
  return ("the 95% interval of that mean, over the target models (Student t; each target's "
          "own interval over examples is in results.json)")


def _attack_table(results: dict) -> list[str]:
  attacks = results["attacks"]
  first = next(iter(attacks.values()))
  n_non = float(np.mean([r["num_nonmembers"] for r in first["per_target"]]))
  budget = ", ".join(f"{alpha_text(k)} FPR: {first['nonmembers_at_fpr'][k]['mean']:.3g}"
                     for k in TABLE_FPRS)
  lines = [
      "## Attacks", "",
      f"Percent; mean ± std over {len(results['targets'])} targets, then "
      f"{_interval_words(results)}. TPR at FPR alpha is the largest TPR whose FPR <= alpha. "
      f"Each target has about {n_non:.0f} non-members, so the false positives each FPR allows "
      f"(the non-members it rests on) are {budget}. Where that is 0 the FPR is not resolved: "
      "the value would be the TPR at 0% FPR whatever alpha is, and the table says n/a. "
      "Advantage is max(TPR - FPR); the study's max |TPR - FPR| is `advantage_abs` in "
      "results.json.", "",
      "| attack | AUC | balanced accuracy | advantage | "
      + " | ".join(f"TPR @ {alpha_text(k)} FPR" for k in TABLE_FPRS) + " |",
      "|---|---|---|---|" + "---|" * len(TABLE_FPRS)]
  for name, s in attacks.items():
    cells = [f"{_mean_std(s[m])}{interval_text(s.get(f'{m}_ci95'))}"
             for m in ("auc", "balanced_accuracy", "advantage")]
    cells += [tpr_cell(s, k, n_non) for k in TABLE_FPRS]
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
  lines = [f"## Slices of `{name}` (the strongest attack at "
           f"{alpha_text(headline_fpr(attacks.values()))} FPR)", "",
           "Mean over targets (those whose slice holds members and non-members) [95% interval "
           "over those targets]; members and non-members per target; AUC and TPR in percent, "
           "each slice with its own threshold; n/a where a slice's non-members cannot resolve "
           "the FPR. Every attack's slices are in results.json (`attacks.NAME.slices`).", "",
           "| slice | members | non-members | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR |",
           "|---|---|---|---|---|---|"]
  for label, v in rows:
    head = f"| {label} | {v['num_members']:.0f} | {v['num_nonmembers']:.0f} | "
    if "auc" not in v:
      lines.append(head + "n/a (no members or no non-members) | n/a | n/a |")
      continue
    lines.append(head + f"{_mean_std(v['auc'])}{interval_text(v.get('auc_ci95'))} | "
                 f"{tpr_cell(v, '0.01', v['num_nonmembers'], spread=False)} | "
                 f"{tpr_cell(v, '0.001', v['num_nonmembers'], spread=False)} |")
  return lines + [""]


def _scaling_table(results: dict) -> list[str]:
  scaling = results.get("shadow_scaling") or {}
  if not scaling.get("attacks"):
    return []
  sizes = scaling["sizes"]
  points = [p for ps in scaling["attacks"].values() for p in ps if "auc" in p]
  key = headline_fpr(points)
  n_non = np.mean([p["num_nonmembers"] for p in points]) if points else 0
  note = ("" if key == "0.001" else
          f" (0.1% FPR is not resolved by {n_non:.0f} non-members per target)")
  few = (f" With {len(scaling['targets'])} targets the interval is wide on average and narrow "
         "where their values happen to agree." if len(scaling["targets"]) < 4 else "")
  lines = [f"## TPR at {alpha_text(key)} FPR against the number of shadow models", "",
           f"Percent{note}: mean over target(s) {scaling['targets']} [95% interval over them]; "
           "a column K reruns the attack with K references per example, K/2 IN and K/2 OUT "
           f"drawn from the other models (`figures/shadow_scaling.png`).{few}", "",
           "| attack | " + " | ".join(str(s) for s in sizes) + " |",
           "|---|" + "---|" * len(sizes)]
  for name, ps in scaling["attacks"].items():
    cells = [tpr_cell(p, key, p["num_nonmembers"], spread=False) if "auc" in p else "n/a"
             for p in ps]
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


def _defense_lines(results: dict) -> list[str]:
  """Which outputs the attacks read: as queried, or through the post-hoc defense."""
  d = results.get("defense") or {}
  if not d.get("post_hoc"):
    return []
  params = ", ".join(f"{k}={v}" for k, v in d.get("params", {}).items())
  return [f"Post-hoc defense `{d['post_hoc']}` ({params or 'default parameters'}): every "
          f"attack below reads the {d['attacked']}; it changed "
          f"{_pct(d['argmax_changed'])}% of the predictions. The accuracies above are those "
          "of the defended outputs.", ""]


def _analysis_lines(results: dict) -> list[str]:
  """The analysis stage's verdicts in brief, and the link to its report."""
  a = results.get("analysis")
  if not a:
    return []
  lines = ["## Which examples leak, and are they outliers?", "",
           f"The analysis stage's report: [{a['report']}]({a['report']}) (figures beside it). "
           "Its verdicts on the study's claims (Holm over its tests):", ""]
  for attack, by_alpha in a["attacks"].items():
    for alpha, r in by_alpha.items():
      verdicts = ", ".join(f"{c} {v}" for c, v in r["verdicts"].items())
      p = r["precision"]
      shown = interval_text(p["interval"]) if np.isfinite(p["interval"]).all() else ""
      lines.append(f"- {attack} at {float(alpha) * 100:g}% FPR: precision of the flags "
                   f"{_pct(p['mean'])}%{shown} against the "
                   f"{_pct(r['base_rate'])}% member base rate; {r['significant_examples']} "
                   f"examples leak significantly; {verdicts}.")
  return lines + [""]


def _risk_lines(results: dict) -> list[str]:
  """The per-example risk in brief: how many examples leak beyond chance, the top ones."""
  r = results.get("risk")
  if not r:
    return []
  lines = ["## Which examples are at risk", "",
           f"Each pool example's risk: the AUC of its IN targets' scores against its OUT "
           f"targets' over the {r['targets']} targets (the target's own scaled logit; 0.5: "
           "membership of the example leaves no trace), with its 95% interval over targets "
           f"(attacks.risk). Of {r['examples']} examples, {r['above_chance']} have their whole "
           f"interval above 0.5 and {r['below_chance']} below it (with no leak about 2.5% "
           f"would fall on each side); median risk {r['median']:.3f}. Every example's row is "
           f"in `{r['file']}` (join on `index`, the example's row in the pool). The most at "
           "risk:", ""]
  rows = [{k: math.nan if v is None else v for k, v in row.items()} for row in r["top"]]
  if rows:
    lines += attacks_risk.markdown(rows).splitlines()
  return lines + [""]


def markdown(results: dict) -> str:
  """The report a person reads: models, privacy, the attack table, slices, shadow scaling."""
  lines = (_intro(results) + _defense_lines(results) + _privacy_section(results)
           + _attack_table(results) + _slice_table(results))
  lines += _scaling_table(results)
  scaled = (results.get("shadow_scaling") or {}).get("attacks")
  lines += ["Figures: `figures/roc.png` (log-log ROC), `figures/score_hist.png` (scores of "
            "members and non-members)" + (", `figures/shadow_scaling.png`." if scaled else "."),
            ""]
  lines += _analysis_lines(results) + _risk_lines(results)
  lines += ["## Timing", "", timing_text(results["timing"]), ""]
  return "\n".join(lines)


def timing_text(timing: dict) -> str:
  """'data 0.7s (CPU 0.2s), train ...; total 20.1s (CPU 12.0s, 3.9s of it before the run)'."""
  cpu = timing.get("cpu", {})

  def seconds(key: str) -> str:
    return f"{timing[key]:.1f}s" + (f" (CPU {cpu[key]:.1f}s)" if key in cpu else "")

  parts = ", ".join(f"{k[:-2].replace('_', ' ')} {seconds(k)}" for k, v in timing.items()
                    if k.endswith("_s") and k != "total_s" and isinstance(v, float))
  startup = (f", {cpu['startup_s']:.1f}s of it before the run: start-up and imports"
             if "startup_s" in cpu else "")
  total = (f"{timing['total_s']:.1f}s (CPU {cpu['total_s'] + cpu.get('startup_s', 0):.1f}s"
           f"{startup})" if "total_s" in cpu else f"{timing['total_s']:.1f}s")
  return f"{parts}; total {total}."


def write(workdir: str, results: dict) -> None:
  """Writes results.json and report.md."""
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  text = markdown(results)
  atomic_write(os.path.join(workdir, "report.md"), lambda f: f.write(text.encode()))
