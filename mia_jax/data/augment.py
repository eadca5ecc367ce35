"""Data augmentation inside jit, drawn per example: random crop with padding, horizontal flip.

Also the query set of an audit (`queries`). The default kind, 'train', is the views the models
were trained on: the example alone when training neither flips nor crops, the example and its
mirror when training flips, the augmentation's grid when it crops. Querying views a model never
trained on (a mirror for a model trained without flips) dilutes every attack's signal and the
canary audit's bound, so any other kind is an explicit choice: 'none' (the example alone),
'mirror' (the example and its horizontal mirror, LiRA's two queries, whatever the training did)
or 'augment' (the grid of the training augmentation: shifts by 0 and +-crop_padding pixels
along each axis, each also mirrored when training flips; Carlini et al. 2022, Sec. VI-B:
augmented queries raise LiRA's power). The grid is 5 of the (2p+1)^2 windows random_crop draws,
so every query is a training view but not every training view is queried.
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


def resolve(kind: str, crop_padding: int = 0, flip: bool = False, image: bool = True) -> str:
  """The concrete query kind: 'train' becomes 'augment' when training crops, 'mirror' when it
  only flips and 'none' otherwise (always 'none' for inputs that are not images, which are
  never augmented); any other kind is returned as it is."""
  if kind not in QUERY_KINDS:
    raise ValueError(f"unknown query kind {kind!r}; choose one of {list(QUERY_KINDS)}")
  if not image:
    return "none"
  if kind != "train":
    return kind
  if int(crop_padding) > 0:
    return "augment"
  return "mirror" if flip else "none"


def view_names(kind: str, crop_padding: int = 0, flip: bool = False,
               image: bool = True) -> list[str]:
  """Names of the Q views `queries` returns, in its order: 'image', 'mirror', 'shift(dy,dx)'
  and 'shift(dy,dx)+mirror'."""
  kind = resolve(kind, crop_padding, flip, image)
  if kind == "none":
    return ["image"]
  if kind == "mirror":
    return ["image", "mirror"]
  names = []
  for dy, dx in augment_offsets(crop_padding):
    name = "image" if (dy, dx) == (0, 0) else f"shift({dy},{dx})"
    names.append(name)
    if flip:
      names.append("mirror" if name == "image" else f"{name}+mirror")
  return names


def queries(x: jax.Array, kind: str, crop_padding: int = 0, flip: bool = False) -> jax.Array:
  """x [B, ...] -> [Q, B, ...]; query 0 is always the example itself.

    train    the views the models trained on, given the training's crop_padding and flip:
             as 'augment' when crop_padding > 0, as 'mirror' when only flip, else as 'none'
    none     Q = 1
    mirror   the image and its mirror, Q = 2 (images only; tabular inputs get Q = 1)
    augment  the views of the training augmentation (images only): shifts by
             augment_offsets(crop_padding), each followed by its mirror when `flip`:
             Q = (5 if crop_padding > 0 else 1) * (2 if flip else 1)
  """
  kind = resolve(kind, crop_padding, flip, image=x.ndim == 4)
  if kind == "none":
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


QUERY_KINDS = ("train", "none", "mirror", "augment")
