"""Data augmentation inside jit, drawn per example: random crop with padding, horizontal flip.

Also the query set of an audit (`queries`): the image alone, the image and its horizontal
mirror (as LiRA queries), or the grid that matches the training augmentation ('augment': the
image shifted by 0 and +-crop_padding pixels along each axis, each also mirrored when training
flips), so that an attacker queries a model trained with augmentation on the views it was
trained on (Carlini et al. 2022, Sec. VI-B: augmented queries raise LiRA's power).
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


def shift(x: jax.Array, dy: int, dx: int, padding: int) -> jax.Array:
  """x [B, H, W, C] shifted by (dy, dx) pixels, |dy|, |dx| <= padding: the window of the
  reflect-padded image that random_crop takes at offset (padding + dy, padding + dx)."""
  if padding <= 0 or (dy == 0 and dx == 0):
    return x
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
  return padded[:, padding + dy:padding + dy + h, padding + dx:padding + dx + w, :]


def augment_offsets(crop_padding: int) -> list[tuple[int, int]]:
  """The shifts of the 'augment' query grid: (0, 0), then (+-p, 0) and (0, +-p) for p > 0."""
  p = int(crop_padding)
  return [(0, 0)] + ([(-p, 0), (p, 0), (0, -p), (0, p)] if p > 0 else [])


def queries(x: jax.Array, kind: str, crop_padding: int = 0, flip: bool = False) -> jax.Array:
  """x [B, ...] -> [Q, B, ...]; query 0 is always the example itself.

    none     Q = 1
    mirror   the image and its mirror, Q = 2 (images only; tabular inputs get Q = 1)
    augment  the views of the training augmentation (images only): shifts by
             augment_offsets(crop_padding), each followed by its mirror when `flip`:
             Q = (5 if crop_padding > 0 else 1) * (2 if flip else 1)
  """
  if kind not in QUERY_KINDS:
    raise ValueError(f"unknown query kind {kind!r}; choose one of {list(QUERY_KINDS)}")
  if x.ndim != 4 or kind == "none":
    return x[None]
  if kind == "mirror":
    return jnp.stack([x, x[:, :, ::-1, :]])
  views = []
  for dy, dx in augment_offsets(crop_padding):
    v = shift(x, dy, dx, int(crop_padding))
    views.append(v)
    if flip:
      views.append(v[:, :, ::-1, :])
  return jnp.stack(views)


QUERY_KINDS = ("none", "mirror", "augment")
