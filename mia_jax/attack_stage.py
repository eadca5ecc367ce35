"""The stage both of the pipeline's modes share, on the models' outputs:

  defenses.post_hoc (defense.post_hoc: the released outputs defended) -> every attack on every
  target (metrics with their 95% intervals, slices per class and per correct/incorrect
  prediction) -> the canary audit -> the shadow-scaling curve -> figures/ -> the analysis
  stage when the caller gives it (analysis.enabled) -> results.json and report.md.

results.json's "defense" says which outputs were attacked; its "analysis" where the analysis
lies (analysis/analysis.md) and its verdicts.
"""

import json
import os
import time
from typing import Callable, Mapping

import ml_collections
import numpy as np

from mia_jax import attacks, figures, inference, report
from mia_jax.attacks import evaluate as attack_eval
from mia_jax.attacks import scaling as scaling_lib
from mia_jax.defenses import post_hoc
from mia_jax.errors import ConfigError
from mia_jax.privacy import canary_audit


def attack_targets(num_targets: int, num_models: int) -> list[int]:
  """The first num_targets models (0: every model); more than num_models is a ConfigError."""
  if num_targets > num_models:
    raise ConfigError(f"attack.num_targets={num_targets} but there are {num_models} models; "
                      f"set --config.attack.num_targets={num_models} (or 0: every model)")
  return list(range(num_models if num_targets <= 0 else num_targets))


def run_attacks(attack_data: attacks.AttackData, config: ml_collections.ConfigDict,
                targets: list[int], log: Callable[[str], None] = print):
  """Every attack of config.attack.names on each target, evaluated and sliced.

  Returns:
    (summaries {name: metrics with intervals, slices, seconds}, curves {name: ROC curves},
     scores {name: [T, N]}).
  """
  acfg = config.attack
  params_by_name = {name: dict(acfg.params.get(name, {})) for name in acfg.names}
  keep_rows = np.asarray(attack_data.keep)[targets]
  predictions = attacks.target_predictions(attack_data, targets)
  summaries, curves, all_scores = {}, {}, {}
  t_attack = time.perf_counter()
  log(f"attacks: {len(acfg.names)} on {len(targets)} targets, each scored, evaluated with "
      "its 95% intervals and sliced ...")
  for k, name in enumerate(acfg.names):
    t0 = time.perf_counter()
    scores = all_scores[name] = attacks.run(name, attack_data, targets, **params_by_name[name])
    summaries[name], curves[name] = attack_eval.evaluate_scores(
        name, scores, attack_data.keep, targets, params=params_by_name[name],
        bootstrap=int(acfg.bootstrap), seed=int(config.seed))
    summaries[name]["slices"] = attack_eval.slice_summary(scores, keep_rows, attack_data.labels,
                                                          predictions)
    summaries[name]["seconds"] = time.perf_counter() - t0
    left = (time.perf_counter() - t_attack) / (k + 1) * (len(acfg.names) - k - 1)
    log(_attack_line(name, summaries[name], len(targets), k, len(acfg.names), left))
  return summaries, curves, all_scores


def _attack_line(name: str, s: dict, num_targets: int, k: int, total: int, left: float) -> str:
  """The progress line of the k-th attack: AUC and TPR at the headline FPR with intervals."""
  fpr = report.headline_fpr([s])
  num_non = s["per_target"][0]["num_nonmembers"]
  return (f"attack {name} (percent): AUC {100 * s['auc']['mean']:.2f}"
          f"{report.interval_text(s.get('auc_ci95'))}, TPR at {report.alpha_text(fpr)} FPR "
          f"{report.tpr_cell(s, fpr, num_non, spread=False)} over {num_targets} targets  "
          f"[{k + 1}/{total}, {s['seconds']:.1f}s"
          + (f", about {left:.0f}s left]" if k + 1 < total else "]"))


