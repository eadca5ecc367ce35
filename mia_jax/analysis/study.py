"""The vulnerability study of ONE trained target (Khalil et al. 2025, sections 5-6), as the paper
table runs it: its vulnerable members against chance, how they relate to outlier scores from
models that never saw them, LiRA's per-example leakage of them, t-SNE and Grad-CAM figures.

What one target can show: whether its flagged members outnumber what chance flags (precision
against the member base rate, an exact p-value), and whether its flagged members are outliers
more often than the non-members it flags as well (the control: the examples any threshold on
this target's outputs picks out without membership). What it cannot: which examples leak. An
example that is flagged is flagged once, as a member; nothing says it would not have been
flagged as a non-member. That takes many targets with the example IN for some and OUT for the
others (mia_jax.analysis.leakage, experiments/vulnerability.py).

Outlier scores never come from the target: in a model that trained on an example they read its
memorisation of it, the signal the attack detects. They come from `reference` models (in the
paper table, the LiRA models, each where the example is OUT; outliers.reference_model_scores)
and from pixels.

`analyse_target` returns a JSON-ready dict whose "markdown" holds its report section, and
writes its figures into `fig_dir`.
"""

import os

import flax.linen as nn
import numpy as np
from scipy import stats

from mia_jax import stats as mstats
from mia_jax.analysis import embeddings, gradcam, leakage, outliers, plots, vulnerability as vul

ALPHAS = (0.01, 0.005)


def _is_conv(model: nn.Module) -> bool:
  return "CNN" in type(model).__name__ or "Net" in type(model).__name__


def lira_inputs(model: nn.Module, state, x: np.ndarray, scores: np.ndarray, keep: np.ndarray,
                logits: np.ndarray) -> dict:
  """What analyse_target's `lira` takes from the LiRA models of the paper table: their LiRA
  scores [T, N], keep [T, N], logits [T, N, Q, C] and penultimate features [T, N, D] (each a
  reference for the examples it did not train on)."""
  feats = np.stack([embeddings.penultimate(model, embeddings.model_variables(state, m), x)[0]
                    for m in range(len(keep))])
  return {"scores": np.asarray(scores), "keep": np.asarray(keep, bool), "logits": logits,
          "features": feats}


def reference_outliers(features, logits, unseen, x, y) -> dict:
  """{score name: [N]} from reference models (features [R, N, D], logits [R, N, Q, C],
  unseen [R, N]) and pixels (x [N, ...])."""
  scores = outliers.reference_model_scores(features, y, unseen)
  scores.pop("num_models")
  scores.update(outliers.reference_difficulty(logits, y, unseen))
  scores["pixel_centroid_distance"] = outliers.centroid_distance(x.reshape(len(y), -1), y)
  return scores


def _top_share_test(flagged_a, flagged_b, top):
  """Share of top-decile examples among flagged_a vs flagged_b (bool [N]): Fisher exact."""
  a, b = int(np.sum(flagged_a & top)), int(np.sum(flagged_b & top))
  na, nb = int(flagged_a.sum()), int(flagged_b.sum())
  p = (float(stats.fisher_exact([[a, na - a], [b, nb - b]]).pvalue) if na and nb
       else float("nan"))
  ia = mstats.clopper_pearson(a, na) if na else (float("nan"),) * 2
  ib = mstats.clopper_pearson(b, nb) if nb else (float("nan"),) * 2
  return {"share": a / na if na else float("nan"), "interval": list(ia), "n": na,
          "control_share": b / nb if nb else float("nan"), "control_interval": list(ib),
          "control_n": nb, "p_value": p}


def single_target(flags: dict, is_member: np.ndarray, y: np.ndarray, scores: dict) -> dict:
  """The outlier relation of one target's flags ({alpha: bool [N]}) with scores {name: [N]}.

  For each alpha and score: the share of the class's top decile among the flagged members,
  against the flagged non-members (the control; Fisher exact) and against all members (the
  study's comparison; 10% by construction up to ties). Holm over every Fisher p-value.
  """
  tops = {k: vul.top_within(v, y, leakage.TOP) for k, v in scores.items()}
  out, pvals = {}, []
  for alpha, f in flags.items():
    out[alpha] = {}
    for k, top in tops.items():
      t = _top_share_test(f & is_member, f & ~is_member, top)
      t["members_share"] = float(np.mean(top[is_member]))
      out[alpha][k] = t
      pvals.append((alpha, k, t["p_value"]))
  ok = [(a, k, p) for a, k, p in pvals if np.isfinite(p)]
  for (a, k, _), q in zip(ok, mstats.holm([p for *_, p in ok]) if ok else []):
    out[a][k]["p_holm"] = float(q)
  return out


