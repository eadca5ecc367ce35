"""Eval-mode queries of every model: the logits store an audit attacks.

`query_logits` returns logits [M, N, Q, C]: model m on example n under query q (q = 0 the
example itself; q = 1 its horizontal mirror when queries='mirror'), class c. Models run in eval
mode (no dropout, BatchNorm running statistics): querying in training mode is a known bug of
public MIA code that changes every score.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from mia_jax.data import augment
from mia_jax.training import steps


def query_logits(model: nn.Module, state: steps.ModelState, x: np.ndarray, queries: str = "mirror",
                 batch_size: int = 1024, dtype=np.float32) -> np.ndarray:
  """Logits [M, N, Q, C] of the M stacked models in `state` on x [N, ...]."""
  qx = augment.queries(jnp.asarray(x), queries)           # [Q, N, ...]
  predict = jax.jit(lambda variables, inputs: steps.predict(model, variables, inputs, batch_size))
  num_models = jax.tree.leaves(state.params)[0].shape[0]
  out = None
  for m in range(num_models):
    variables = steps.variables_of(jax.tree.map(lambda a: a[m], state.params),
                                   jax.tree.map(lambda a: a[m], state.batch_stats))
    for q in range(qx.shape[0]):
      logits = np.asarray(predict(variables, qx[q]))
      if out is None:
        out = np.zeros((num_models, x.shape[0], qx.shape[0], logits.shape[-1]), dtype)
      out[m, :, q] = logits
  return out


def accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Per-model accuracy [M] of the first query of logits [M, N, Q, C], over mask [M, N] if given."""
  correct = np.argmax(logits[:, :, 0], axis=-1) == labels[None]
  if mask is None:
    return correct.mean(axis=1)
  return (correct * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