def _shadow_scaling(attack_data, config, targets, log) -> dict:
  """The shadow-scaling curve on the first attack.scaling_targets targets ({} when 0)."""
  acfg = config.attack
  scaling_targets = targets[:int(acfg.get("scaling_targets", 0))]
  if not scaling_targets:
    return {}
  t0 = time.perf_counter()
  log(f"shadow-scaling curve: the shadow-based attacks with K references per example, on "
      f"{len(scaling_targets)} targets ...")
  params_by_name = {name: dict(acfg.params.get(name, {})) for name in acfg.names}
  scaling = scaling_lib.shadow_scaling(attack_data, acfg.names, scaling_targets, params_by_name,
                                       int(config.seed))
  log(f"shadow-scaling curve: done in {time.perf_counter() - t0:.1f}s")
  return scaling


def _figures(workdir, curves, summaries, scores, keep_rows, targets, scaling) -> None:
  fig_dir = os.path.join(workdir, "figures")
  figures.roc(os.path.join(fig_dir, "roc.png"), curves, summaries)
  first_scores = {name: s[0] for name, s in scores.items()}
  figures.score_histograms(os.path.join(fig_dir, "score_hist.png"), first_scores, keep_rows[0],
                           targets[0])
  if scaling.get("attacks"):
    figures.shadow_scaling(os.path.join(fig_dir, "shadow_scaling.png"), scaling)


def attack_and_report(attack_data: attacks.AttackData, config: ml_collections.ConfigDict,
                      workdir: str, header: Mapping, clock: report.StageClock,
                      log: Callable[[str], None] = print,
                      analyse: Callable[[attacks.AttackData, Mapping], dict] | None = None
                      ) -> dict:
  """The stage both modes share: the post-hoc defense (defense.post_hoc), attacks, metrics,
  slices, shadow scaling, figures, the analysis (when given), the report.

  Args:
    attack_data: the models' outputs as queried, and keep matrix.
    config: the run's config; its `defense`, `attack` blocks and `seed` are read, all of it
      is recorded.
    workdir: the output folder (it exists).
    header: results entries from the earlier stages: "source", "dataset", "models" (extra
      entries such as epochs_run) and "timing" (entries beside the stages' seconds).
    clock: the run's StageClock, its earlier stages lapped; this stage laps defense_s (when
      a defense is on), attack_s, shadow_scaling_s, figures_s and analysis_s (when given).
    log: takes progress lines.
    analyse: (attacked outputs, {attack: scores [T, N]}) -> the analysis' summary for
      results.json "analysis"; None: no analysis.

  Returns:
    The results also written to results.json (see README, "What lands in the workdir").
  """
  targets = attack_targets(int(config.attack.num_targets), attack_data.num_models)
  attack_data, defense = _defend(attack_data, config, log)
  clock.lap("defense" if defense else "attack")
  summaries, curves, all_scores = run_attacks(attack_data, config, targets, log)
  privacy = canary_audit.run(attack_data, config, header, targets, all_scores, log)
  clock.lap("attack")
  scaling = _shadow_scaling(attack_data, config, targets, log)
  clock.lap("shadow_scaling")
  risk = per_example_risk(attack_data, targets, workdir)
  log("figures and report ...")
  _figures(workdir, curves, summaries, all_scores, np.asarray(attack_data.keep)[targets],
           targets, scaling)
  figures_s = clock.lap("figures")
  analysis = analyse(attack_data, all_scores if len(targets) == attack_data.num_models
                     else {}) if analyse is not None else None
  if analysis:
    clock.lap("analysis")
  models_info = _models_info(header, attack_data)
  timing = dict(header["timing"])
  results = {
      "source": header["source"], "num_models": attack_data.num_models, "targets": targets,
      "dataset": header["dataset"], "models": models_info,
      "defense": defense or {"post_hoc": "", "attacked": "the outputs as queried"},
      "attacks": summaries, "shadow_scaling": scaling,
      **({"privacy": privacy} if privacy else {}),
      **({"analysis": analysis} if analysis else {}),
      **({"risk": risk} if risk else {}),
      "timing": timing, "config": json.loads(json.dumps(config.to_dict(), default=str)),
  }
  timing.update(clock.timing())
  report.write(workdir, results)
  _closing_lines(results, workdir, figures_s, clock, log)
  return results


