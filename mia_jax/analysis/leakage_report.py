"""The report (markdown) of mia_jax.analysis.leakage.study, as the analysis stage
(mia_jax.analysis.stage; experiments/vulnerability.py) writes it: the verdicts on the study's claims, flagged vs chance, per-example leakage, the
effects of each outlier score pooled and within each class, and what the analysis cannot show.
"""

from typing import Mapping

import numpy as np

from mia_jax.analysis.leakage import CLAIMS, SIGNIFICANCE


def _pct(v, d=2):
  return "nan" if v is None or not np.isfinite(v) else f"{100 * v:.{d}f}"


def _ci(iv, d=2):
  return f"[{_pct(iv[0], d)}, {_pct(iv[1], d)}]"


def _p(v):
  return "nan" if v is None or not np.isfinite(v) else (f"{v:.2g}" if v >= 1e-3 else f"{v:.1e}")


def verdict_lines(res: dict, names: Mapping[str, str] | None = None) -> list[str]:
  """The verdict table of every attack and alpha (markdown lines)."""
  names = names or {}
  lines = ["| attack, FPR | claim: the leaking examples are ... | verdict | best score | "
           "within-class rho [95%] | top decile minus rest, leakage (pp) [95%] | share of "
           "excess flags on the top decile (%) [95%] | mostly? |", "|---" * 8 + "|"]
  for attack, by_alpha in res["verdicts"].items():
    for alpha, claims in by_alpha.items():
      for claim, text, _ in CLAIMS:
        if claim not in claims:
          continue
        v = claims[claim]
        sh = v["excess_share"]
        lines.append(
            f"| {attack}, {float(alpha) * 100:g}% | {text} | **{v['verdict']}**"
            f"{' (' + v['strength'] + ')' if v['strength'] else ''} | "
            f"{names.get(v['score'], v['score'])} | {v['rho']:.3f} "
            f"[{v['rho_interval'][0]:.3f}, {v['rho_interval'][1]:.3f}], Holm p "
            f"{_p(v['rho_p_holm'])} | {_pct(v['top_decile_difference'])} "
            f"{_ci(v['top_decile_interval'])}, Holm p {_p(v['top_decile_p_holm'])} | "
            f"{_pct(sh['share'], 1)} {_ci(sh['interval'], 1)} | {v['mostly']} |")
  return lines


def summary_lines(res: dict) -> list[str]:
  """A few plain sentences: flagged vs chance and the verdicts, per attack and FPR."""
  lines = []
  for attack, by_alpha in res["attacks"].items():
    for alpha, r in by_alpha.items():
      p = r["precision"]
      fm, pr = p["flagged_members"], p["precision"]
      at_chance = p.get("p_holm", 1) > SIGNIFICANCE
      head = (f"- **{attack}, {float(alpha) * 100:g}% FPR**: a target flags {fm['mean']:.1f} "
              f"members on average, where chance flags {p['chance_members']:.1f} (precision "
              f"{_pct(pr['mean'], 1)}% {_ci(pr['interval'], 1)} against the "
              f"{_pct(p['base_rate'], 1)}% member base rate)")
      if at_chance:
        head += ": **no more members than chance**"
      v = res["verdicts"][attack][alpha]
      sup = [f"{c} (rho {v[c]['rho']:.2f})" for c, _, _ in CLAIMS
             if c in v and v[c]["verdict"] == "supported"]
      con = [c for c, _, _ in CLAIMS if c in v and v[c]["verdict"] == "contradicted"]
      no = [c for c, _, _ in CLAIMS if c in v and v[c]["verdict"] == "not shown"]
      most = [f"{c} ({_pct(v[c]['excess_share']['share'], 0)}%)" for c, _, _ in CLAIMS
              if c in v and v[c]["mostly"] == "yes"]
      any_top = r["any_top_excess_share"]
      text = (head + f"; {r['leakage']['significant_examples']} examples leak significantly "
              "(Holm over examples). "
              "Supported: " + (", ".join(sup) or "none") + "."
              + (" Contradicted: " + ", ".join(con) + "." if con else "")
              + (" Not shown: " + ", ".join(no) + "." if no else "")
              + (" Over half of the excess flags on one score's top decile (10% of the "
                 "examples): " + (", ".join(most) or "none") + ". On the top decile of any "
                 f"score ({_pct(any_top['examples_share'], 0)}% of the examples): "
                 f"{_pct(any_top['share'], 1)}% {_ci(any_top['interval'], 1)} of the excess."
                 if np.isfinite(any_top["share"]) else " No excess of flags to share out."))
      lines.append(text)
  return lines


