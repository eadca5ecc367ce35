"""Figures of the vulnerability analysis (matplotlib, Agg backend, PNG files).

  signal_histograms   member vs non-member histograms of loss, confidence and scaled logit,
                      one row per recorded epoch
  tsne_scatter        a 2-D map coloured by class, vulnerable (or leaking) examples marked
  gradcam_grid        images with their Grad-CAM overlaid (most and least vulnerable rows)
  decile_bars         vulnerable fraction per outlier-score decile
  leakage_deciles     per outlier score, the flag rate when IN and when OUT by within-class
                      decile, with intervals: the gap between the two lines is the leakage
  class_effects       a heat map of within-class effects (classes x outlier scores), the
                      Holm-significant ones marked
  precision_strip     each target's precision of its flagged set against chance
  image_grid          images with captions (e.g. the most leaking examples)
"""

import os
from typing import Mapping, Sequence

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def signal_histograms(by_epoch: Mapping[int, Mapping[str, np.ndarray]], is_member: np.ndarray,
                      path: str, bins: int = 60) -> str:
  """by_epoch {epoch: {signal name: values [N]}}, is_member bool [N]; one panel per
  (epoch, signal), members and non-members as normalised histograms."""
  epochs = sorted(by_epoch)
  names = list(by_epoch[epochs[0]])
  fig, axes = plt.subplots(len(epochs), len(names), figsize=(4 * len(names), 2.6 * len(epochs)),
                           squeeze=False)
  for r, e in enumerate(epochs):
    for c, name in enumerate(names):
      v = np.asarray(by_epoch[e][name], np.float64)
      ok = np.isfinite(v)
      lo, hi = np.percentile(v[ok], [0.5, 99.5])
      edges = np.linspace(lo, hi if hi > lo else lo + 1, bins)
      ax = axes[r, c]
      ax.hist(np.clip(v[ok & is_member], lo, hi), edges, density=True, alpha=0.55,
              label="members")
      ax.hist(np.clip(v[ok & ~is_member], lo, hi), edges, density=True, alpha=0.55,
              label="non-members")
      ax.set_title(f"epoch {e}: {name}", fontsize=9)
      if r == 0 and c == 0:
        ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def tsne_scatter(points: np.ndarray, labels: np.ndarray, vulnerable: np.ndarray, path: str,
                 title: str = "", marked: str = "vulnerable members",
                 class_names: Sequence[str] | None = None) -> str:
  """points [N, 2], labels [N], vulnerable bool [N] (drawn as black-edged crosses on top,
  named `marked` in the legend); class_names label the classes' colours in the legend."""
  fig, ax = plt.subplots(figsize=(6.5, 6))
  colours = np.asarray(labels) % 10
  ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", vmin=0, vmax=9, s=3,
             alpha=0.5, linewidths=0)
  v = np.asarray(vulnerable, bool)
  ax.scatter(points[v, 0], points[v, 1], c=colours[v], cmap="tab10", vmin=0, vmax=9,
             s=40 if v.sum() < 200 else 16, marker="X", edgecolors="black",
             linewidths=0.7 if v.sum() < 200 else 0.4, label=f"{marked} ({int(v.sum())} here)")
  if class_names is not None:
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
      ax.scatter([], [], color=cmap(c % 10), s=12, label=name)
  ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
  ax.set_title(title, fontsize=10)
  ax.set_xticks([])
  ax.set_yticks([])
  return _save(fig, path)


def gradcam_grid(rows: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[str]]],
                 path: str) -> str:
  """rows: (row title, images [K, H, W, C], cams [K, H, W] in [0, 1], captions [K])."""
  cols = max(len(r[1]) for r in rows)
  fig, axes = plt.subplots(len(rows), cols, figsize=(1.8 * cols, 2.1 * len(rows)), squeeze=False)
  for r, (title, images, cams, captions) in enumerate(rows):
    for c in range(cols):
      ax = axes[r, c]
      ax.axis("off")
      if c >= len(images):
        continue
      img = np.asarray(images[c], np.float64)
      img = (img - img.min()) / (np.ptp(img) + 1e-12)
      ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
      ax.imshow(cams[c], cmap="jet", alpha=0.45, vmin=0, vmax=1)
      ax.set_title(captions[c], fontsize=7)
    axes[r, 0].text(-0.1, 0.5, title, transform=axes[r, 0].transAxes, rotation=90,
                    ha="right", va="center", fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def decile_bars(fractions: Mapping[str, Sequence[float]], path: str, title: str = "") -> str:
  """fractions {outlier score name: vulnerable fraction per decile [10]}."""
  fig, ax = plt.subplots(figsize=(7, 3.5))
  width = 0.8 / max(len(fractions), 1)
  for i, (name, f) in enumerate(fractions.items()):
    ax.bar(np.arange(len(f)) + i * width, f, width, label=name)
  ax.set_xlabel("outlier-score decile (0 = most typical)")
  ax.set_ylabel("fraction of members vulnerable")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8)
  return _save(fig, path)


