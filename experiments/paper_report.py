"""Markdown of experiments/paper_table.py's results, set beside the study's own tables
(Khalil et al. 2025, CIFAR-10 DenseNet-12 and Purchase100 FCN; experiments/paper_reference.py):
every number with its 95% interval over the models, and each of the study's findings with the
verdict of its test (experiments/paper_claims.py and mia_jax.analysis.significance: "holds",
"fails" or "not shown", Holm over the table)."""

import numpy as np

from mia_jax.analysis import significance

from experiments.paper_reference import DEFENSE_NAMES, NAMES, PAPER, UNLEARN_NAMES


def _f(v, d=2):
  return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def _ci(e, key, d=2):
  """'mean [lo, hi]' of e[key] and e[key_ci]; the mean alone where no interval was kept."""
  ci = e.get(f"{key}_ci")
  if not ci:
    return _f(e.get(key), d)
  return f"{_f(e[key], d)} [{_f(ci[0], d)}, {_f(ci[1], d)}]"


def _paper(row, i):
  p = PAPER.get(row, (None, None))[i]
  return " / ".join(_f(v) for v in p) if p else "–"


def _lira(l):
  """LiRA's TPR@0.1%FPR [interval over targets] and AUC [interval]."""
  if not l:
    return "–"
  return f"{_ci(l, 'tpr_at_0.1%')} ({_ci(l, 'auc', 1)})"


def _claims_by_row(res) -> dict:
  return {tuple(c["row"]): c for c in res.get("claims", ()) if c.get("row")}


def _leak_cell(claim) -> str:
  if not claim:
    return "–"
  return f"{claim['verdict']} (p {claim['p']:.2g}, Holm {claim['p_holm']:.2g})"


def _lira_rests_on(res) -> str:
  for group in ("rows", "defenses"):
    for e in (res.get(group) or {}).values():
      l = e.get("lira") if isinstance(e, dict) else None
      if l and "nonmembers" in l:
        return (f"LiRA's TPR at 0.1% FPR rests on {l['false_positives_at_0.1%']:.0f} false "
                f"positives among the {l['nonmembers']:.0f} non-members of each of its "
                f"{l['num_models']} targets (models on random halves of the audited set); its "
                "interval is the t interval over those targets.")
  return ""


