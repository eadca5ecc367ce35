"""Shadow-model attack (Shokri et al., S&P 2017) with per-class attack classifiers.

For target t, the shadows of pool example i are the other models that references.py picks
for i (IN and OUT in counts that do not depend on the target's membership of i). For each
true class c, one binary classifier (scikit-learn) learns IN/OUT from shadow outputs on pool
examples of class c:
features are the shadow's probability vector averaged over the Q queries, sorted in
decreasing order (as ML-Leaks), by default in log space (log p, which a linear model
separates far better than p; `log_features=False` gives raw probabilities). Optionally the
true label's log probability is appended (`with_true_prob=True`; off by default, as in the
original attack). The target's examples of class c are scored with that class's classifier:
score = its decision function (log-odds of IN).

Training rows are (shadow model, example) pairs of those references, drawn uniformly without
replacement, at most `max_train_per_class` per class (default 5000), so cost does not grow
with M. A class whose sample holds only IN or only OUT rows gets score 0 for its examples.

Array level: `features(logits [S, Q, C], labels [S])` and `classify(train_features [S, F],
train_in [S], target_features [E, F])`, the attack classifier of one class; the registry's
`shokri` loops over targets and classes, drawing the training rows from references.py.
"""

from typing import Sequence

import numpy as np
from sklearn import linear_model, neural_network, pipeline, preprocessing

from mia_jax.attacks import references, signals
from mia_jax.attacks.base import AttackData, check_targets
from mia_jax.errors import ConfigError

CLASSIFIERS = ("logreg", "mlp")


def features(logits: np.ndarray, labels: np.ndarray, log_features: bool = True,
             with_true_prob: bool = False) -> np.ndarray:
  """Attack features from logits [S, Q, C] and labels [S]: float64 [S, C] (or [S, C + 1])."""
  z = np.asarray(logits, dtype=np.float64)
  logp = z - signals.logsumexp(z)[..., None]
  mean_logp = signals.logsumexp(np.swapaxes(logp, -1, -2)) - np.log(z.shape[-2])  # [S, C]
  feats = -np.sort(-mean_logp, axis=-1)
  if not log_features:
    feats = np.exp(feats)
  if with_true_prob:
    true = np.take_along_axis(mean_logp, np.asarray(labels)[:, None], axis=-1)
    feats = np.concatenate([feats, true if log_features else np.exp(true)], axis=-1)
  return feats


def _classifier(kind: str, seed: int):
  if kind == "logreg":
    # Newton-Cholesky: a handful of iterations on C features (lbfgs needs dozens).
    model = linear_model.LogisticRegression(solver="newton-cholesky", max_iter=100)
  else:
    model = neural_network.MLPClassifier(hidden_layer_sizes=(64,), max_iter=300,
                                         early_stopping=True, random_state=seed)
  return pipeline.make_pipeline(preprocessing.StandardScaler(), model)


def _log_odds(model, x: np.ndarray) -> np.ndarray:
  if hasattr(model, "decision_function"):
    return model.decision_function(x)
  prob = np.clip(model.predict_proba(x)[:, 1], 1e-12, 1 - 1e-12)
  return np.log(prob) - np.log1p(-prob)


def classify(train_features: np.ndarray, train_in: np.ndarray, target_features: np.ndarray,
             *, classifier: str = "logreg", seed: int = 0) -> np.ndarray:
  """One attack classifier: log-odds of IN [E] for target rows from shadow rows.

  Args:
    train_features: float [S, F], features of (shadow, example) pairs (`features`).
    train_in: bool [S], whether that shadow trained on that example.
    target_features: float [E, F], the target's features on the examples to score.
    classifier: "logreg" or "mlp" (CLASSIFIERS).
    seed: the MLP's seed.

  Returns:
    float64 [E]; all 0 where train_in holds only IN or only OUT rows (nothing to learn).

  Example:
    >>> rng = np.random.default_rng(0)
    >>> train_in = rng.random(200) < 0.5
    >>> train = rng.normal(size=(200, 3)) + train_in[:, None]            # IN rows shifted
    >>> scores = classify(train, train_in, np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    >>> bool(scores[0] > scores[1])
    True
  """
  if classifier not in CLASSIFIERS:
    raise ConfigError(f"unknown Shokri classifier {classifier!r}; choose one of {CLASSIFIERS}")
  train_in = np.asarray(train_in, bool)
  if train_in.all() or not train_in.any():
    return np.zeros(len(target_features))
  model = _classifier(classifier, seed).fit(train_features, train_in)
  return np.asarray(_log_odds(model, target_features), np.float64)


def shokri(data: AttackData, targets: Sequence[int], classifier: str = "logreg",
           max_train_per_class: int = 5000, log_features: bool = True,
           with_true_prob: bool = False, seed: int = 0) -> np.ndarray:
  """Shokri et al.'s attack; scores [T, N] (log-odds of IN, higher = member).

  Args:
    data: the attack data.
    targets: target model indices.
    classifier: "logreg" (LogisticRegression) or "mlp" (MLPClassifier, one hidden layer of 64).
    max_train_per_class: (shadow, example) training rows per class.
    log_features: sorted log probabilities (True) or sorted probabilities (False).
    with_true_prob: append the true label's (log) probability to the features.
    seed: seed for the row sampling (and the MLP), combined with the target index.
  """
  if classifier not in CLASSIFIERS:
    raise ConfigError(f"unknown Shokri classifier {classifier!r}; choose one of {CLASSIFIERS}")
  if max_train_per_class < 2:
    raise ConfigError(f"max_train_per_class={max_train_per_class} must be at least 2")
  targets = check_targets(data, targets)
  labels = np.asarray(data.labels)
  keep = np.asarray(data.keep)
  feat = lambda m, i: features(data.logits[m, i], labels[i], log_features, with_true_prob)
  scores = np.zeros((len(targets), data.num_examples))
  for row, t in enumerate(targets):
    rng = np.random.default_rng([seed, t])
    refs = references.for_target(data, t)
    for c in np.unique(labels):
      idx = np.nonzero(labels == c)[0]
      models, examples = references.sample_pairs(refs, t, idx, max_train_per_class, rng)
      train_in = keep[models, examples]
      if train_in.all() or not train_in.any():
        continue  # score 0 for this class
      scores[row, idx] = classify(feat(models, examples), train_in,
                                  feat(np.full(idx.size, t), idx),
                                  classifier=classifier, seed=seed)
  return scores