def leakage_deciles(profiles: Mapping[str, Sequence[Mapping]], path: str, title: str = "",
                    names: Mapping[str, str] | None = None) -> str:
  """profiles {outlier score: [10] deciles, each {"rate_in", "rate_out"}: {"mean",
  "interval"}}; one panel per score, percent on the y axis."""
  keys = list(profiles)
  cols = min(4, len(keys))
  rows = -(-len(keys) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False,
                           sharey=True)
  x = np.arange(10)
  for ax, key in zip(axes.flat, keys):
    for which, label, color in (("rate_in", "flagged when IN (member)", "tab:red"),
                                ("rate_out", "flagged when OUT (control)", "tab:blue")):
      m = np.array([d[which]["mean"] for d in profiles[key]]) * 100
      lo = np.array([d[which]["interval"][0] for d in profiles[key]]) * 100
      hi = np.array([d[which]["interval"][1] for d in profiles[key]]) * 100
      ax.plot(x, m, "o-", color=color, ms=3, label=label)
      ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_title((names or {}).get(key, key), fontsize=9)
    ax.set_xticks(x)
    ax.set_xticklabels([str(i + 1) for i in x], fontsize=7)
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(keys):]:
    ax.axis("off")
  for ax in axes[-1]:
    ax.set_xlabel("decile within class (1 = most typical, 10 = most outlying)", fontsize=7)
  for ax in axes[:, 0]:
    ax.set_ylabel("targets flagging it (%)", fontsize=8)
  axes.flat[0].legend(fontsize=7, loc="upper left")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def class_effects(values: np.ndarray, significant: np.ndarray, rows: Sequence[str],
                  cols: Sequence[str], path: str, title: str = "", label: str = "") -> str:
  """values [R, C] (e.g. within-class rho, the last row pooled), significant bool [R, C]
  (marked with a star); a diverging colour scale centred at 0."""
  values = np.asarray(values, np.float64)
  lim = max(float(np.nanmax(np.abs(values))), 1e-3)
  fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.42 * len(rows) + 1.6))
  im = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
  for i in range(values.shape[0]):
    for j in range(values.shape[1]):
      if np.isfinite(values[i, j]):
        ax.text(j, i, f"{values[i, j]:.2f}" + ("*" if significant[i, j] else ""), ha="center",
                va="center", fontsize=7)
  ax.set_xticks(range(len(cols)))
  ax.set_xticklabels(cols, rotation=30, ha="right", fontsize=8)
  ax.set_yticks(range(len(rows)))
  ax.set_yticklabels(rows, fontsize=8)
  ax.axhline(len(rows) - 1.5, color="black", linewidth=0.8)
  fig.colorbar(im, ax=ax, label=label, shrink=0.8)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def precision_strip(panels: Mapping[str, Mapping[str, np.ndarray]], path: str,
                    title: str = "") -> str:
  """panels {name: {"precision": [T], "base_rate": float}}: each target's precision (dots)
  against the member base rate (the line), which is the precision with no leak on average."""
  names = list(panels)
  fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
  rng = np.random.default_rng(0)
  for i, name in enumerate(names):
    p = np.asarray(panels[name]["precision"], np.float64) * 100
    ax.scatter(i + rng.uniform(-0.15, 0.15, len(p)), p, s=9, alpha=0.6, color="tab:red",
               label="each target's precision" if i == 0 else None)
    ax.hlines(panels[name]["base_rate"] * 100, i - 0.35, i + 0.35, color="black",
              label="member base rate = precision with no leak" if i == 0 else None)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, fontsize=8)
  ax.set_ylabel("members among the flagged (%)")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7, loc="lower right")
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  return _save(fig, path)


def image_grid(images: np.ndarray, captions: Sequence[str], path: str, title: str = "",
               cols: int = 8) -> str:
  """images [K, H, W, C] (or [K, H, W]) with a caption each, in rows of `cols`."""
  k = len(images)
  rows = max(1, -(-k // cols))
  fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.85 * rows), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i >= k:
      continue
    img = np.asarray(images[i], np.float64)
    img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
    img = (img - img.min()) / (np.ptp(img) + 1e-12)
    ax.imshow(img, cmap="gray")
    ax.set_title(captions[i], fontsize=6.5)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)
