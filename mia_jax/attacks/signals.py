"""Per-example signals from logits, in numpy, stable for extreme logits.

Every public function takes logits float [..., C] (float16, float32 or float64) and integer
labels broadcastable to [...], and returns [...] in float32 (float64 for float64 logits).
Work is done in chunks of about 4M logits, so a [256, 50000, 2, 10] float16 array never gets
a full-size float32 copy; only the [...] result is allocated.

Everything is computed in logit space: log p_j = z_j - logsumexp(z). The scaled logit is
z_y - logsumexp_{j != y} z_j (z_y masked to -inf), never log(p / (1 - p)), whose 1 - p
underflows; log(1 - p_j) in the modified entropy uses log1p(-p_j) except at the arg-max class,
where it is the log-sum of the other probabilities.

Orientation: `loss`, `entropy` and `modified_entropy` are the natural quantities (lower =
more member-like); `scaled_logit` and `confidence` grow with membership.
"""

from typing import Callable

import numpy as np

from mia_jax.errors import ConfigError

_CHUNK = 1 << 22


def logsumexp(z: np.ndarray) -> np.ndarray:
  """logsumexp over the last axis of [..., C]; rows of all -inf give -inf."""
  m = np.max(z, axis=-1, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0).astype(z.dtype)
  with np.errstate(divide="ignore"):
    return m[..., 0] + np.log(np.sum(np.exp(z - m), axis=-1))


def _true(z: np.ndarray, y: np.ndarray) -> np.ndarray:
  return np.take_along_axis(z, y[..., None], axis=-1)[..., 0]


def _without(z: np.ndarray, y: np.ndarray) -> np.ndarray:
  """A copy of z [..., C] with entry y [...] set to -inf."""
  masked = z.copy()
  np.put_along_axis(masked, y[..., None], -np.inf, axis=-1)
  return masked


def _scaled_logit(z, y):
  return _true(z, y) - logsumexp(_without(z, y))


def _loss(z, y):
  # -log p_y = log(1 + exp(-phi)) = softplus(-phi): computed from phi it keeps its precision for
  # confidently right examples, where logsumexp(z) - z_y rounds to exactly 0 in float32 and
  # ties members with non-members (3% of Fashion-MNIST non-members did).
  return np.logaddexp(0.0, -_scaled_logit(z, y))


def _confidence(z, y):
  return np.exp(_true(z, y) - logsumexp(z))


def _log_probs(z):
  return z - logsumexp(z)[..., None]


def _entropy(z, y):
  del y
  logp = _log_probs(z)
  return -np.sum(np.exp(logp) * logp, axis=-1)


def _modified_entropy(z, y):
  logp = _log_probs(z)
  p = np.exp(logp)
  with np.errstate(divide="ignore"):
    log1m = np.log1p(-p)  # accurate where p <= 1/2, i.e. everywhere but the arg-max
  top = np.argmax(z, axis=-1)
  np.put_along_axis(log1m, top[..., None],
                    logsumexp(_without(logp, top))[..., None], axis=-1)
  logp_y, log1m_y = _true(logp, y), _true(log1m, y)
  others = p * log1m
  np.put_along_axis(others, y[..., None], 0.0, axis=-1)
  return -np.exp(log1m_y) * logp_y - np.sum(others, axis=-1)


def _apply(fn: Callable, logits: np.ndarray, labels: np.ndarray, out: np.ndarray) -> None:
  """out[...] = fn(logits, labels), chunked along the leading axes."""
  row = int(np.prod(logits.shape[1:-1], dtype=np.int64)) * logits.shape[-1]
  if logits.ndim > 2 and row > _CHUNK:
    for i in range(logits.shape[0]):
      _apply(fn, logits[i], labels[i], out[i])
    return
  step = max(1, _CHUNK // max(row, 1))
  for s in range(0, logits.shape[0], step):
    out[s:s + step] = fn(logits[s:s + step].astype(out.dtype, copy=False),
                         np.asarray(labels[s:s + step], dtype=np.intp))


def _signal(fn: Callable, logits, labels) -> np.ndarray:
  logits = np.asarray(logits)
  if logits.ndim < 1 or logits.shape[-1] < 2:
    raise ConfigError(f"logits of shape {logits.shape} need a class axis of size >= 2 last")
  if not np.issubdtype(logits.dtype, np.floating):
    raise ConfigError(f"logits must be floating point, got {logits.dtype}")
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ConfigError(f"labels must be integers, got {labels.dtype}")
  if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[-1]):
    raise ConfigError(f"labels must lie in [0, {logits.shape[-1]}), got "
                      f"[{labels.min()}, {labels.max()}]")
  batch = logits.shape[:-1]
  try:
    labels = np.broadcast_to(labels, batch)
  except ValueError:
    raise ConfigError(
        f"labels {labels.shape} do not broadcast to logits' batch shape {batch}; "
        "for logits [M, N, Q, C] pass labels[:, None] ([N, 1])") from None
  dtype = np.result_type(logits.dtype, np.float32)
  if logits.ndim == 1:
    return fn(logits[None].astype(dtype), labels[None].astype(np.intp))[0]
  out = np.empty(batch, dtype)
  _apply(fn, logits, labels, out)
  return out


def scaled_logit(logits, labels) -> np.ndarray:
  """LiRA's phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j; [..., C] -> [...]."""
  return _signal(_scaled_logit, logits, labels)


def loss(logits, labels) -> np.ndarray:
  """Cross-entropy -log p_y; [..., C] -> [...]. The attack signal of stored logits (numpy, any
  leading axes, no label smoothing): not the training loss, whose one copy is
  mia_jax.training.losses.softmax_cross_entropy (JAX, [B])."""
  return _signal(_loss, logits, labels)


def confidence(logits, labels) -> np.ndarray:
  """Softmax probability of the true label p_y; [..., C] -> [...]."""
  return _signal(_confidence, logits, labels)


def entropy(logits, labels=0) -> np.ndarray:
  """Shannon entropy -sum_j p_j log p_j (labels unused); [..., C] -> [...]."""
  return _signal(_entropy, logits, labels)


def modified_entropy(logits, labels) -> np.ndarray:
  """Song & Mittal's -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j); [..., C] -> [...]."""
  return _signal(_modified_entropy, logits, labels)


def mean_probs(logits) -> np.ndarray:
  """Softmax probabilities averaged over the query axis: [..., Q, C] -> [..., C] (float32+).

  For small selections of rows (e.g. Shokri's training samples); not chunked.
  """
  logits = np.asarray(logits)
  z = logits.astype(np.result_type(logits.dtype, np.float32), copy=False)
  return np.mean(np.exp(_log_probs(z)), axis=-2)


SIGNALS: dict[str, Callable] = {
    "scaled_logit": scaled_logit,
    "loss": loss,
    "confidence": confidence,
    "entropy": entropy,
    "modified_entropy": modified_entropy,
}
