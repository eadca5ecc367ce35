"""Figures of the vulnerability analysis (matplotlib, Agg backend, PNG files).

  signal_histograms   member vs non-member histograms of loss, confidence and scaled logit,
                      one row per recorded epoch
  tsne_scatter        a 2-D map coloured by class, vulnerable members marked
  gradcam_grid        images with their Grad-CAM overlaid (most and least vulnerable rows)
  decile_bars         vulnerable fraction per outlier-score decile
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
                 title: str = "") -> str:
  """points [N, 2], labels [N], vulnerable bool [N] (drawn as black-edged crosses on top)."""
  fig, ax = plt.subplots(figsize=(6.5, 6))
  ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, alpha=0.5, linewidths=0)
  v = np.asarray(vulnerable, bool)
  ax.scatter(points[v, 0], points[v, 1], c=labels[v], cmap="tab10", vmin=labels.min(),
             vmax=labels.max(), s=40, marker="X", edgecolors="black", linewidths=0.7,
             label=f"vulnerable members ({int(v.sum())})")
  ax.legend(loc="best", fontsize=8)
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