def analyse_target(model: nn.Module, variables: dict, x: np.ndarray, y: np.ndarray,
                   is_member: np.ndarray, phi: np.ndarray, fig_dir: str, *,
                   lira: dict | None = None, tsne_points: int = 2000, tsne_iter: int = 1000,
                   do_gradcam: bool = True, seed: int = 0, log=print) -> dict:
  """Analyses one target model (module docstring).

  Args:
    model, variables: the target (one model's variables).
    x, y: the audited examples [N, ...] and labels [N].
    is_member: bool [N], the target's members.
    phi: [N] the target's attack score (the study's: the scaled logit; higher = member).
    fig_dir: folder for the PNG figures.
    lira: optional lira_inputs(...) of LiRA models on the same N examples (not the target):
      their features are the outlier scores' reference (each where the example is OUT), and
      their per-example leakage is compared between the target's vulnerable and other members.
    tsne_points: examples drawn for the t-SNE map (every flagged member included).
    tsne_iter: t-SNE iterations (at least 250).
    do_gradcam: Grad-CAM figure when the model is convolutional.
  """
  y, is_member, phi = np.asarray(y), np.asarray(is_member, bool), np.asarray(phi, np.float64)
  out: dict = {"alphas": list(ALPHAS)}
  out["vulnerable"], flags = _vulnerable(phi, is_member, y)
  v1 = out["vulnerable"][str(ALPHAS[0])]
  log(f"vulnerable members at {ALPHAS[0]:.0%} FPR: {v1['count']} (chance "
      f"{v1['chance_members']:.1f}, precision {v1['precision']:.3f} vs base rate "
      f"{v1['base_rate']:.3f}, p {v1['p_value']:.2g})")
  if lira is not None:
    out.update(_against_lira_models(lira, flags, is_member, x, y))
    _tsne_figure(lira["features"][0], y, flags[str(ALPHAS[0])] & is_member, fig_dir,
                 tsne_points, tsne_iter, seed)
    out["figures"] = ["tsne_reference_features.png"]
  if do_gradcam and _is_conv(model) and x.ndim == 4:
    out["gradcam"] = _gradcam_figure(model, variables, x, y, is_member, phi, fig_dir)
    out.setdefault("figures", []).append("gradcam_most_least_vulnerable.png")
  out["markdown"] = markdown_lines(out)
  return out


def _vulnerable(phi, is_member, y) -> tuple[dict, dict]:
  """Per alpha of ALPHAS: the members above the threshold of alpha FPR (count, precision
  against chance, per class) and the flags [N] of every example above it."""
  summary, flags = {}, {}
  for alpha in ALPHAS:
    v, t = vul.vulnerable_members(phi, is_member, alpha)
    flags[str(alpha)] = phi > t
    prec = vul.flag_precision(v.sum(), np.sum((phi > t) & ~is_member), is_member.sum(),
                              (~is_member).sum(), alpha)
    summary[str(alpha)] = {
        **prec, "count": int(v.sum()), "threshold": t,
        "fraction_of_members": float(v.sum() / is_member.sum()),
        "per_class": np.bincount(y[v], minlength=int(y.max()) + 1).tolist()}
  return summary, flags


def _against_lira_models(lira, flags, is_member, x, y) -> dict:
  """Outlier scores from the LiRA models (each where the example is OUT) and pixels against
  the target's flags, and the LiRA leakage of its vulnerable members against the others."""
  unseen = ~lira["keep"]
  scores = reference_outliers(lira["features"], lira["logits"], unseen, x, y)
  leak = vul.example_leakage(vul.flag_matrix(lira["scores"], lira["keep"], ALPHAS[0],
                                             leave_one_out=True), lira["keep"])
  mem = np.flatnonzero(is_member)
  return {"outlier_reference": (f"{len(unseen)} LiRA models, each where the example is OUT "
                                f"(on average {unseen.sum(0).mean():.1f} per example), and "
                                "pixels"),
          "single_target": single_target(flags, is_member, y, scores),
          "lira_leakage_of_vulnerable": {
              "alpha": ALPHAS[0], "targets": int(len(lira["keep"])),
              **vul.compare_groups(leak["leakage"][mem], flags[str(ALPHAS[0])][mem])}}