def _head(res: dict, names: Mapping[str, str]) -> list[str]:
  """Title, the command, the run, the outlier scores and the statistics in words."""
  run = res["run"]
  return [f"# Which examples leak, and are they outliers? ({run['dataset']}, "
          f"{run['models']} models)", "",
          "```bash", run.get("command") or ("python -m experiments.vulnerability --run="
                                            + run["workdir"] + " --workdir=WORKDIR --out=OUT"),
          "```", "",
          f"Run: `{run['workdir']}`, {run['models']} models, each trained on a random half of "
          f"a {run['pool']}-example pool; {res['examples']} examples analysed "
          f"({run['canaries_excluded']} planted canaries left out), {run['queries']} query "
          "view(s) per example. Every model is the target in turn, the other "
          f"{run['models'] - 1} its shadows. A target flags an example at FPR alpha when its "
          "score exceeds the threshold that lets through floor(alpha x its non-members).",
          "",
          f"Outlier scores come from {run['reference_models']['count']} reference models "
          f"trained on {run['reference_models']['trained_on']}, so none of them saw any pool "
          "example (pool accuracy "
          + ", ".join(f"{100 * a:.1f}%" for a in run["reference_models"]["pool_accuracy"])
          + "), and from pixels: "
          + "; ".join(f"`{k}` {names.get(k, k)}" for k in res["outlier_scores"]) + ". An "
          "example's outliers are its class's top decile of a score.", "",
          f"Statistics: Holm's adjustment in two families: {res['tests']['pooled']} pooled "
          "p-values (flagged vs chance; rho and the top decile's leakage difference pooled "
          "over classes, for every score, attack and FPR: the verdicts read these) and "
          f"{res['tests']['within_class']} within-class ones. Effects of outlier scores: "
          f"permutation tests within class ({run['permutations']} permutations, so no p-value "
          f"is below {1 / (run['permutations'] + 1):.1e}). Leakage of an example = share of "
          "the targets that trained on it which flag it (IN rate) minus share of the others "
          "which flag it (OUT rate, the control). Intervals: over targets for per-target "
          "figures, over examples for the effects of outlier scores (their question is about "
          "examples).", ""]


def _flagged_table(res: dict) -> list[str]:
  lines = ["## Flagged members against chance", "",
           "| attack | FPR | flagged members per target | chance (no leak) | lift | precision "
           "(%) | member base rate = chance precision (%) | targets above chance (exact "
           "p <= 0.05) | Holm p |", "|---" * 9 + "|"]
  for attack, by_alpha in res["attacks"].items():
    for alpha, r in by_alpha.items():
      p = r["precision"]
      fm = p["flagged_members"]
      lines.append(
          f"| {attack} | {float(alpha) * 100:g}% | {fm['mean']:.1f} [{fm['interval'][0]:.1f}, "
          f"{fm['interval'][1]:.1f}] | {p['chance_members']:.1f} | {p['lift']['mean']:.2f} "
          f"[{p['lift']['interval'][0]:.2f}, {p['lift']['interval'][1]:.2f}] | "
          f"{_pct(p['precision']['mean'])} {_ci(p['precision']['interval'])} | "
          f"{_pct(p['base_rate'])} | "
          f"{p['targets_above_chance']} of {p['targets']} | {_p(p.get('p_holm'))} |")
  return lines + ["", "Intervals over targets (t). Chance: with no leak a target flags "
                  "n_in (k + 1) / (n_out + 1) members, k = floor(alpha n_out).", ""]