RISK_MIN_TARGETS = 4     # below this an example has too few IN / OUT targets for an interval


def per_example_risk(attack_data: attacks.AttackData, targets: list[int], workdir: str,
                     top: int = 10) -> dict | None:
  """Each pool example's risk over the targets (attacks.risk.per_example: the AUC of its IN
  targets' scores against its OUT targets', with its interval over targets), written to
  WORKDIR/risk.csv; returns results.json "risk" (counts and the `top` examples), or None with
  fewer than RISK_MIN_TARGETS targets.

  The score is each target's own scaled logit (mean over queries), not a shadow-based
  attack's: LiRA's references leave the target out, which by itself ranks an example's IN
  targets a little below its OUT ones where the model does not memorise it, so a risk below
  0.5 would not mean what it says (attacks/risk.py's tests show it).
  """
  if len(targets) < RISK_MIN_TARGETS:
    return None
  scores = attack_data.target_signal("scaled_logit", targets).mean(-1)
  risk = attacks.risk.per_example(scores, np.asarray(attack_data.keep)[targets])
  attacks.risk.write(os.path.join(workdir, "risk.csv"), risk, labels=attack_data.labels)
  rated = np.isfinite(risk["risk"])
  top_rows = [{k: (v if not isinstance(v, float) or np.isfinite(v) else None)
               for k, v in row.items()}
              for row in attacks.risk.ranked(risk, top, labels=attack_data.labels)]
  return {"score": "scaled_logit", "file": "risk.csv", "targets": len(targets),
          "examples": int(rated.sum()),
          "above_chance": int(np.sum(risk["lo"][rated] > 0.5)),
          "below_chance": int(np.sum(risk["hi"][rated] < 0.5)),
          "median": float(np.median(risk["risk"][rated])) if rated.any() else None,
          "top": top_rows}


def _defend(attack_data, config, log):
  """The post-hoc defense stage (defenses.post_hoc.apply), logged when it is on."""
  attack_data, defense = post_hoc.apply(attack_data, config.get("defense"))
  if defense is not None:
    log(f"defense {defense['post_hoc']} {defense['params']}: every model's outputs defended "
        f"before the attacks ({100 * defense['argmax_changed']:.2f}% of predictions changed)")
  return attack_data, defense


def _models_info(header: Mapping, attack_data: attacks.AttackData) -> dict:
  """results.json "models": the earlier stages' entries and each model's accuracies."""
  models_info = dict(header["models"], **model_accuracies(attack_data))
  if header["source"]["mode"] == "train":
    models_info["test_accuracy_on"] = "held-out test split"
  return models_info


def _closing_lines(results: dict, workdir: str, figures_s: float, clock: report.StageClock,
                   log) -> None:
  models_info, timing = results["models"], results["timing"]
  log(f"figures and report: done in {figures_s + clock.lap('report'):.1f}s")
  log(f"seconds by stage: {report.timing_text(clock.timing())}")
  test_acc = models_info["test_accuracy"]
  log(f"test accuracy {models_info['mean_test_accuracy']:.4f} mean over the {len(test_acc)} "
      f"models (range {min(test_acc):.4f}-{max(test_acc):.4f}); report in "
      f"{os.path.join(workdir, 'report.md')}; total {timing['total_s']:.1f}s")


def model_accuracies(d: attacks.AttackData) -> dict:
  """Each model's accuracy (first query) on its members and on unseen examples.

  Unseen: the population when given, else each model's non-members of the pool.
  """
  out = {"train_accuracy": inference.accuracy(d.logits, d.labels, d.keep).tolist()}
  if d.population_logits is not None:
    out["test_accuracy"] = inference.accuracy(d.population_logits, d.population_labels).tolist()
    out["test_accuracy_on"] = "population examples"
  else:
    out["test_accuracy"] = inference.accuracy(d.logits, d.labels, ~d.keep).tolist()
    out["test_accuracy_on"] = "each model's non-members of the pool"
  out["mean_train_accuracy"] = float(np.mean(out["train_accuracy"]))
  out["mean_test_accuracy"] = float(np.mean(out["test_accuracy"]))
  return out