def _gradcam_figure(model, variables, x, y, is_member, phi, fig_dir) -> dict:
  """Grad-CAM of the 8 most and 8 least vulnerable members; their indices."""
  mem = np.flatnonzero(is_member)
  order = mem[np.argsort(-phi[mem])]
  most, least = order[:8], order[::-1][:8]
  rows = []
  for title, idx in (("most vulnerable", most), ("least vulnerable", least)):
    cams = gradcam.gradcam(model, variables, x[idx], y[idx])
    rows.append((title, x[idx], cams, [f"y={y[i]} phi={phi[i]:.1f}" for i in idx]))
  plots.gradcam_grid(rows, os.path.join(fig_dir, "gradcam_most_least_vulnerable.png"))
  return {"most": most.tolist(), "least": least.tolist()}


def _tsne_figure(feats, y, marked, fig_dir, points, max_iter, seed):
  rng = np.random.default_rng(seed)
  on = np.flatnonzero(marked)
  rest = np.flatnonzero(~marked)
  pick = np.concatenate([on, rng.choice(rest, min(len(rest), max(points - len(on), 0)),
                                        replace=False)])
  pts = embeddings.tsne(feats[pick], seed=seed, max_iter=max_iter)
  plots.tsne_scatter(pts, y[pick], marked[pick],
                     os.path.join(fig_dir, "tsne_reference_features.png"),
                     "t-SNE of a LiRA model's penultimate features (not the target)",
                     marked="target's vulnerable members, 1% FPR")


def _pc(v, d=2):
  return "nan" if not np.isfinite(v) else f"{100 * v:.{d}f}"


def markdown_lines(a: dict) -> list[str]:
  """The paper report's section on one target's analysis (markdown lines)."""
  lines = ["| FPR | vulnerable members | chance (no leak) | lift | precision (%) [95%] | "
           "member base rate (%) | exact p (more than chance) |", "|---|---|---|---|---|---|---|"]
  for alpha, v in a["vulnerable"].items():
    iv = v["precision_interval"]
    lines.append(f"| {float(alpha) * 100:g}% | {v['count']} | {v['chance_members']:.1f} | "
                 f"{v['lift']:.2f} | {_pc(v['precision'])} [{_pc(iv[0])}, {_pc(iv[1])}] | "
                 f"{_pc(v['base_rate'])} | {v['p_value']:.2g} |")
  lines += ["", "Chance: a threshold set on non-members flags n_in (k + 1) / (n_out + 1) "
            "members with no leak at all (k = floor(alpha n_out)), and the precision of the "
            "flagged set is then the member base rate on average. Precision interval: "
            "Clopper-Pearson over the flagged examples."]
  st = a.get("single_target")
  if st:
    lines += ["", f"Outlier scores from {a['outlier_reference']}. Share of the class's top "
              "decile among the target's flagged members, against the flagged non-members "
              "(the control) and all members (10% by construction); Fisher exact, Holm over "
              "this table:", "",
              "| FPR | outlier score | flagged members in top decile (%) [95%] | flagged "
              "non-members in top decile (%) [95%] | all members (%) | Holm p |",
              "|---|---|---|---|---|---|"]
    for alpha, by in st.items():
      for k, t in by.items():
        lines.append(
            f"| {float(alpha) * 100:g}% | {k} | {_pc(t['share'], 1)} "
            f"[{_pc(t['interval'][0], 1)}, {_pc(t['interval'][1], 1)}] of {t['n']} | "
            f"{_pc(t['control_share'], 1)} [{_pc(t['control_interval'][0], 1)}, "
            f"{_pc(t['control_interval'][1], 1)}] of {t['control_n']} | "
            f"{_pc(t['members_share'], 1)} | {t.get('p_holm', float('nan')):.2g} |")
  lv = a.get("lira_leakage_of_vulnerable")
  if lv:
    lines += ["", f"LiRA's per-example leakage (share of the {lv['targets']} LiRA targets that "
              "flag the example when IN minus when OUT, 1% FPR) of this target's vulnerable "
              f"members: mean {_pc(lv['mean_group'])} pp vs {_pc(lv['mean_rest'])} pp for its "
              f"other members (Cliff's delta {lv['cliffs_delta']:.3f}, Mann-Whitney p "
              f"{lv['p_value']:.2g}; {lv['n_group']} vs {lv['n_rest']} members)."]
  lines += ["", "What one target cannot show: which examples leak (an example flagged as a "
            "member might have been flagged as a non-member too; that needs targets with the "
            "example IN and others with it OUT: experiments/vulnerability.py and "
            "experiments/results/vulnerability_*)."]
  if a.get("figures"):
    lines += ["", "Figures: " + ", ".join(a["figures"]) + "."]
  return lines
