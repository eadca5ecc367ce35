"""Data augmentation inside jit, drawn per example: random crop with padding, horizontal flip.

Also the query set of an audit: an image and its horizontal mirror, as LiRA queries.
"""

import jax
import jax.numpy as jnp


def random_crop(key: jax.Array, x: jax.Array, padding: int) -> jax.Array:
  """x [B, H, W, C] -> [B, H, W, C], each example shifted by up to `padding` pixels
  (reflect padding, then a random H x W window)."""
  if padding <= 0:
    return x
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
  offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)

  def crop_one(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

  return jax.vmap(crop_one)(padded, offsets)


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
  """x [B, H, W, C]: each example mirrored left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def augment(key: jax.Array, x: jax.Array, crop_padding: int = 0, flip: bool = False) -> jax.Array:
  """Applies the configured augmentations to images [B, H, W, C]; other inputs pass through."""
  if x.ndim != 4 or (crop_padding <= 0 and not flip):
    return x
  k1, k2 = jax.random.split(key)
  x = random_crop(k1, x, crop_padding)
  if flip:
    x = random_flip(k2, x)
  return x


def queries(x: jax.Array, kind: str) -> jax.Array:
  """x [B, ...] -> [Q, B, ...]: 'none' gives Q=1; 'mirror' (images only) adds the mirror, Q=2."""
  if kind == "mirror" and x.ndim == 4:
    return jnp.stack([x, x[:, :, ::-1, :]])
  return x[None]


QUERY_KINDS = ("none", "mirror")
