"""The audit's figures in workdir/figures/ (matplotlib, Agg backend: no display needed).

  roc.png             log-log ROC of every attack, drawn only where the non-members resolve
                      the FPR (from 1 / num_nonmembers up; the floor is marked and the region
                      below it shaded); thin lines: up to 8 targets, thick: the mean TPR over
                      targets; the legend gives each attack's mean AUC and its 95% interval
  score_hist.png      per attack, histograms of the scores of members and non-members of one
                      target (density over bins from the 0.5th to the 99.5th percentile of its
                      scores, the tails piled into the end bins), the x axis naming the score
                      and any transform drawn
  shadow_scaling.png  TPR at the headline FPR (0.1%, or 1% where 0.1% is not resolved) and AUC
                      of the shadow-based attacks against the number of shadow models, in
                      percent: each target's value and the mean over targets

Every attack keeps one colour and one line style in every figure: the line style names its
family (threshold attacks dotted, Shokri dash-dot, LiRA online solid, LiRA offline dashed,
RMIA dash-dot-dot, anything else densely dotted) and the colour, a shade of the family's hue,
the attack within it. Each figure is written to a temporary name and renamed, as report.py
does for its files.

Drawing cost is a decision here: every figure has fixed margins in inches (`_place`), so it is
drawn once when saved (no tight_layout, no bbox_inches="tight": each is a further full layout
and draw); a histogram is two filled step artists (np.histogram + Axes.stairs), not 40 bar
patches. The times lie in experiments/results/profile_default_audit.md.
"""

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from mia_jax import metrics, report

# family: (name prefixes, line style, shades of the family's hue)
_FAMILIES = {
    "threshold": (("loss", "confidence", "entropy", "modified_entropy"), ":",
                  ("#08306b", "#2f7fc1", "#17a2b8", "#7fb8e6")),
    "shokri": (("shokri",), "-.", ("#7b3294", "#c2a5cf")),
    "lira online": (("lira_online",), "-", ("#b2182b", "#f4737a", "#67000d")),
    "lira offline": (("lira_offline",), "--", ("#e66101", "#fdb863", "#8c3d00")),
    "rmia": (("rmia_",), (0, (6, 1.5, 1, 1.5, 1, 1.5)), ("#1b7837", "#7fbf7b", "#00441b")),
    "other": ((), (0, (1, 1)), ("#636363", "#e377c2", "#bcbd22", "#17becf", "#969696")),
}

# What each attack's score is (higher = member), for the histograms' x axes.
SCORE_LABELS = {
    "loss": "-cross-entropy",
    "confidence": "p(true label)",
    "entropy": "-entropy of the prediction",
    "modified_entropy": "-modified entropy (Song & Mittal)",
    "shokri": "attack model's log-odds of IN",
    "lira_online": "log-likelihood ratio, IN vs OUT Gaussians",
    "lira_online_fixed_var": "log-likelihood ratio, global sigmas",
    "lira_offline": "log Pr[Z <= phi], Z ~ OUT Gaussian",
    "lira_offline_fixed_var": "log Pr[Z <= phi], global OUT sigma",
    "lira_offline_logpdf": "-log N(phi; OUT Gaussian)",
    "rmia_online": "share of population z with LR(x, z) >= gamma",
    "rmia_offline": "share of population z with LR(x, z) >= gamma",
}


def family(name: str) -> str:
  """The attack family of `name` (the line style of its curves): the first whose name prefix
  it has (so "loss_calibrated" is a threshold attack, "lira_offline_x" LiRA offline)."""
  for fam, (prefixes, _, _) in _FAMILIES.items():
    if any(name.startswith(p) for p in prefixes):
      return fam
  return "other"


def styles(names: Sequence[str]) -> dict[str, dict]:
  """{name: {"color", "ls"}}: the line style of its family, a shade of the family's hue."""
  seen: dict[str, int] = {}
  out = {}
  for name in names:
    fam = family(name)
    _, ls, shades = _FAMILIES[fam]
    i = seen.get(fam, 0)
    seen[fam] = i + 1
    out[name] = {"color": shades[i % len(shades)], "ls": ls}
  return out


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> None:
  plt = _pyplot()
  report.atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
  plt.close(fig)


def _place(fig, *, left: float, right: float, bottom: float, top: float, wspace: float = 0.0,
           hspace: float = 0.0, rows: int = 1, cols: int = 1) -> None:
  """Fixed margins and gaps between panels, all in inches, on a grid of rows x cols axes."""
  width, height = fig.get_size_inches()
  panel_w = (width - left - right - (cols - 1) * wspace) / cols
  panel_h = (height - bottom - top - (rows - 1) * hspace) / rows
  fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                      top=1 - top / height, wspace=wspace / panel_w, hspace=hspace / panel_h)


