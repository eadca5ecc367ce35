"""Markdown of experiments/paper_table.py's results, set beside the study's own tables
(Khalil et al. 2025, CIFAR-10 DenseNet-12 and Purchase100 FCN), with each of the study's
findings checked against this run's numbers."""

import numpy as np

# train acc / test acc / AUC / advantage (percent), from the study (shared/REFERENCE.md).
PAPER = {
    "none": ((99.97, 87.91, 60.27, 22.07), (97.76, 87.54, 57.27, 13.86)),
    "early_stopping": ((99.97, 87.93, 60.21, 21.96), (96.88, 89.58, 55.07, 10.40)),
    "l2_5e-4": ((99.99, 91.46, 57.11, 19.13), (94.91, 89.34, 53.25, 7.26)),
    "l2_1e-3": ((99.95, 89.61, 58.07, 20.52), (92.63, 88.37, 52.22, 4.87)),
    "l2_5e-3": ((60.35, 59.71, 50.06, 0.82), (77.76, 76.16, 50.92, 1.73)),
    "regdrop_0.25": ((99.85, 91.78, 56.00, 15.44), (90.02, 87.14, 51.87, 3.70)),
    "regdrop_0.5": ((91.97, 84.89, 53.61, 7.52), (86.52, 84.45, 51.44, 2.46)),
    "label_smoothing": ((99.99, 86.47, 67.33, 37.04), (99.15, 88.52, 59.43, 16.43)),
    "dp_sgd": ((59.51, 59.55, 50.00, 0.53), (61.71, 61.21, 50.36, 0.70)),
    "logit_reweighting": ((99.97, 87.91, 55.94, 11.89), None),
}
NAMES = {"none": "none", "early_stopping": "early stopping", "l2_5e-4": "L2 5e-4",
         "l2_1e-3": "L2 1e-3", "l2_5e-3": "L2 5e-3", "regdrop_0.25": "RegDrop 0.25",
         "regdrop_0.5": "RegDrop 0.5", "label_smoothing": "label smoothing", "dp_sgd": "DP-SGD",
         "logit_reweighting": "logit reweighting (on none)"}


def _f(v, d=2):
  return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def _paper(row, i):
  p = PAPER.get(row, (None, None))[i]
  return " / ".join(_f(v) for v in p) if p else "–"


def _lira(e):
  l = e.get("lira")
  return f"{_f(l['tpr_at_0.1%'])} ({_f(l['auc'], 1)})" if l else "–"


def table(res: dict) -> list[str]:
  lines = ["| defense | train acc | test acc | runtime s/model | AUC | advantage | "
           "LiRA TPR@0.1%FPR (AUC) | paper CIFAR-10 | paper Purchase100 |",
           "|---|---|---|---|---|---|---|---|---|"]
  for row, e in res["rows"].items():
    name = NAMES.get(row, row)
    if e.get("status") != "run":
      lines.append(f"| {name} | {e['status']} ||||||| {_paper(row, 0)} | {_paper(row, 1)} |")
      continue
    if "epsilon" in e:
      name += f" (ε {e['epsilon']:.2f}, δ {e['delta']:.0e}, σ {e['noise_multiplier']:g})"
    lines.append(f"| {name} | {_f(e['train_acc'])} | {_f(e['test_acc'])} | "
                 f"{_f(e['seconds_per_model'], 1)} | {_f(e['auc'])} ± {_f(e['auc_std'])} | "
                 f"{_f(e['advantage'])} ± {_f(e['advantage_std'])} | {_lira(e)} | "
                 f"{_paper(row, 0)} | {_paper(row, 1)} |")
  for base, e in res.get("post_hoc", {}).items():
    la, lu = e.get("lira_aware"), e.get("lira_unaware")
    lira = (f"aware {_f(la['tpr_at_0.1%'])} ({_f(la['auc'], 1)}); unaware "
            f"{_f(lu['tpr_at_0.1%'])} ({_f(lu['auc'], 1)})") if la else "–"
    paper = _paper("logit_reweighting", 0) if base == "none" else "56.00 -> 53.76 AUC"
    lines.append(f"| logit reweighting w={e['w']} (on {NAMES.get(base, base)}) | "
                 f"{_f(e['train_acc'])} | {_f(e['test_acc'])} | +{_f(e['overhead_pct'], 1)}% "
                 f"inference ({_f(e.get('reweight_us_per_output'), 2)} µs/output; "
                 f"{100 * e['argmax_changed']:.2f}% argmax changed) | {_f(e['auc'])} ± {_f(e['auc_std'])} | {_f(e['advantage'])} ± "
                 f"{_f(e['advantage_std'])} | {lira} | {paper} | – |")
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


