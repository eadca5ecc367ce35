"""The audit's figures in workdir/figures/ (matplotlib, Agg backend: no display needed).

  roc.png             log-log ROC of every attack (thin: up to 8 targets; thick: the mean TPR)
  score_hist.png      per attack, histograms of the scores of members and non-members of one
                      target (density, bins over the 0.5th to 99.5th percentile of its scores)
  shadow_scaling.png  TPR at 0.1% FPR (and AUC) of the shadow-based attacks against the number
                      of shadow models (scaling.shadow_scaling)

Each figure is written to a temporary name and renamed, as report.py does for its files.
"""

import math
from typing import Mapping, Sequence

import numpy as np

from mia_jax import report


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> None:
  plt = _pyplot()
  report.atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
  plt.close(fig)


def roc(path: str, curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
        max_thin: int = 8) -> None:
  """Log-log ROC; curves = {attack: [(fpr [G + 1], tpr [G + 1]) per target]}.

  Thin lines show the first `max_thin` targets; the thick line is the mean over all targets.
  """
  plt = _pyplot()
  grid = np.logspace(-5, 0, 400)
  fig, ax = plt.subplots(figsize=(5.5, 5))
  for i, (name, per_target) in enumerate(curves.items()):
    color = f"C{i % 10}"
    tprs = []
    for j, (fpr, tpr) in enumerate(per_target):
      if j < max_thin:
        ax.plot(fpr, tpr, color=color, alpha=0.15, lw=0.7)
      tprs.append(np.interp(grid, fpr, tpr))
    ax.plot(grid, np.mean(tprs, axis=0), color=color, lw=2, label=name,
            ls="-" if i < 10 else "--")
  ax.plot(grid, grid, "k:", lw=0.8, label="chance")
  ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1),
         xlabel="false positive rate", ylabel="true positive rate", title="Membership inference ROC")
  ax.legend(loc="lower right", fontsize=7)
  fig.tight_layout()
  _save(fig, path)


def score_histograms(path: str, scores: Mapping[str, np.ndarray], is_member: np.ndarray,
                     target: int, cols: int = 4) -> None:
  """One panel per attack: scores [N] of members vs non-members of model `target`."""
  plt = _pyplot()
  is_member = np.asarray(is_member, bool)
  rows = max(1, math.ceil(len(scores) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
  for ax, (name, s) in zip(axes.ravel(), scores.items()):
    s = np.asarray(s, np.float64)
    lo, hi = np.percentile(s, [0.5, 99.5])
    q25, q75 = np.percentile(s, [25, 75])
    if hi - lo > 20 * max(q75 - q25, 1e-12) and max(abs(lo), abs(hi)) > 10:
      # heavy tails (LiRA's likelihood ratios): a signed log scale keeps the bulk visible
      s = np.sign(s) * np.log1p(np.abs(s))
      lo, hi = np.percentile(s, [0.5, 99.5])
      ax.set_xlabel("sign(s) log(1 + |s|)", fontsize=7)
    if not hi > lo:
      lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 41)
    clipped = np.clip(s, lo, hi)
    ax.hist(clipped[~is_member], bins=bins, density=True, alpha=0.55, color="C0", label="non-member")
    ax.hist(clipped[is_member], bins=bins, density=True, alpha=0.55, color="C3", label="member")
    ax.set_title(name, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_yticks([])
  for ax in axes.ravel()[len(scores):]:
    ax.axis("off")
  axes.ravel()[0].legend(fontsize=7)
  fig.suptitle(f"Scores of members and non-members of target model {target} "
               "(tails clipped at the 0.5th/99.5th percentile)", fontsize=10)
  fig.tight_layout()
  _save(fig, path)


def shadow_scaling(path: str, scaling: Mapping) -> None:
  """TPR at 0.1% FPR and AUC against the number of shadows (scaling.shadow_scaling's dict)."""
  plt = _pyplot()
  fig, (ax_tpr, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
  for i, (name, points) in enumerate(scaling["attacks"].items()):
    points = [p for p in points if "auc" in p]
    if not points:
      continue
    x = [p["num_shadows"] for p in points]
    for ax, value in ((ax_tpr, lambda p: p["tpr_at_fpr"]["0.001"]), (ax_auc, lambda p: p["auc"])):
      mean = np.array([value(p)["mean"] for p in points])
      std = np.array([value(p)["std"] for p in points])
      ax.plot(x, mean, marker="o", color=f"C{i % 10}", label=name)
      ax.fill_between(x, mean - std, mean + std, color=f"C{i % 10}", alpha=0.08)
  targets = scaling["targets"]
  for ax, label in ((ax_tpr, "TPR at 0.1% FPR"), (ax_auc, "AUC")):
    ax.set_xscale("log", base=2)
    ax.set_xticks(scaling["sizes"], [str(k) for k in scaling["sizes"]])
    ax.minorticks_off()
    ax.set(xlabel="number of shadow models", ylabel=label)
    ax.grid(alpha=0.3)
  ax_tpr.set_title(f"mean ± std over target(s) {targets}", fontsize=9)
  ax_auc.legend(fontsize=7)
  fig.tight_layout()
  _save(fig, path)