def _leakage_tables(res: dict) -> list[str]:
  """Per-example leakage per attack and FPR, and the most leaking examples of the first."""
  first = next(iter(res["attacks"]))
  a0 = next(iter(res["attacks"][first]))
  cls = res["run"]["class_names"]
  lines = ["## Per-example leakage", "",
           "| attack | FPR | mean leakage (pp) | examples leaking (Holm p <= 0.05 over examples) |"
           " of them in the top decile of ... |", "|---|---|---|---|---|"]
  for attack, by_alpha in res["attacks"].items():
    for alpha, r in by_alpha.items():
      lk = r["leakage"]
      tops = ", ".join(f"{k} {v['significant_in_top']['count']}" for k, v in r["scores"].items())
      lines.append(f"| {attack} | {float(alpha) * 100:g}% | {_pct(lk['mean'])} | "
                   f"{lk['significant_examples']} | {tops} |")
  lines += ["", f"The 10 most leaking examples ({first}, {float(a0) * 100:g}% FPR); outlier "
            "deciles 0 (typical) to 9 (the class's top decile):", "",
            "| pool index | class | flagged IN | flagged OUT | leakage (pp) [95% over targets] "
            "| Holm p | outlier deciles |", "|---|---|---|---|---|---|---|"]
  for t in res["attacks"][first][a0]["leakage"]["top_examples"][:10]:
    lines.append(f"| {t['index']} | {cls[t['label']]} | "
                 f"{round(t['rate_in'] * t['n_in'])}/{t['n_in']} | "
                 f"{round(t['rate_out'] * t['n_out'])}/{t['n_out']} | {_pct(t['leakage'], 1)} "
                 f"{_ci(t['interval'], 1)} | {_p(t['p_holm'])} | "
                 + ", ".join(f"{k} {v}" for k, v in t["outlier_deciles"].items()) + " |")
  return lines


def _score_row(name: str, v: dict) -> str:
  """One outlier score's pooled effects: rho, top decile minus rest, rates, classes, share."""
  dec = v["deciles"]
  top_in, top_out = dec[9]["rate_in"]["mean"], dec[9]["rate_out"]["mean"]
  rest_in = np.mean([x["rate_in"]["mean"] for x in dec[:9]])
  rest_out = np.mean([x["rate_out"]["mean"] for x in dec[:9]])
  pos = sum(c["rho"] > 0 and c.get("rho_p_holm", 1) <= SIGNIFICANCE
            for c in v["per_class"].values())
  sh = v["excess_share"]
  return (f"| {name} | {v['rho']:.3f} [{v['rho_interval'][0]:.3f}, "
          f"{v['rho_interval'][1]:.3f}] | {_p(v.get('rho_p_holm'))} | "
          f"{_pct(v['difference'])} {_ci(v['interval'])} | {_p(v.get('p_holm'))} | "
          f"{_pct(top_in)} / {_pct(top_out)} | {_pct(rest_in)} / {_pct(rest_out)} | "
          f"{pos} of {len(v['per_class'])} | {_pct(sh['share'], 1)} {_ci(sh['interval'], 1)} |")


def _score_tables(res: dict, names: Mapping[str, str]) -> list[str]:
  """Each outlier score's effects per attack and FPR, and the first one's per class."""
  lines = []
  for attack, by_alpha in res["attacks"].items():
    for alpha, r in by_alpha.items():
      lines += ["", f"## {attack} at {float(alpha) * 100:g}% FPR: each outlier score", "",
                "| score | rho pooled [95%] | Holm p | top decile minus rest (pp) [95%] | Holm p "
                "| top decile IN / OUT rate (%) | rest IN / OUT rate (%) | classes with rho > 0 "
                "(Holm p <= 0.05) | excess share on top decile (%) |", "|---" * 9 + "|"]
      lines += [_score_row(names.get(k, k), v) for k, v in r["scores"].items()]
  first = next(iter(res["attacks"]))
  a0 = next(iter(res["attacks"][first]))
  r = res["attacks"][first][a0]
  keys, cls = list(r["scores"]), res["run"]["class_names"]
  lines += ["", f"## Within each class ({first}, {float(a0) * 100:g}% FPR): rho, * where Holm "
            "p <= 0.05", "", "| class | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1)
            + "|"]
  for c in (str(c) for c in res["classes"]):
    row = [f"{r['scores'][k]['per_class'][c]['rho']:.3f}"
           + ("*" if r["scores"][k]["per_class"][c].get("rho_p_holm", 1) <= SIGNIFICANCE else "")
           for k in keys]
    lines.append(f"| {cls[int(c)]} | " + " | ".join(row) + " |")
  return lines


