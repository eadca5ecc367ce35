"""The vulnerability study of one trained model (Khalil et al. 2025, sections 5-6), composed
from the analysis modules: vulnerable members, outlier scores of penultimate features and
their relation, t-SNE maps, Grad-CAM of the most and least vulnerable members.

`analyse_target` returns a JSON-ready dict and writes its figures into `fig_dir`.
"""

import os

import flax.linen as nn
import numpy as np

from mia_jax.analysis import embeddings, gradcam, outliers, plots, vulnerability

ALPHAS = (0.01, 0.005)


def _is_conv(model: nn.Module) -> bool:
  return "CNN" in type(model).__name__ or "Net" in type(model).__name__


def analyse_target(model: nn.Module, variables: dict, x: np.ndarray, y: np.ndarray,
                   is_member: np.ndarray, phi: np.ndarray, fig_dir: str, *,
                   lira: dict | None = None, tsne_points: int = 2000, tsne_iter: int = 1000,
                   do_gradcam: bool = True,
                   seed: int = 0, log=print) -> dict:
  """Analyses one target model.

  Args:
    model, variables: the target (one model's variables).
    x, y: the audited examples [N, ...] and labels [N].
    is_member: bool [N], the target's members.
    phi: [N] the target's scaled logits (the attack score, higher = member).
    fig_dir: folder for the PNG figures.
    lira: optional vulnerability.across_targets(...) of LiRA scores on the same N examples.
    tsne_points: members drawn for the t-SNE maps (all vulnerable members included).
    tsne_iter: t-SNE iterations (at least 250).
    do_gradcam: Grad-CAM figure when the model is convolutional.
  """
  out: dict = {"vulnerable": {}, "outliers": {}}
  vuln = {}
  for alpha in ALPHAS:
    v, t = vulnerability.vulnerable_members(phi, is_member, alpha)
    vuln[alpha] = v
    out["vulnerable"][str(alpha)] = {"count": int(v.sum()), "threshold": t,
                                     "fraction_of_members": float(v.sum() / is_member.sum()),
                                     "per_class": np.bincount(y[v], minlength=int(y.max()) + 1
                                                              ).tolist()}
  log(f"vulnerable members at 1% / 0.5% FPR: {int(vuln[0.01].sum())} / {int(vuln[0.005].sum())}")
  feats, logits = embeddings.penultimate(model, variables, x)
  scores = outliers.outlier_scores(feats, y, reference=is_member)
  mem = np.flatnonzero(is_member)
  member_scores = {k: s[mem] for k, s in scores.items()}
  for alpha in ALPHAS:
    out["outliers"][f"threshold_{alpha}"] = vulnerability.relate(
        member_scores, vuln[alpha][mem], phi[mem])
  if lira is not None:
    lira_score = lira["mean_in_score"]
    lira_vuln = lira["flagged_fraction"]["0.01"] >= 0.5
    ok = np.isfinite(lira_score)
    out["lira_vulnerable_count"] = int(np.sum(lira_vuln & ok))
    out["outliers"]["lira"] = vulnerability.relate(
        {k: s[ok] for k, s in scores.items()}, lira_vuln[ok], lira_score[ok])
    out["lira_vs_threshold_vulnerable"] = vulnerability.compare_groups(lira_score[mem],
                                                                       vuln[0.01][mem])
  fractions = {k: v["vulnerable_fraction_by_decile"]
               for k, v in out["outliers"]["threshold_0.01"].items()}
  plots.decile_bars(fractions, os.path.join(fig_dir, "vulnerable_by_outlier_decile.png"),
                    "members above the 1%-FPR loss threshold, by outlier decile")
  if lira is not None:
    plots.decile_bars({k: v["vulnerable_fraction_by_decile"]
                       for k, v in out["outliers"]["lira"].items()},
                      os.path.join(fig_dir, "lira_vulnerable_by_outlier_decile.png"),
                      "examples LiRA flags at 1% FPR (in >= half their IN targets), by decile")
  _tsne_figures(feats, logits, y, vuln[0.01], mem, fig_dir, tsne_points, tsne_iter, seed)
  if do_gradcam and _is_conv(model) and x.ndim == 4:
    order = mem[np.argsort(-phi[mem])]
    most, least = order[:8], order[::-1][:8]
    rows = []
    for title, idx in (("most vulnerable", most), ("least vulnerable", least)):
      cams = gradcam.gradcam(model, variables, x[idx], y[idx])
      rows.append((title, x[idx], cams, [f"y={y[i]} phi={phi[i]:.1f}" for i in idx]))
    plots.gradcam_grid(rows, os.path.join(fig_dir, "gradcam_most_least_vulnerable.png"))
    out["gradcam"] = {"most": most.tolist(), "least": least.tolist()}
  return out


def _tsne_figures(feats, logits, y, vulnerable, members, fig_dir, points, max_iter, seed):
  rng = np.random.default_rng(seed)
  vul = members[vulnerable[members]]
  rest = np.setdiff1d(members, vul)
  pick = np.concatenate([vul, rng.choice(rest, min(len(rest), max(points - len(vul), 0)),
                                         replace=False)])
  for name, arr in (("features", feats), ("logits", logits)):
    pts = embeddings.tsne(arr[pick], seed=seed, max_iter=max_iter)
    plots.tsne_scatter(pts, y[pick], vulnerable[pick], os.path.join(fig_dir, f"tsne_{name}.png"),
                       f"t-SNE of penultimate {name} (members)" if name == "features"
                       else "t-SNE of logits (members)")