def _auc_label(name: str, per_target, summary: Optional[Mapping]) -> str:
  if summary is not None:
    mean, ci = summary["auc"]["mean"], summary.get("auc_ci95")
  else:
    mean, ci = float(np.mean([metrics.auc(f, t) for f, t in per_target])), None
  return f"{name}  AUC {100 * mean:.1f}%" + (report.interval_text(ci, 1) if ci else "")


def roc(path: str, curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
        summaries: Optional[Mapping[str, Mapping]] = None, max_thin: int = 8) -> list[str]:
  """Log-log ROC; curves = {attack: [(fpr [G + 1], tpr [G + 1]) per target]}.

  Args:
    path: the PNG to write.
    curves: each attack's ROC per target (attacks.evaluate's curves).
    summaries: {attack: evaluate summary}, for the legend's mean AUC and interval and each
      target's number of non-members; without it the AUC is the curves' mean and the floor
      their smallest positive FPR.
    max_thin: how many targets' own curves to draw thin.

  Returns:
    The legend's labels, in order.

  Nothing is drawn below FPR 1 / num_nonmembers (the highest such floor over targets for the
  mean curve): no threshold there is supported by a non-member.
  """
  plt = _pyplot()
  if summaries is not None:
    floors = [1.0 / r["num_nonmembers"] for s in summaries.values() for r in s["per_target"]]
    n_mems = [r["num_members"] for s in summaries.values() for r in s["per_target"]]
  else:
    floors = [float(np.min(f[f > 0])) for pt in curves.values() for f, _ in pt]
    n_mems = [1e4]
  floor = max(floors)
  grid = np.logspace(np.log10(floor), 0, 300)
  fig, ax = plt.subplots(figsize=(10.5, 5.4))
  _place(fig, left=0.75, right=3.3, bottom=0.6, top=0.45)
  look = styles(list(curves))
  labels = []
  for name, per_target in curves.items():
    tprs = []
    for j, (fpr, tpr) in enumerate(per_target):
      if j < max_thin:
        keep = fpr >= floor * (1 - 1e-9)
        ax.plot(fpr[keep], tpr[keep], color=look[name]["color"], alpha=0.18, lw=0.7)
      tprs.append(np.interp(grid, fpr, tpr))
    label = _auc_label(name, per_target, None if summaries is None else summaries.get(name))
    labels.append(label)
    ax.plot(grid, np.mean(tprs, axis=0), lw=2, label=label, **look[name])
  ax.plot(grid, grid, color="0.4", lw=0.8, label="chance (TPR = FPR)")
  labels.append("chance (TPR = FPR)")
  lo_x = floor / 3
  ax.axvspan(lo_x, floor, color="0.88", zorder=0)
  ax.axvline(floor, color="0.3", lw=0.8, ls="--")
  ax.text(floor * 0.93, 0.98, f"FPR = 1/{round(1 / floor)} (1 / non-members): below it no "
          "non-member\nsupports a threshold (no data)", rotation=90, ha="right", va="top",
          fontsize=7, color="0.3", transform=ax.get_xaxis_transform())
  ax.set(xscale="log", yscale="log", xlim=(lo_x, 1), ylim=(min(0.5 / min(n_mems), floor), 1),
         xlabel="false positive rate (log scale)", ylabel="true positive rate (log scale)",
         title="Membership inference ROC (thick: mean over targets; thin: single targets)")
  ax.title.set_fontsize(10)
  ax.grid(alpha=0.25, which="both")
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
            title="attack, mean AUC [95% interval]", title_fontsize=7)
  _save(fig, path)
  return labels


def _display(s: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
  """Scores [N] as drawn, and the transform's name (None: as they are).

  Where the bulk sits in a sliver of the range (the loss of a model that fits its members is
  -1e-4 for most and -5 for a few) or the values span many decades (LiRA's likelihood
  ratios), a monotone transform spreads it: the distance to 0 on a log scale for scores <= 0,
  the logit for scores in [0, 1], a signed log otherwise. Higher stays more member-like.
  Infinite scores are drawn at the finite extremes.
  """
  finite = s[np.isfinite(s)]
  s = np.clip(s, finite.min(), finite.max()) if finite.size else np.zeros_like(s)
  lo, hi = np.percentile(s, [0.5, 99.5])
  q25, q75 = np.percentile(s, [25, 75])
  big = max(abs(lo), abs(hi))
  if not ((hi - lo > 20 * max(q75 - q25, 1e-12) and big > 1e-9) or big > 1e4):
    return s, None
  if s.max() <= 0:
    tiny = np.min(-s[s < 0], initial=1.0) / 10
    return -np.log10(np.maximum(-s, tiny)), "-log10(-s)"
  if s.min() >= 0 and s.max() <= 1:
    p = np.clip(s, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)), "logit(s) = log(s / (1 - s))"
  return np.sign(s) * np.log1p(np.abs(s)), "sign(s) log(1 + |s|)"