def findings(res: dict) -> list[str]:
  """The study's claims, each checked on this run: 'holds' or 'does not hold' with numbers."""
  r, out = res["rows"], []
  ok = lambda k: k in r and r[k].get("status") == "run"  # noqa: E731
  def say(claim, holds, detail):
    out.append(f"- {claim}: **{'holds' if holds else 'does not hold'}** ({detail}).")
  if ok("none"):
    n = r["none"]
    say("A well-generalising model still leaks (AUC > 50, advantage > 0 with no defense)",
        n["auc"] > 51 and n["advantage"] > 2,
        f"test acc {_f(n['test_acc'])}, AUC {_f(n['auc'])}, advantage {_f(n['advantage'])}")
    for k in ("l2_5e-4", "l2_1e-3", "regdrop_0.25", "regdrop_0.5"):
      if ok(k):
        say(f"{NAMES[k]} lowers AUC and advantage", r[k]["auc"] < n["auc"] and
            r[k]["advantage"] < n["advantage"],
            f"AUC {_f(n['auc'])} -> {_f(r[k]['auc'])}, advantage {_f(n['advantage'])} -> "
            f"{_f(r[k]['advantage'])}, test acc {_f(n['test_acc'])} -> {_f(r[k]['test_acc'])}")
    if ok("l2_5e-3"):
      k = r["l2_5e-3"]
      say("L2 5e-3 removes the leak (AUC near 50) at a cost in accuracy",
          k["auc"] < 52 and k["test_acc"] < n["test_acc"],
          f"AUC {_f(k['auc'])}, test acc {_f(k['test_acc'])} vs {_f(n['test_acc'])}")
    if ok("regdrop_0.25") and ok("l2_5e-4"):
      say("Dropout on top of L2 5e-4 lowers the advantage further",
          r["regdrop_0.25"]["advantage"] < r["l2_5e-4"]["advantage"],
          f"{_f(r['l2_5e-4']['advantage'])} -> {_f(r['regdrop_0.25']['advantage'])}")
    if ok("label_smoothing"):
      k = r["label_smoothing"]
      say("Label smoothing raises the leak", k["auc"] > n["auc"] and
          k["advantage"] > n["advantage"], f"AUC {_f(n['auc'])} -> {_f(k['auc'])}, "
          f"advantage {_f(n['advantage'])} -> {_f(k['advantage'])}")
    if ok("early_stopping"):
      k = r["early_stopping"]
      say("Early stopping does not raise the leak (the study: no change on CIFAR-10, a drop "
          "on Purchase100)", k["auc"] <= n["auc"] + 0.5,
          f"AUC {_f(n['auc'])} -> {_f(k['auc'])}, advantage {_f(n['advantage'])} -> "
          f"{_f(k['advantage'])}, test acc {_f(n['test_acc'])} -> {_f(k['test_acc'])}, "
          f"stopped after {k['epochs_run']} epochs")
  for base, e in res.get("post_hoc", {}).items():
    if ok(base):
      b = r[base]
      say(f"Logit reweighting on {NAMES.get(base, base)} lowers AUC and advantage with "
          "accuracy unchanged",
          e["auc"] < b["auc"] and e["advantage"] < b["advantage"] and
          abs(e["test_acc"] - b["test_acc"]) < 0.05,
          f"AUC {_f(b['auc'])} -> {_f(e['auc'])}, advantage {_f(b['advantage'])} -> "
          f"{_f(e['advantage'])}, test acc {_f(b['test_acc'])} -> {_f(e['test_acc'])}")
      say(f"Logit reweighting on {NAMES.get(base, base)} costs under 1% of inference time",
          e["overhead_pct"] < 1, f"{_f(e['overhead_pct'])}% of this model's inference, "
          f"{_f(e.get('reweight_us_per_output'))} µs per output")
      if "lira_aware" in e:
        la, lu, lb = e["lira_aware"], e["lira_unaware"], b["lira"]
        say(f"Logit reweighting on {NAMES.get(base, base)} also blunts LiRA, even for an "
            "attacker who reweights the shadows the same way (not tested by the study)",
            la["tpr_at_0.1%"] < lb["tpr_at_0.1%"] and la["auc"] < lb["auc"],
            f"TPR@0.1%FPR {_f(lb['tpr_at_0.1%'])} -> aware {_f(la['tpr_at_0.1%'])} / unaware "
            f"{_f(lu['tpr_at_0.1%'])}; AUC {_f(lb['auc'])} -> {_f(la['auc'])} / {_f(lu['auc'])}")
  a = res.get("analysis")
  if a:
    for key, label in (("threshold_0.01", "loss threshold, 1% FPR"), ("lira", "LiRA, 1% FPR")):
      if key in a["outliers"]:
        for score, where in (("centroid_distance", "farther from their class centroid"),
                             ("centroid_angle", "at a wider angle to their class centroid"),
                             ("lof", "in sparser regions of their class (LOF)")):
          if score not in a["outliers"][key]:
            continue
          d = a["outliers"][key][score]["vulnerable_vs_rest"]
          say(f"Vulnerable members ({label}) lie {where}",
              d["cliffs_delta"] > 0 and d["p_value"] < 0.05,
              f"Cliff's delta {_f(d['cliffs_delta'], 3)}, p {d['p_value']:.2g}, "
              f"{d['n_group']} vulnerable")
  if a and "centroid_angle" in a["outliers"].get("threshold_0.01", {}):
    t = a["outliers"]["threshold_0.01"]
    dist = t["centroid_distance"]["vulnerable_vs_rest"]["cliffs_delta"]
    ang = t["centroid_angle"]["vulnerable_vs_rest"]["cliffs_delta"]
    if dist > 0 and ang <= 0:
      out.append("- Caveat: the loss-threshold-vulnerable members are far from their class "
                 f"centroid in Euclidean distance (delta {_f(dist, 3)}) but no farther, or "
                 f"closer, in angle (delta {_f(ang, 3)}): they are large-norm, over-confident "
                 "examples along their class's own direction, not atypical ones."
                 + (" LiRA's per-example test is the one whose vulnerable examples are "
                    "outliers by every score here." if _lira_outliers(a) else ""))
  return out


