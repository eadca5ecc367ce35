"""Grad-CAM (Selvaraju et al. 2017) for the convolutional models.

The feature map A [h, w, K] is the output of the last convolution or normalisation layer the
model calls on a spatial input (for DenseNet the final BatchNorm over all channels, for the
small CNN its last convolution). Weights a_k = spatial mean of d logit_c / d A_k;
cam = relu(sum_k a_k A_k), resized to the input and scaled to [0, 1].

The gradient with respect to that map is taken by adding a zero perturbation to the layer's
output through flax's method interception, so no model needs a hook of its own.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_LAYERS = (nn.Conv, nn.BatchNorm, nn.GroupNorm)


def _is_map_layer(context, out) -> bool:
  return (isinstance(context.module, _LAYERS) and context.method_name == "__call__"
          and getattr(out, "ndim", 0) == 4)


def _count_map_layers(model, variables, x) -> tuple[int, tuple]:
  shapes = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if _is_map_layer(context, out):
      shapes.append(out.shape)
    return out

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v, b: model.apply(v, b, train=False), variables, x)
  if not shapes:
    raise ValueError(f"{type(model).__name__} has no convolutional feature map for Grad-CAM")
  return len(shapes), shapes[-1]


def gradcam(model: nn.Module, variables: dict, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """Grad-CAM maps [N, H, W] in [0, 1] of ONE model on images x [N, H, W, C] for the given
  classes [N] (e.g. the true labels), from the last spatial feature map."""
  x = jnp.asarray(x)
  count, shape = _count_map_layers(model, variables, x)

  def logits_with(delta):
    calls = []

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if _is_map_layer(context, out):
        calls.append(None)
        if len(calls) == count:
          return out + delta, out
      return out

    captured = {}

    def capture(next_fun, args, kwargs, context):
      out = interceptor(next_fun, args, kwargs, context)
      if isinstance(out, tuple):
        captured["a"] = out[1]
        return out[0]
      return out

    with nn.intercept_methods(capture):
      z = model.apply(variables, x, train=False)
    return jnp.sum(z[jnp.arange(x.shape[0]), jnp.asarray(classes)]), captured["a"]

  @jax.jit
  def cams(delta):
    grads, acts = jax.grad(logits_with, has_aux=True)(delta)
    weights = grads.mean(axis=(1, 2), keepdims=True)                # [N, 1, 1, K]
    cam = jax.nn.relu(jnp.sum(weights * acts, axis=-1))             # [N, h, w]
    cam = jax.image.resize(cam, (x.shape[0],) + x.shape[1:3], "bilinear")
    return cam / (cam.max(axis=(1, 2), keepdims=True) + 1e-12)

  return np.asarray(cams(jnp.zeros(shape, x.dtype)))
