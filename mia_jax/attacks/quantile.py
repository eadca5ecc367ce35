"""Quantile-regression membership inference (Bertran et al., NeurIPS 2023): no shadow models.

The attacker holds examples known to be outside the target's training set (the population)
and the target's signal s on them (its scaled logit, signals.scaled_logit, averaged over the
queries). A regressor fitted on the population's features predicts, for any example x, the
(1 - alpha) quantile q(x) of the signal a non-member like x gets; a pool example is called a
member when s(x) > q(x), so among non-members about alpha are flagged whatever their
difficulty. The score is s(x) - q(x) (higher = member): thresholding it at 0 is the paper's
rule at FPR alpha, and its ROC is the attack's curve (well calibrated only near alpha).

Two methods, both scikit-learn's HistGradientBoostingRegressor (gradient-boosted trees: the
pinball loss built in, no feature scaling to choose, fast on tens of thousands of rows,
deterministic for a seed; sklearn's MLPRegressor has only the squared loss, so a small MLP
would need a quantile loss and tuning of its own). They run on one OpenMP thread: on shared
cores sklearn's spinning OpenMP threads stall the fit. Figures on Fashion-MNIST:
experiments/results/quantile_attack_fashion_mnist.md.

  "quantile"  one regressor with the pinball loss at 1 - alpha; score = s - q(x). The paper's
              estimator. Trees estimate a 99.9% quantile from the few population examples
              above it, so it is noisy at alpha = 0.1% unless P is large.
  "gaussian"  the paper's Gaussian form, for every alpha at once: a mean head mu(x) (squared
              loss) and a scale head sigma(x) fitted to log |s - mu(x)| on out-of-fold
              residuals (two folds, so the mean head's fit to its own rows does not shrink
              sigma); E log |Z| = -(gamma + log 2) / 2 for Z ~ N(0, 1) gives sigma.
              score = (s - mu(x)) / sigma(x); its threshold at FPR alpha is z_{1-alpha}.

Array level: `fit(features [P, D], signal [P], alpha) -> QuantileModel`, then
`score(model, features [N, D], signal [N]) -> [N]`. The registry's `quantile_regression`
fits one model per target on the population's features (AttackData.population_features) and
scores the pool (AttackData.features); it reads no other model than the target.
`input_features` makes both feature arrays from raw inputs (pixels projected on the
population's principal components, and the label one-hot).
"""

import dataclasses
from typing import Sequence

import numpy as np
from scipy import special
from sklearn import decomposition, ensemble, model_selection
from threadpoolctl import threadpool_limits

from mia_jax.attacks.base import AttackData, check_targets
from mia_jax.errors import ConfigError

METHODS = ("quantile", "gaussian")
_MEAN_LOG_ABS_NORMAL = -(np.euler_gamma + np.log(2.0)) / 2   # E log |Z|, Z ~ N(0, 1)


@dataclasses.dataclass(frozen=True)
class QuantileModel:
  """A fitted regression of the non-members' signal on features.

  Attributes:
    method: "quantile" or "gaussian" (module docstring).
    alpha: the FPR the quantile is fitted for.
    heads: the fitted regressors: (q,) for "quantile", (mu, log_sigma) for "gaussian".
  """
  method: str
  alpha: float
  heads: tuple


def _regressor(seed: int, max_iter: int, **loss) -> ensemble.HistGradientBoostingRegressor:
  return ensemble.HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed,
                                                early_stopping=False, **loss)


def _check(features, signal, alpha=None) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(features, np.float64)
  s = np.asarray(signal, np.float64)
  if x.ndim != 2 or s.shape != (x.shape[0],):
    raise ConfigError(f"features must be [P, D] and signal [P], got {x.shape} and {s.shape}")
  if not (np.isfinite(x).all() and np.isfinite(s).all()):
    raise ConfigError("features and signal must be finite; replace NaN/inf first")
  if alpha is not None and not 0.0 < alpha < 0.5:
    raise ConfigError(f"alpha={alpha} must lie in (0, 0.5): the FPR the quantile is fitted at")
  return x, s