DEFENSE_NAMES = {"curriculum": "curriculum learning", "augmentation": "data augmentation",
                 "ensemble": "ensemble (disjoint partitions)",
                 "ensemble_bagging": "ensemble (bagging)", "unlearning": "machine unlearning"}
UNLEARN_NAMES = {"none": "no unlearning (the `none` models)", "retrain": "retrain from scratch",
                 "sisa": "SISA (exact)", "finetune": "fine-tune on retained",
                 "gradient_ascent": "gradient ascent on forgotten"}


def _pair(e, key):
  l = e.get(key)
  return f"{_f(l['tpr_at_0.1%'])} ({_f(l['auc'], 1)})" if l else "–"


def defense_tables(res: dict) -> list[str]:
  """The rows beyond the study (experiments/paper_defenses.py): adaptive and unaware attackers,
  and the unlearning table."""
  d = res.get("defenses") or {}
  if not d:
    return []
  none = res["rows"].get("none", {})
  lines = ["", "## Defenses the study names but does not evaluate", "",
           "Loss-threshold AUC / advantage on the targets above; LiRA TPR@0.1%FPR (AUC) by an "
           "adaptive attacker (shadow models trained with the same defense) and by an unaware "
           "one (shadow models trained without it: the `none` row's), every LiRA model in turn "
           "the target.", "",
           "| defense | setting | train acc | test acc | runtime s/model | AUC | advantage | "
           "LiRA adaptive | LiRA unaware |", "|---|---|---|---|---|---|---|---|---|"]
  if none.get("status") == "run":
    lines.append(f"| none (for reference) | – | {_f(none['train_acc'])} | {_f(none['test_acc'])} | "
                 f"{_f(none['seconds_per_model'], 1)} | {_f(none['auc'])} ± "
                 f"{_f(none['auc_std'])} | {_f(none['advantage'])} ± {_f(none['advantage_std'])}"
                 f" | {_lira(none)} | {_lira(none)} |")
  for row, e in d.items():
    name = DEFENSE_NAMES.get(row, row)
    if row == "unlearning":
      continue
    if e.get("status") != "run":
      lines.append(f"| {name} | {e['status']} ||||||||")
      continue
    auc = f"{_f(e['auc'])} ± {_f(e['auc_std'])}"
    adv = f"{_f(e['advantage'])} ± {_f(e['advantage_std'])}"
    if "threshold_unaware" in e:
      auc += f" (plain query: {_f(e['threshold_unaware']['auc'])})"
      adv += f" ({_f(e['threshold_unaware']['advantage'])})"
    lines.append(f"| {name} | {e.get('setting', '')} | {_f(e['train_acc'])} | "
                 f"{_f(e['test_acc'])} | {_f(e['seconds_per_model'], 1)} | {auc} | {adv} | "
                 f"{_pair(e, 'lira')} | {_pair(e, 'lira_unaware')} |")
  u = d.get("unlearning")
  if u and u.get("status") == "run":
    lines += ["", f"### Machine unlearning ({u['setting']})", "",
              f"Each target forgets {u['forgotten_per_target']} random members. Loss-threshold "
              "AUC of the forgotten examples against never-seen ones (50 = they look like "
              "non-members) and of the retained members for contrast; accuracy in percent; "
              "seconds of unlearning per model and speed-up over retraining from scratch.", "",
              "| method | AUC forgotten vs unseen | AUC retained vs unseen | acc forgotten | "
              "acc retained | test acc | s/model | speed-up vs retrain |",
              "|---|---|---|---|---|---|---|---|"]
    for k, m in u["methods"].items():
      sec = _f(m["seconds_per_model"], 1)
      if k == "sisa":
        sec += f" (fit {_f(m['fit_seconds'], 1)})"
      lines.append(f"| {UNLEARN_NAMES.get(k, k)} | {_f(m['auc_forgotten'])} | "
                   f"{_f(m['auc_retained'])} | {_f(m['acc_forgotten'])} | "
                   f"{_f(m['acc_retained'])} | {_f(m['test_acc'])} | {sec} | "
                   f"{_f(m['speedup_vs_retrain'], 1)}{'x' if m['speedup_vs_retrain'] else ''} |")
    lf = u.get("lira_forgotten")
    if lf:
      lines += ["", f"LiRA on the forgotten examples ({u['lira_forgotten_per_target']} per LiRA "
                "model) against never-seen ones, TPR@0.1%FPR (AUC), mean over every LiRA model "
                "as target: the adaptive attacker's shadows forgot their own random members by "
                "the same method (counted OUT), the unaware one's are the `none` row's models.",
                "", "| method | LiRA adaptive | LiRA unaware |", "|---|---|---|"]
      for k, m in lf.items():
        lines.append(f"| {UNLEARN_NAMES.get(k, k)} | {_f(m['aware']['tpr_at_0.1%'])} "
                     f"({_f(m['aware']['auc'], 1)}) | {_f(m['unaware']['tpr_at_0.1%'])} "
                     f"({_f(m['unaware']['auc'], 1)}) |")
  return lines