def _null_section(null: dict) -> list[str]:
  rows = null["rows"]
  bad = {r["draw"] for r in rows if r["supported"] or r["min_p_holm"] <= SIGNIFICANCE
         or r["precision_p_holm"] <= SIGNIFICANCE}
  lines = ["", "## Null control: the same scores against keep matrices drawn independently "
           "of the training", "",
           f"The real {null['attack']} scores, analysed as if the members were those of "
           f"{null['draws']} new random keep matrices ({null['permutations']} permutations "
           "per test): nothing can leak with respect to them, so each draw should find the "
           "precision at the base rate and no claim, however loud the outliers' scores are, "
           "in all but about 5% of draws (Holm's family-wise level). Draws with any "
           f"significant result: {len(bad)} of {null['draws']}.", "",
           "| draw | FPR | precision (%) [95%] | base rate (%) | Holm p | examples leaking | "
           "claims supported | smallest pooled Holm p of an outlier effect |",
           "|---" * 8 + "|"]
  for r in rows:
    lines.append(f"| {r['draw']} | {float(r['alpha']) * 100:g}% | "
                 f"{_pct(r['precision']['mean'])} {_ci(r['precision']['interval'])} | "
                 f"{_pct(r['base_rate'])} | {_p(r['precision_p_holm'])} | "
                 f"{r['significant_examples']} | {', '.join(r['supported']) or 'none'} | "
                 + (f"{_p(r['min_p_holm'])} |" if np.isfinite(r["min_p_holm"])
                    else "not tested: too few flags |"))
  return lines


_LIMITS = [
    "- Leakage here is what this attack, at this FPR, with these shadows detects; an example "
    "not flagged may still leak to a stronger attack.",
    "- Outlier scores come from models of the same architecture trained on other data of the "
    "same distribution, and from pixels; they measure how atypical an example is for such a "
    "model, not for the target.",
    "- Targets share the pool and their shadows, so intervals over targets describe this pool, "
    "and examples are the unit of the outlier effects.",
    "- The t-SNE map is a picture, not a test: the `border` score is the test of the border "
    "claim, in the features themselves."]
_VERDICT_RULE = (
    "Verdicts: **supported** where one score of the claim has a positive within-class rho and "
    "a positive top-decile difference, both Holm p <= 0.05; **contradicted** where both are "
    "significantly negative; otherwise **not shown**. Strength from |rho|: weak < 0.1 <= "
    "moderate < 0.3 <= strong. \"mostly\": the top deciles of the score (10% of the examples) "
    "take over half of the excess flags (member flags beyond each example's own OUT rate), the "
    "whole interval above 50%.")


def markdown(res: dict, fig_dir: str, names: Mapping[str, str] | None = None) -> str:
  """The analysis' report (experiments/vulnerability.py's OUT.md, a run's
  analysis/analysis.md); figures named under fig_dir."""
  names = names or {}
  lines = _head(res, names) + ["## In short", ""] + summary_lines(res)
  if res.get("notes"):
    lines += ["", "## Reading", ""] + [f"- {n}" for n in res["notes"]]
  lines += ["", "## The study's claims, checked", ""] + verdict_lines(res, names)
  lines += ["", _VERDICT_RULE, ""] + _flagged_table(res) + _leakage_tables(res)
  lines += _score_tables(res, names)
  if res.get("null_control"):
    lines += _null_section(res["null_control"])
  lines += ["", "## What this can and cannot show", ""] + _LIMITS
  lines += ["", f"Figures in `{fig_dir}/`: " + ", ".join(res.get("figures", [])) + "."]
  return "\n".join(lines) + "\n"