def score_histograms(path: str, scores: Mapping[str, np.ndarray], is_member: np.ndarray,
                     target: int, cols: int = 4) -> list[str]:
  """One panel per attack: scores [N] of members vs non-members of model `target`.

  Returns:
    Each panel's x-axis label (what the score is, and the transform drawn, if any).
  """
  plt = _pyplot()
  is_member = np.asarray(is_member, bool)
  rows = max(1, math.ceil(len(scores) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows + 0.5), squeeze=False)
  _place(fig, left=0.55, right=0.15, bottom=0.75, top=0.75, wspace=0.45, hspace=1.0,
         rows=rows, cols=cols)
  xlabels = []
  for i, (ax, (name, s)) in enumerate(zip(axes.ravel(), scores.items())):
    s, transform = _display(np.asarray(s, np.float64))
    xlabel = SCORE_LABELS.get(name, "attack score (higher = member)")
    if transform:
      xlabel = f"{xlabel}\n(drawn as {transform})"
    lo, hi = np.percentile(s, [0.5, 99.5])
    if not hi > lo:
      lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 41)
    clipped = np.clip(s, lo, hi)
    for group, color, label in ((~is_member, "#2f7fc1", "non-members"),
                                (is_member, "#d6604d", "members")):
      if group.any():
        density, _ = np.histogram(clipped[group], bins=bins, density=True)
        ax.stairs(density, bins, fill=True, alpha=0.55, color=color, label=label)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=7)
    if i % cols == 0:
      ax.set_ylabel("density", fontsize=7)
    ax.tick_params(labelsize=6)
    xlabels.append(xlabel)
  for ax in axes.ravel()[len(scores):]:
    ax.axis("off")
  axes.ravel()[0].legend(fontsize=7)
  fig.suptitle(f"Scores of target model {target}'s {int(is_member.sum())} members and "
               f"{int((~is_member).sum())} non-members (higher = more member-like; values "
               "beyond the 0.5th/99.5th percentiles piled into the end bins)", fontsize=9,
               y=1 - 0.2 / fig.get_size_inches()[1], va="top")
  _save(fig, path)
  return xlabels


def shadow_scaling(path: str, scaling: Mapping) -> str:
  """TPR at the headline FPR and AUC, in percent, against the number of shadows.

  Args:
    path: the PNG to write.
    scaling: scaling.shadow_scaling's dict.

  Returns:
    The FPR key the TPR panel shows ("0.001", or "0.01" where 0.1% is not resolved).
  """
  plt = _pyplot()
  points = [p for ps in scaling["attacks"].values() for p in ps if "auc" in p]
  key = report.headline_fpr(points)
  fig, (ax_tpr, ax_auc) = plt.subplots(1, 2, figsize=(13, 4.4))
  _place(fig, left=0.7, right=2.1, bottom=0.6, top=0.5, wspace=1.25)
  look = styles(list(scaling["attacks"]))
  for name, ps in scaling["attacks"].items():
    ps = [p for p in ps if "auc" in p]
    if not ps:
      continue
    x = np.array([p["num_shadows"] for p in ps], float)
    for ax, value in ((ax_tpr, lambda p: p["tpr_at_fpr"][key]), (ax_auc, lambda p: p["auc"])):
      ax.plot(x, [100 * value(p)["mean"] for p in ps], marker="o", ms=4, lw=1.8,
              label=name if ax is ax_tpr else None, **look[name])
      each = [value(p).get("per_target", []) for p in ps]       # one artist for all dots
      ax.scatter(np.repeat(x, [len(e) for e in each]),
                 100 * np.asarray([v for e in each for v in e], float), s=9, alpha=0.35,
                 color=look[name]["color"], linewidths=0)
  n_non = np.mean([p["num_nonmembers"] for p in points]) if points else 0
  tpr_label = f"TPR at {report.alpha_text(key)} FPR (%)"
  for ax, label in ((ax_tpr, tpr_label), (ax_auc, "AUC (%)")):
    ax.set_xscale("log", base=2)
    ax.set_xticks(scaling["sizes"], [str(k) for k in scaling["sizes"]])
    ax.minorticks_off()
    ax.set(xlabel="shadow models per example (K: K/2 IN, K/2 OUT)", ylabel=label)
    ax.grid(alpha=0.3)
  for ax, level in ((ax_auc, 50.0), (ax_tpr, 100 * float(key))):
    ax.axhline(level, color="0.4", lw=0.8)
    ax.text(scaling["sizes"][-1], level, "chance ", va="bottom", ha="right", fontsize=7,
            color="0.3")
  note = "" if key == "0.001" else f"; 0.1% FPR is not resolved by {n_non:.0f} non-members"
  fig.suptitle(f"Shadow scaling: line = mean over target(s) {scaling['targets']}, dots = each "
               f"target{note}", fontsize=9)
  fig.legend(loc="center left", bbox_to_anchor=(1 - 2.0 / 13, 0.5), fontsize=7, frameon=False)
  _save(fig, path)
  return key