def defense_findings(res: dict) -> list[str]:
  """Claims about the extra defenses, each checked on this run."""
  d, out = res.get("defenses") or {}, []
  none = res["rows"].get("none", {})
  if none.get("status") != "run":
    return out
  def say(claim, holds, detail):
    out.append(f"- {claim}: **{'holds' if holds else 'does not hold'}** ({detail}).")
  for row in ("curriculum", "augmentation", "ensemble", "ensemble_bagging"):
    e = d.get(row, {})
    if e.get("status") != "run":
      continue
    say(f"{DEFENSE_NAMES[row].capitalize()} lowers the loss-threshold AUC",
        e["auc"] < none["auc"], f"AUC {_f(none['auc'])} -> {_f(e['auc'])}, test acc "
        f"{_f(none['test_acc'])} -> {_f(e['test_acc'])}")
    if "lira" in e and "lira_unaware" in e:
      a, un = e["lira"], e["lira_unaware"]
      say(f"{DEFENSE_NAMES[row].capitalize()}: the adaptive LiRA attacker does at least as "
          "well as the unaware one", a["tpr_at_0.1%"] >= un["tpr_at_0.1%"],
          f"TPR@0.1%FPR adaptive {_f(a['tpr_at_0.1%'])} vs unaware {_f(un['tpr_at_0.1%'])}; "
          f"AUC {_f(a['auc'])} vs {_f(un['auc'])}")
  u = d.get("unlearning", {})
  if u.get("status") == "run":
    m = u["methods"]
    for k in ("retrain", "sisa"):
      say(f"After exact unlearning ({UNLEARN_NAMES[k]}) the forgotten examples look like "
          "non-members (loss-threshold AUC within 3 points of 50)",
          abs(m[k]["auc_forgotten"] - 50) <= 3, f"AUC {_f(m[k]['auc_forgotten'])}; before "
          f"unlearning {_f(m['none']['auc_forgotten'])}")
    for k in ("finetune", "gradient_ascent"):
      say(f"{UNLEARN_NAMES[k].capitalize()} hides the forgotten examples as well as retraining",
          m[k]["auc_forgotten"] <= m["retrain"]["auc_forgotten"] + 1,
          f"AUC {_f(m[k]['auc_forgotten'])} vs retraining {_f(m['retrain']['auc_forgotten'])}, "
          f"test acc {_f(m[k]['test_acc'])} vs {_f(m['retrain']['test_acc'])}, "
          f"{_f(m[k]['speedup_vs_retrain'], 1)}x faster")
  return out


