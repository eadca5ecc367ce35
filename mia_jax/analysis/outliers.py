"""Outlier scores of examples in a feature space (penultimate-layer features), higher = more
outlying, each computed within the example's class:

  centroid_distance  Euclidean distance to the class centroid, divided by the class's median
                     distance (so classes of different spread compare)
  knn_distance       mean distance to the k nearest other examples of the class, divided by
                     the class's median of that
  centroid_angle     1 - cos(feature, class centroid), divided by the class's median: the
                     direction alone, blind to the feature norm (a ReLU network's most
                     confident examples have large norms and sit far from the centroid in
                     Euclidean distance while pointing its way)
  lof                local outlier factor (Breunig et al. 2000; a density-based score), via
                     scikit-learn: the ratio of the neighbours' local density to the example's

Reference sets: centroids and neighbours come from `reference` examples (e.g. the members);
every example is scored against them, an example never being its own neighbour.
"""

import numpy as np
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

SCORES = ("centroid_distance", "centroid_angle", "knn_distance", "lof")


def _by_class(labels, reference):
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    ref = np.flatnonzero((labels == c) & reference)
    if len(ref) >= 2:
      yield idx, ref


def _per_class(features, labels, reference, distance) -> np.ndarray:
  """distance(x_class [n, D], centroid [D]) -> [n] per class, divided by the median over that
  class's reference examples; NaN for classes with fewer than 2 reference examples."""
  x = np.asarray(features, np.float64)
  reference = np.ones(len(x), bool) if reference is None else np.asarray(reference, bool)
  out = np.full(len(x), np.nan)
  for idx, ref in _by_class(labels, reference):
    d = distance(x[idx], x[ref].mean(0))
    out[idx] = d / (np.median(d[np.isin(idx, ref)]) + 1e-12)
  return out


def centroid_distance(features: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None
                      ) -> np.ndarray:
  """features [N, D], labels [N], reference bool [N] (None: all) -> score [N]."""
  return _per_class(features, labels, reference,
                    lambda x, mu: np.linalg.norm(x - mu, axis=1))


def centroid_angle(features: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None
                   ) -> np.ndarray:
  """features [N, D], labels [N], reference bool [N] (None: all) -> score [N]."""
  return _per_class(features, labels, reference, lambda x, mu: 1.0 - x @ mu / (
      np.linalg.norm(x, axis=1) * np.linalg.norm(mu) + 1e-12))


def _neighbour_distances(x, idx, ref, k):
  """Distances [len(idx), k] from each idx example to its k nearest ref examples, not itself."""
  k = min(k, len(ref) - 1)
  nn = NearestNeighbors(n_neighbors=k + 1).fit(x[ref])
  dist, nbr = nn.kneighbors(x[idx])
  is_self = ref[nbr] == idx[:, None]
  # drop the self match where there is one, else the farthest of the k + 1
  drop = np.where(is_self.any(1), is_self.argmax(1), k)
  keep = np.ones_like(dist, bool)
  keep[np.arange(len(idx)), drop] = False
  return dist[keep].reshape(len(idx), k)


def knn_distance(features: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
                 k: int = 10) -> np.ndarray:
  """Mean distance to the k nearest same-class reference examples -> score [N]."""
  x = np.asarray(features, np.float64)
  reference = np.ones(len(x), bool) if reference is None else np.asarray(reference, bool)
  out = np.full(len(x), np.nan)
  for idx, ref in _by_class(labels, reference):
    d = _neighbour_distances(x, idx, ref, k).mean(1)
    out[idx] = d / (np.median(d[np.isin(idx, ref)]) + 1e-12)
  return out


def lof(features: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
        k: int = 20) -> np.ndarray:
  """Local outlier factor within the class (about 1 for inliers, larger for outliers) [N]."""
  x = np.asarray(features, np.float64)
  reference = np.ones(len(x), bool) if reference is None else np.asarray(reference, bool)
  out = np.full(len(x), np.nan)
  for idx, ref in _by_class(labels, reference):
    model = LocalOutlierFactor(n_neighbors=min(k, len(ref) - 1)).fit(x[ref])
    out[ref] = -model.negative_outlier_factor_
    rest = np.setdiff1d(idx, ref)
    if len(rest):
      model_nov = LocalOutlierFactor(n_neighbors=min(k, len(ref) - 1), novelty=True).fit(x[ref])
      out[rest] = -model_nov.score_samples(x[rest])
  return out


def outlier_scores(features: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
                   k: int = 10) -> dict:
  """{name: score [N]} for every score in SCORES."""
  return {"centroid_distance": centroid_distance(features, labels, reference),
          "centroid_angle": centroid_angle(features, labels, reference),
          "knn_distance": knn_distance(features, labels, reference, k),
          "lof": lof(features, labels, reference, 2 * k)}
