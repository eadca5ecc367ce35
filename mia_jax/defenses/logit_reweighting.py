"""Logit reweighting, the study's post-hoc defense (Khalil et al. 2025).

For each model, mu_c [C] is the mean of its logits over its own training samples of true
class c. An output z [C] with predicted class c_hat = argmax z becomes

  s  = w * cos(z, mu_c_hat)
  z' = s * z + (1 - s) * mu_c_hat

applied to every query. Members' and non-members' outputs are pulled towards the same class
centroid, which shrinks the gap a threshold attack reads. When 0 <= s <= 1 and each centroid's
own class is its argmax (true of any model that fits its training data), z' is a convex
combination of two vectors whose argmax is c_hat, so the prediction and accuracy are kept.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_W = 0.1


def class_centroids(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None
                    ) -> np.ndarray:
  """Per-model class centroids of the logits.

  Args:
    logits: [M, N, C] (one query) of M models on N examples.
    labels: int [N] true classes.
    mask: bool [M, N], model m's training examples (None: all).

  Returns:
    mu float32 [M, C, C]: mu[m, c] = mean of logits[m, i] over i with mask[m, i] and
    labels[i] = c (the mean over all of model m's training examples where class c has none).
  """
  m, n, c = logits.shape
  mask = np.ones((m, n), bool) if mask is None else np.asarray(mask, bool)
  onehot = np.eye(c, dtype=np.float64)[labels]                      # [N, C]
  weights = mask[:, :, None] * onehot[None]                         # [M, N, C]
  sums = np.einsum("mnk,mnc->mkc", weights, logits.astype(np.float64))
  counts = weights.sum(axis=1)                                      # [M, C]
  overall = (logits * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1), 1)[:, None]
  mu = np.where(counts[:, :, None] > 0, sums / np.maximum(counts, 1)[:, :, None],
                overall[:, None, :])
  return mu.astype(np.float32)


def reweight(z: jax.Array, mu: jax.Array, w: float = DEFAULT_W) -> jax.Array:
  """Reweights outputs z [..., C] of ONE model with its centroids mu [C, C]; returns [..., C]."""
  center = mu[jnp.argmax(z, axis=-1)]                               # [..., C]
  cos = jnp.sum(z * center, -1) / (jnp.linalg.norm(z, axis=-1) *
                                   jnp.linalg.norm(center, axis=-1) + 1e-12)
  s = (w * cos)[..., None]
  return s * z + (1.0 - s) * center


@functools.partial(jax.jit, static_argnames=("w",))
def _reweight_models(logits, mu, w):
  return jax.vmap(lambda z, m: reweight(z, m, w))(logits, mu)


def reweight_ensemble(logits: np.ndarray, mu: np.ndarray, w: float = DEFAULT_W) -> np.ndarray:
  """Reweights logits [M, N, Q, C] of M models with their centroids mu [M, C, C]."""
  out = _reweight_models(jnp.asarray(logits, jnp.float32), jnp.asarray(mu), float(w))
  return np.asarray(out).astype(logits.dtype)


def defend(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray, w: float = DEFAULT_W
           ) -> np.ndarray:
  """Centroids from each model's own training examples (query 0), then every query reweighted.

  logits [M, N, Q, C], labels [N], keep bool [M, N] -> logits' [M, N, Q, C].
  """
  mu = class_centroids(np.asarray(logits[:, :, 0], np.float32), labels, keep)
  return reweight_ensemble(logits, mu, w)