def markdown(res: dict, fig_dir: str) -> str:
  ds = res["dataset"]
  lines = [f"# Defense table on {ds['name']} (Khalil et al. 2025 protocol)", "",
           f"Members: {ds['members']} training examples; non-members: {ds['nonmembers']} test "
           f"examples (unbalanced, as the study); {res['num_models']} model(s) per row, each a "
           "target of the global loss-threshold attack (AUC and advantage in percent, mean ± "
           "std over targets). LiRA: online, models on random halves of the same "
           f"{ds['members'] + ds['nonmembers']} examples, mean over every model as target. "
           "Paper columns: train / test / AUC / advantage.", ""]
  lines += table(res)
  notes = res["config"].get("paper", {}).get("notes") or ()
  if notes:
    lines += ["", "## How this run differs from the study", ""] + [f"- {n}" for n in notes]
  lines += defense_tables(res)
  lines += ["", "## The study's findings, checked here", ""] + findings(res)
  extra = defense_findings(res)
  if extra:
    lines += ["", "## Beyond the study: the extra defenses, checked here", ""] + extra
  a = res.get("analysis")
  if a:
    lines += ["", "## Vulnerable members and outlier scores (the `none` row, target 0)", ""]
    for alpha, v in a["vulnerable"].items():
      lines.append(f"- at {float(alpha) * 100:g}% FPR: {v['count']} vulnerable members "
                   f"({100 * v['fraction_of_members']:.2f}% of members), per class "
                   f"{v['per_class']}")
    if "lira_vulnerable_count" in a:
      lines.append(f"- LiRA (1% FPR, flagged in at least half of the IN targets): "
                   f"{a['lira_vulnerable_count']} examples")
    lines += outlier_tables(a)
    lines += ["", f"Figures in `{fig_dir}/`: histograms_by_epoch.png, tsne_features.png, "
              "tsne_logits.png, vulnerable_by_outlier_decile.png"
              + (", lira_vulnerable_by_outlier_decile.png" if "lira" in a["outliers"] else "")
              + (", gradcam_most_least_vulnerable.png" if "gradcam" in a else "") + "."]
  return "\n".join(lines) + "\n"
