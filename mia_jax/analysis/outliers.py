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
  border             the fraction of the k nearest reference examples (of every class) whose
                     class is another: 0 inside the class cluster, near 1 across its border

Reference sets: centroids and neighbours come from `reference` examples (e.g. the members);
every example is scored against them, an example never being its own neighbour.

Scores from reference models (`reference_model_scores`, `reference_difficulty`): outlierness
measured in a model that TRAINED on an example reads that model's memorisation of it, the very
thing a membership attack detects, so it cannot tell the two apart. These functions take the
features [R, N, D] (or logits [R, N, Q, C]) of R reference models and unseen [R, N] (model r
never trained on example i), score each example only in the models that never saw it (against
reference sets of examples those models never saw either) and average over them:

  ref_loss           mean cross-entropy of the unseen models on the example ("hard to classify")
  ref_error          fraction of the unseen models that predict another class ("noisy": the
                     label disagrees with what models that never saw it predict)
"""

import numpy as np
from scipy.special import logsumexp
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

SCORES = ("centroid_distance", "centroid_angle", "knn_distance", "lof")
FEATURE_SCORES = ("centroid_distance", "knn_distance", "lof", "border")


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


def border(features: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
           k: int = 10) -> np.ndarray:
  """Fraction [N] of the k nearest reference examples (any class, never the example itself)
  whose label differs from the example's."""
  x, labels = np.asarray(features, np.float64), np.asarray(labels)
  reference = np.ones(len(x), bool) if reference is None else np.asarray(reference, bool)
  ref = np.flatnonzero(reference)
  k = min(k, len(ref) - 1)
  nn = NearestNeighbors(n_neighbors=k + 1).fit(x[ref])
  _, nbr = nn.kneighbors(x)
  nbr = ref[nbr]                                           # [N, k + 1] pool indices
  is_self = nbr == np.arange(len(x))[:, None]
  drop = np.where(is_self.any(1), is_self.argmax(1), k)
  keep = np.ones_like(nbr, bool)
  keep[np.arange(len(x)), drop] = False
  nbr = nbr[keep].reshape(len(x), k)
  return (labels[nbr] != labels[:, None]).mean(1)


def reference_model_scores(features: np.ndarray, labels: np.ndarray, unseen: np.ndarray,
                           k: int = 10) -> dict:
  """Outlier scores from reference models that never trained on the example.

  Args:
    features: [R, N, D] penultimate features of R reference models on the N examples.
    labels: [N].
    unseen: bool [R, N], model r never trained on example i.
    k: neighbours of knn_distance and border (lof uses 2 k).

  Returns:
    {name: [N]} for FEATURE_SCORES, each the mean over the models that never saw the example
    of its score in that model's feature space, against that model's unseen examples (nan
    where no model is unseen), and "num_models": int [N], how many models it averages.
  """
  feats, unseen = np.asarray(features), np.asarray(unseen, bool)
  if feats.ndim != 3 or unseen.shape != feats.shape[:2]:
    raise ValueError(f"features {feats.shape} must be [R, N, D] and unseen {unseen.shape} [R, N]")
  sums = {name: np.zeros(feats.shape[1]) for name in FEATURE_SCORES}
  for f, u in zip(feats, unseen):
    if u.sum() < 2:
      continue
    scores = {"centroid_distance": centroid_distance(f, labels, u),
              "knn_distance": knn_distance(f, labels, u, k),
              "lof": lof(f, labels, u, 2 * k), "border": border(f, labels, u, k)}
    for name, v in scores.items():
      sums[name] += np.where(u, np.nan_to_num(v), 0.0)
  count = unseen.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    out = {name: np.where(count > 0, v / count, np.nan) for name, v in sums.items()}
  out["num_models"] = count
  return out


def reference_difficulty(logits: np.ndarray, labels: np.ndarray, unseen: np.ndarray) -> dict:
  """ref_loss and ref_error [N] (module docstring) from logits [R, N, Q, C] (or [R, N, C]) of
  R reference models and unseen bool [R, N]; the loss is averaged over the Q queries, the
  prediction is the argmax of the query-averaged logits; nan where no model is unseen."""
  z = np.asarray(logits, np.float64)
  z = z[:, :, None] if z.ndim == 3 else z
  labels, unseen = np.asarray(labels), np.asarray(unseen, bool)
  zy = np.take_along_axis(z, labels[None, :, None, None], axis=-1)[..., 0]     # [R, N, Q]
  loss = (logsumexp(z, axis=-1) - zy).mean(-1)                                 # [R, N]
  wrong = z.mean(2).argmax(-1) != labels[None]
  count = unseen.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {"ref_loss": np.where(count > 0, (loss * unseen).sum(0) / count, np.nan),
            "ref_error": np.where(count > 0, (wrong & unseen).sum(0) / count, np.nan)}
