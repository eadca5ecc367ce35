"""Penultimate-layer features of a model and t-SNE maps of features or logits.

`penultimate` records the input of the LAST dense layer a model calls (its head) through
flax's method interception, so it works for every registered model (MLP, CNN, DenseNet,
ResNet) without changing their code. t-SNE is scikit-learn's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.manifold import TSNE


def _apply_with_features(model: nn.Module, variables: dict, x: jax.Array):
  captured = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
      captured.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, x, train=False)
  return captured[-1].reshape((x.shape[0], -1)), logits


def penultimate(model: nn.Module, variables: dict, x: np.ndarray, batch_size: int = 512
                ) -> tuple[np.ndarray, np.ndarray]:
  """Eval-mode features [N, D] (input of the head) and logits [N, C] of ONE model on x [N, ...]."""
  fn = jax.jit(lambda v, b: _apply_with_features(model, v, b))
  feats, logits = [], []
  for i in range(0, len(x), batch_size):
    f, z = fn(variables, jnp.asarray(x[i:i + batch_size]))
    feats.append(np.asarray(f))
    logits.append(np.asarray(z))
  return np.concatenate(feats), np.concatenate(logits)


def model_variables(state, m: int) -> dict:
  """The variables of model m of a stacked ensemble state (leaves [M, ...])."""
  params = jax.tree.map(lambda a: a[m], state.params)
  stats = jax.tree.map(lambda a: a[m], state.batch_stats)
  return {"params": params, "batch_stats": stats} if stats else {"params": params}


def tsne(x: np.ndarray, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000
         ) -> np.ndarray:
  """A 2-D t-SNE map [N, 2] of x [N, D] (PCA-initialised; sklearn)."""
  x = np.asarray(x, np.float32)
  perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
  return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
              learning_rate="auto", max_iter=max_iter).fit_transform(x)