def table(res: dict) -> list[str]:
  by_row = _claims_by_row(res)
  lines = ["| defense | train acc | test acc | runtime s/model | AUC | advantage | "
           "still leaks? | LiRA TPR@0.1%FPR (AUC) | paper CIFAR-10 | paper Purchase100 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for row, e in res["rows"].items():
    name = NAMES.get(row, row)
    if e.get("status") != "run":
      lines.append(f"| {name} | {e['status']} |||||||| {_paper(row, 0)} | {_paper(row, 1)} |")
      continue
    if "epsilon" in e:
      name += f" (ε {e['epsilon']:.2f}, δ {e['delta']:.0e}, σ {e['noise_multiplier']:g})"
    lines.append(f"| {name} | {_ci(e, 'train_acc')} | {_ci(e, 'test_acc')} | "
                 f"{_f(e['seconds_per_model'], 1)} | {_ci(e, 'auc')} | {_ci(e, 'advantage')} | "
                 f"{_leak_cell(by_row.get(('rows', row)))} | {_lira(e.get('lira'))} | "
                 f"{_paper(row, 0)} | {_paper(row, 1)} |")
  for base, e in res.get("post_hoc", {}).items():
    la, lu = e.get("lira_aware"), e.get("lira_unaware")
    lira = f"aware {_lira(la)}; unaware {_lira(lu)}" if la else "–"
    paper = _paper("logit_reweighting", 0) if base == "none" else "56.00 -> 53.76 AUC"
    lines.append(f"| logit reweighting w={e['w']} (on {NAMES.get(base, base)}) | "
                 f"{_ci(e, 'train_acc')} | {_ci(e, 'test_acc')} | +{_ci(e, 'overhead_pct', 1)}% "
                 f"inference ({_f(e.get('reweight_us_per_output'), 2)} µs/output; "
                 f"{100 * e['argmax_changed']:.2f}% argmax changed) | {_ci(e, 'auc')} | "
                 f"{_ci(e, 'advantage')} | {_leak_cell(by_row.get(('post_hoc', base)))} | "
                 f"{lira} | {paper} | – |")
  return lines


def _rel(d):
  v = d["vulnerable_vs_rest"]
  s = d["spearman_vs_vulnerability"]
  dec = d["vulnerable_fraction_by_decile"]
  return (f"{v['n_group']} | {_f(v['median_group'], 3)} vs {_f(v['median_rest'], 3)} | "
          f"{_f(v['cliffs_delta'], 3)} | {v['p_value']:.2g} | {_f(s['rho'], 3)} "
          f"(p={s['p_value']:.2g}) | " + " ".join(f"{100 * x:.1f}" for x in dec))


def outlier_tables(a: dict) -> list[str]:
  lines = []
  for key, title in (("threshold_0.01", "members above the loss threshold at 1% FPR "
                      "(Spearman against the member's scaled logit)"),
                     ("threshold_0.005", "members above the loss threshold at 0.5% FPR "
                      "(Spearman against the member's scaled logit)"),
                     ("lira", "examples LiRA flags at 1% FPR in at least half of the targets "
                      "that hold them IN (Spearman against the mean LiRA score when IN)")):
    if key not in a["outliers"]:
      continue
    lines += ["", f"Vulnerable = {title}.", "",
              "| outlier score | vulnerable | median vulnerable vs rest | Cliff's delta | "
              "Mann-Whitney p | Spearman rho | % vulnerable per decile (typical -> outlying) |",
              "|---|---|---|---|---|---|---|"]
    for name, d in a["outliers"][key].items():
      lines.append(f"| {name} | {_rel(d)} |")
  return lines


def _lira_outliers(a: dict) -> bool:
  """True when LiRA's vulnerable examples score higher on every outlier score (p < 0.05)."""
  lira = a["outliers"].get("lira")
  return bool(lira) and all(d["vulnerable_vs_rest"]["cliffs_delta"] > 0 and
                            d["vulnerable_vs_rest"]["p_value"] < 0.05 for d in lira.values())


def _claim_line(c: dict) -> str:
  t = c["test"]
  if "interval" in t and not t["method"].startswith("TOST"):
    stat = (f"difference {_f(t['estimate'])} [{_f(t['interval'][0])}, "
            f"{_f(t['interval'][1])}], ")
  elif "interval" in t:
    stat = f"mean {_f(t['estimate'])} [{_f(t['interval'][0])}, {_f(t['interval'][1])}], "
  else:
    stat = ""
  return (f"- {c['claim']}: **{c['verdict']}** ({c['detail']}; {t['method']} over {t['n']}: "
          f"{stat}p {c['p']:.2g}, Holm {c['p_holm']:.2g}).")


def findings(res: dict, section: str = "study") -> list[str]:
  """The claims of one section ("study", "post_hoc", "beyond" or "leak"), with verdicts."""
  return [_claim_line(c) for c in res.get("claims", ()) if c["section"] == section]


def outlier_findings(a: dict) -> list[str]:
  """The study's outlier claims on the analysis of one target (mia_jax.analysis.study): a
  family of its own (Holm over these claims only), from the two-sided Mann-Whitney p-values
  and the signs of Cliff's delta; the unit is that target's examples, not models."""
  claims = []
  for key, label in (("threshold_0.01", "loss threshold, 1% FPR"), ("lira", "LiRA, 1% FPR")):
    for score, where in (("centroid_distance", "farther from their class centroid"),
                         ("centroid_angle", "at a wider angle to their class centroid"),
                         ("lof", "in sparser regions of their class (LOF)")):
      d = a.get("outliers", {}).get(key, {}).get(score, {}).get("vulnerable_vs_rest")
      if not d or d.get("p_value") is None:
        continue
      half = float(d["p_value"]) / 2
      p_for, p_against = (half, 1 - half) if d["cliffs_delta"] > 0 else (1 - half, half)
      claims.append({"claim": f"Vulnerable members ({label}) lie {where}", "p_for": p_for,
                     "p_against": p_against,
                     "detail": f"Cliff's delta {_f(d['cliffs_delta'], 3)}, Mann-Whitney p "
                               f"{d['p_value']:.2g}, {d['n_group']} vulnerable"})
  return [f"- {c['claim']}: **{c['verdict']}** ({c['detail']}; Holm over these "
          f"{len(claims)} claims {c['p_holm']:.2g})." for c in significance.decide(claims)]


def _unlearning_table(u: dict) -> list[str]:
  """The machine-unlearning rows: AUC of the forgotten, accuracies, seconds; LiRA on them."""
  lines = ["", f"### Machine unlearning ({u['setting']})", "",
           f"Each target forgets {u['forgotten_per_target']} random members. Loss-threshold "
           "AUC of the forgotten examples against never-seen ones (50 = they look like "
           "non-members) and of the retained members for contrast; accuracy in percent; "
           "each with its t interval over the targets; seconds of unlearning per model and "
           "speed-up over retraining from scratch (one timing each).", "",
           "| method | AUC forgotten vs unseen | AUC retained vs unseen | acc forgotten | "
           "acc retained | test acc | s/model | speed-up vs retrain |",
           "|---|---|---|---|---|---|---|---|"]
  for k, m in u["methods"].items():
    sec = _f(m["seconds_per_model"], 1)
    if k == "sisa":
      sec += f" (fit {_f(m['fit_seconds'], 1)})"
    lines.append(f"| {UNLEARN_NAMES.get(k, k)} | {_ci(m, 'auc_forgotten')} | "
                 f"{_ci(m, 'auc_retained')} | {_ci(m, 'acc_forgotten')} | "
                 f"{_ci(m, 'acc_retained')} | {_ci(m, 'test_acc')} | {sec} | "
                 f"{_f(m['speedup_vs_retrain'], 1)}{'x' if m['speedup_vs_retrain'] else ''} |")
  lf = u.get("lira_forgotten")
  if lf:
    lines += ["", f"LiRA on the forgotten examples ({u['lira_forgotten_per_target']} per LiRA "
              "model) against never-seen ones, TPR@0.1%FPR (AUC) with t intervals over every "
              "LiRA model as target: the adaptive attacker's shadows forgot their own random "
              "members by the same method (counted OUT), the unaware one's are the `none` "
              "row's models.", "", "| method | LiRA adaptive | LiRA unaware |", "|---|---|---|"]
    for k, m in lf.items():
      lines.append(f"| {UNLEARN_NAMES.get(k, k)} | {_lira(m['aware'])} | "
                   f"{_lira(m['unaware'])} |")
  return lines


def defense_tables(res: dict) -> list[str]:
  """The rows beyond the study (experiments/paper_defenses.py): adaptive and unaware attackers,
  and the unlearning table."""
  d = res.get("defenses") or {}
  if not d:
    return []
  by_row = _claims_by_row(res)
  none = res["rows"].get("none", {})
  lines = ["", "## Defenses the study names but does not evaluate", "",
           "Loss-threshold AUC / advantage on the targets above; LiRA TPR@0.1%FPR (AUC) by an "
           "adaptive attacker (shadow models trained with the same defense) and by an unaware "
           "one (shadow models trained without it: the `none` row's), every LiRA model in turn "
           "the target.", "",
           "| defense | setting | train acc | test acc | runtime s/model | AUC | advantage | "
           "still leaks? | LiRA adaptive | LiRA unaware |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  if none.get("status") == "run":
    lines.append(f"| none (for reference) | – | {_ci(none, 'train_acc')} | "
                 f"{_ci(none, 'test_acc')} | {_f(none['seconds_per_model'], 1)} | "
                 f"{_ci(none, 'auc')} | {_ci(none, 'advantage')} | "
                 f"{_leak_cell(by_row.get(('rows', 'none')))} | {_lira(none.get('lira'))} | "
                 f"{_lira(none.get('lira'))} |")
  for row, e in d.items():
    name = DEFENSE_NAMES.get(row, row)
    if row == "unlearning":
      continue
    if e.get("status") != "run":
      lines.append(f"| {name} | {e['status']} |||||||||")
      continue
    auc, adv = _ci(e, "auc"), _ci(e, "advantage")
    if "threshold_unaware" in e:
      auc += f" (plain query: {_ci(e['threshold_unaware'], 'auc')})"
      adv += f" ({_ci(e['threshold_unaware'], 'advantage')})"
    lines.append(f"| {name} | {e.get('setting', '')} | {_ci(e, 'train_acc')} | "
                 f"{_ci(e, 'test_acc')} | {_f(e['seconds_per_model'], 1)} | {auc} | {adv} | "
                 f"{_leak_cell(by_row.get(('defenses', row)))} | {_lira(e.get('lira'))} | "
                 f"{_lira(e.get('lira_unaware'))} |")
  u = d.get("unlearning")
  if u and u.get("status") == "run":
    lines += _unlearning_table(u)
  return lines


def how_tested(res: dict) -> list[str]:
  """How the verdicts are decided, with this run's numbers of models and claims."""
  n = int(res.get("num_models", 0))
  k = len(res.get("claims", ()))
  floor = 2.0 / 2 ** n if n else float("nan")
  return [
      "Every number is the mean over the row's target models with its 95% t interval over "
      "them (the models, i.e. their training seeds, are the unit that varies; the split into "
      "members and non-members is the study's fixed one, so the intervals and tests say what "
      "holds for models trained on this split). A finding says **holds** only when a test at "
      f"5% supports it after Holm's correction over all {k} claims of this table (study, post "
      "hoc, beyond the study and the per-row leak tests together), **fails** only when the "
      "test supports the opposite, and **not shown** otherwise (no verdict either way: a point "
      "estimate that moved in the claimed direction is not evidence).",
      "Rows are compared over the same models where they share them: the post-hoc defense is "
      "the same models, raw against reweighted outputs, and the trained rows other than DP-SGD "
      "(Poisson batches), curriculum (its own order) and the ensembles (sub-models) share "
      "model m's initialisation and data order with the `none` row's model m, so they are "
      "paired by model; the others are compared unpaired (Welch). The test is the paired (or "
      "Welch) t test: each model's AUC, advantage and accuracy averages over thousands of "
      "examples, so its variation over seeds is close to normal. Not the exact sign-flip "
      f"test: over {n} models it cannot go below p = 2 / 2^{n} = {floor:.2g}, and Holm's first "
      f"step over {k} claims needs p <= 0.05 / {k} = {0.05 / max(k, 1):.2g}"
      + (" (out of reach)" if k and floor > 0.05 / k else "") + ". LiRA's TPR at 0.1% FPR "
      "rests on a handful of non-members per target and is far from normal: its comparisons "
      "(the same LiRA targets under two attackers, or raw against reweighted outputs) use the "
      "exact sign-flip test over the LiRA targets.",
      "Still leaks?: the row's mean AUC and mean advantage over its targets against their "
      "no-leak distributions, from permutations of the member labels (one permutation of the "
      "examples relabels every target at once, since the targets share their members and "
      "their scores are correlated through the examples); a leak needs both above the null "
      "(p = the larger p-value). The advantage is max(TPR - FPR) over thresholds, mia_jax's "
      "form (the study's max |TPR - FPR| is never smaller). \"Removes the leak\" and the other "
      "claims of no effect are equivalence tests (two one-sided t tests) with the margin each "
      "states; \"does not raise\" and \"as well as\" are one-sided tests against a margin.",
  ]


def _analysis_section(a: dict | None, fig_dir: str) -> list[str]:
  """The single-target analysis of the `none` row (mia_jax.analysis.study), if it ran."""
  lines = []
  if a and "markdown" in a:         # mia_jax.analysis.study writes its own section
    lines += ["", "## Vulnerable members and outlier scores (the `none` row, target 0)", ""]
    lines += a["markdown"]
    lines += ["", "Member / non-member signal histograms of the `none` row over training: "
              f"`{fig_dir}/histograms_by_epoch.png`."]
  elif a:
    lines += ["", "## Vulnerable members and outlier scores (the `none` row, target 0)", ""]
    for alpha, v in a["vulnerable"].items():
      lines.append(f"- at {float(alpha) * 100:g}% FPR: {v['count']} vulnerable members "
                   f"({100 * v['fraction_of_members']:.2f}% of members), per class "
                   f"{v['per_class']}")
    if "lira_vulnerable_count" in a:
      lines.append(f"- LiRA (1% FPR, flagged in at least half of the IN targets): "
                   f"{a['lira_vulnerable_count']} examples")
    lines += outlier_tables(a)
    out = outlier_findings(a)
    if out:
      lines += ["", "The study's outlier claims on this one target's examples (not part of the "
                "table's family; see experiments/results/vulnerability_* for the analysis "
                "across targets):", ""] + out
    t = a.get("outliers", {}).get("threshold_0.01", {})
    if "centroid_angle" in t and "centroid_distance" in t:
      dist = t["centroid_distance"]["vulnerable_vs_rest"]["cliffs_delta"]
      ang = t["centroid_angle"]["vulnerable_vs_rest"]["cliffs_delta"]
      if dist > 0 and ang <= 0:
        lines.append("- Caveat: the loss-threshold-vulnerable members are far from their class "
                     f"centroid in Euclidean distance (delta {_f(dist, 3)}) but no farther, or "
                     f"closer, in angle (delta {_f(ang, 3)}): they are large-norm, "
                     "over-confident examples along their class's own direction, not atypical "
                     "ones." + (" LiRA's per-example test is the one whose vulnerable examples "
                                "are outliers by every score here." if _lira_outliers(a) else ""))
    lines += ["", f"Figures in `{fig_dir}/`: histograms_by_epoch.png, tsne_features.png, "
              "tsne_logits.png, vulnerable_by_outlier_decile.png"
              + (", lira_vulnerable_by_outlier_decile.png" if "lira" in a["outliers"] else "")
              + (", gradcam_most_least_vulnerable.png" if "gradcam" in a else "") + "."]
  return lines


def markdown(res: dict, fig_dir: str) -> str:
  """OUT.md of experiments/paper_table.py."""
  ds = res["dataset"]
  lines = [f"# Defense table on {ds['name']} (Khalil et al. 2025 protocol)", "",
           f"Members: {ds['members']} training examples; non-members: {ds['nonmembers']} test "
           f"examples (unbalanced, as the study); {res['num_models']} model(s) per row, each a "
           "target of the global loss-threshold attack (AUC and advantage in percent, mean "
           "[95% t interval] over targets). LiRA: online, models on random halves of the same "
           f"{ds['members'] + ds['nonmembers']} examples, mean [t interval] over every model as "
           "target. Paper columns: train / test / AUC / advantage.", ""]
  lines += table(res)
  rests = _lira_rests_on(res)
  if rests:
    lines += ["", rests]
  lines += ["", "## How the verdicts are tested", ""] + [f"- {t}" for t in how_tested(res)]
  notes = res["config"].get("paper", {}).get("notes") or ()
  if notes:
    lines += ["", "## How this run differs from the study", ""] + [f"- {n}" for n in notes]
  lines += defense_tables(res)
  lines += ["", "## The study's findings, checked here", ""] + findings(res, "study")
  post = findings(res, "post_hoc")
  if post:
    lines += ["", "### The post-hoc defense (logit reweighting)", ""] + post
  extra = findings(res, "beyond")
  if extra:
    lines += ["", "## Beyond the study: the extra defenses, checked here", ""] + extra
  leaks = findings(res, "leak")
  if leaks:
    lines += ["", "## Does each defended row still leak?", ""] + leaks
  lines += _analysis_section(res.get("analysis"), fig_dir)
  return "\n".join(lines) + "\n"