@threadpool_limits.wrap(limits=1)
def fit(features: np.ndarray, signal: np.ndarray, alpha: float = 0.01, *,
        method: str = "quantile", max_iter: int = 100, seed: int = 0) -> QuantileModel:
  """Fits the non-members' (1 - alpha) signal quantile given features.

  Args:
    features: float [P, D] of population (non-member) examples.
    signal: float [P], the target's signal on them (e.g. its scaled logit).
    alpha: the attack's FPR, in (0, 0.5).
    method: "quantile" (pinball loss) or "gaussian" (mean and scale heads).
    max_iter: boosting iterations per head.
    seed: the regressors' random_state (and the folds of the scale head).

  Returns:
    a QuantileModel for `predict` and `score`.

  Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 2, (4000, 1)).astype(float)       # two groups
    >>> s = 3.0 * x[:, 0] + rng.normal(size=4000)             # group 1 sits 3 higher
    >>> q = predict(fit(x, s, 0.05), np.array([[0.0], [1.0]]))
    >>> bool(abs(q[0] - 1.64) < 0.2 and abs(q[1] - 4.64) < 0.2)
    True
  """
  x, s = _check(features, signal, alpha)
  if method not in METHODS:
    raise ConfigError(f"unknown method {method!r}; choose one of {list(METHODS)}")
  if method == "quantile":
    head = _regressor(seed, max_iter, loss="quantile", quantile=1.0 - alpha).fit(x, s)
    return QuantileModel(method, float(alpha), (head,))
  mean = _regressor(seed, max_iter)
  folds = model_selection.KFold(2, shuffle=True, random_state=seed)
  held_out = model_selection.cross_val_predict(mean, x, s, cv=folds)
  log_abs = np.log(np.maximum(np.abs(s - held_out), 1e-12))
  scale = _regressor(seed, max_iter).fit(x, log_abs)
  return QuantileModel(method, float(alpha), (mean.fit(x, s), scale))


def _mean_sigma(model: QuantileModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean, scale = model.heads
  return mean.predict(x), np.exp(scale.predict(x) - _MEAN_LOG_ABS_NORMAL)


@threadpool_limits.wrap(limits=1)
def predict(model: QuantileModel, features: np.ndarray) -> np.ndarray:
  """The predicted (1 - alpha) quantile q(x) of a non-member's signal: float64 [N] from
  features [N, D] (for "gaussian": mu(x) + z_{1 - alpha} sigma(x))."""
  x = np.asarray(features, np.float64)
  if model.method == "quantile":
    return model.heads[0].predict(x)
  mu, sigma = _mean_sigma(model, x)
  return mu + special.ndtri(1.0 - model.alpha) * sigma


@threadpool_limits.wrap(limits=1)
def score(model: QuantileModel, features: np.ndarray, signal: np.ndarray) -> np.ndarray:
  """Membership scores float64 [N], higher = member, from features [N, D] and the target's
  signal [N]: s - q(x) ("quantile"; > 0 is the FPR-alpha rule) or (s - mu(x)) / sigma(x)
  ("gaussian"; > z_{1 - alpha} is)."""
  x, s = _check(features, signal)
  if model.method == "quantile":
    return s - model.heads[0].predict(x)
  mu, sigma = _mean_sigma(model, x)
  return (s - mu) / sigma


def input_features(population_x: np.ndarray, population_y: np.ndarray, pool_x: np.ndarray,
                   pool_y: np.ndarray, num_classes: int, num_components: int = 64
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(features [N, K + C], population_features [P, K + C]) from inputs [N, ...] / [P, ...]
  and labels [N] / [P]: each input flattened and projected on the first K = num_components
  principal components of the population's inputs (fitted on the population only, so no pool
  example shapes it; the regression's cost grows with D), then the label one-hot (the
  attacker knows it, and the signal's level differs by class)."""
  flat = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
  k = min(num_components, flat(population_x).shape[1], len(population_x))
  projection = decomposition.PCA(k, random_state=0).fit(flat(population_x))
  features = lambda x, y: np.concatenate(
      [projection.transform(flat(x)), np.eye(num_classes)[np.asarray(y)]], axis=1)
  return features(pool_x, pool_y), features(population_x, population_y)


def quantile_regression(data: AttackData, targets: Sequence[int], alpha: float = 0.01,
                        method: str = "quantile", max_iter: int = 100, seed: int = 0
                        ) -> np.ndarray:
  """Scores [T, N]: for each target, `fit` on its population signal and `score` the pool.

  Reads only the target's outputs (pool and population) and the examples' features. Each
  target's scores are cached in `data` under a "signal" key: they do not depend on the
  choice of references, so every with_references view shares them.
  """
  targets = check_targets(data, targets)
  if data.features is None:
    raise ConfigError("quantile_regression needs AttackData(features=[N, D], "
                      "population_features=[P, D]), e.g. the inputs as x.reshape(len(x), -1)")
  pool = data.target_signal("scaled_logit", targets).mean(axis=-1, dtype=np.float64)
  population = data.signal("scaled_logit", population=True)
  out = np.empty((len(targets), data.num_examples))
  for row, t in enumerate(targets):
    def one_target(row=row, t=t):
      model = fit(data.population_features, population[t].mean(axis=-1, dtype=np.float64),
                  alpha, method=method, max_iter=max_iter, seed=seed)
      return score(model, data.features, pool[row])
    key = ("signal", "quantile_regression", t, float(alpha), method, int(max_iter), int(seed))
    out[row] = data.cached(key, one_target)
  return out
