"""The DP-SGD privatiser: Gaussian noise on the clipped sum, as an optax transformation.

`gaussian_privatizer(noise_multiplier=sigma, l2_sensitivity=C, expected_batch_size=B)` is an
optax.GradientTransformationExtraArgs; a DP optimiser is `optax.chain(privatizer, tx)` (chain
forwards the `noise_key` extra argument to it and drops it for transformations without extra
arguments). Its update maps the sum of clipped per-example gradients g to

    (g + N(0, (sigma C)^2 I)) / B,

noise keyed by fold_in(noise_key, count), where count is the privatiser's own step counter
(its state). Privacy guarantee: g has L2 sensitivity C (add/remove one example; see
clipping.clipped_grad), so this is the Gaussian mechanism with noise multiplier sigma that
mia_jax.privacy.accounting accounts for; B is the public expected batch size, never the
realised one (which depends on the data).

Where mia_jax departs from jax_privacy's `gaussian_privatizer(stddev=, prng_key=)` (a
`matrix_factorization_privatizer` with the identity matrix), and why:
- keys: its state is a key, split every step. Here the state is the step count and the key
  comes with each update (`noise_key`): the trainer derives one key per (model, step) and the
  DP step folds a noise stream into it, so the noise is a pure function of (key, step), a
  resumed run redraws exactly the noise it would have drawn, no key lives in the checkpoint,
  and the ensemble vmaps one privatiser over its models' keys (vmapped noise equals per-model
  noise, tested). Folding the count in as well keeps the noise fresh every step even for a
  caller that passes one fixed key.
- the division by B happens here (jax_privacy's clipping does it with `normalize_by`), so the
  generator, the sum and the division are one fused pass per leaf.
- correlated noise (matrix factorisation) is not offered: the accountants here assume i.i.d.
  Gaussian noise per step.

The generator, written by hand because jax.random on a CPU runs Threefry-2x32 as a rolled
loop that XLA cannot fuse (timings: experiments/results/bench_dp.md). Leaf i of the pytree gets
the key fold_in(step key, i) (the same derivation as jax.random.fold_in, tested). Values 2b and
2b + 1 of the leaf (row-major) are the Box-Muller pair of block b, the two 32-bit words
(w0, w1) of Threefry-2x32 (the 20-round cipher of jax.random; known-answer tested) at counter
(0, b) under the leaf key:

    (z_2b, z_2b+1) = sqrt(-2 log(1 - U(w0))) * (cos, sin)(2 pi U(w1)),  U(w) = (w >> 9) / 2^23,

i.i.d. N(0, 1) for independent uniforms, with 23 random bits each (the float32 mantissa; 1 - U
is in (0, 1], so the log is finite). |z| <= 5.64: a tail cut at probability 2^-23, like
jax.random.normal's float32 erf_inv. sin/cos: exact reduction by symmetry to [0, pi/2] and a
degree-14 Taylor polynomial, error < 2e-7 over all 2^23 inputs (XLA's own sin/cos are scalar
calls on CPU). Everything is elementwise jnp code, so XLA fuses the cipher, the transform and
(g + sigma C z) / B into one vectorised loop per leaf, split over the cores. Two layout choices
keep it so: a leaf is viewed as [rows, cols / 2, 2] (the Box-Muller pair on a trailing axis of
size 2, so the compiled loop computes each block once for both values), and it is produced as
the concatenation of its two row halves, which XLA materialises once instead of recomputing the
generator inside each of the optimiser's consumers (lax.optimization_barrier does not help:
XLA's CPU pipeline drops it).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_ONE = np.uint32(0x3F800000)  # float32 1.0


def _threefry2x32(k0, k1, x0, x1):
  """Threefry-2x32, 20 rounds (Salmon et al. 2011), unrolled; as jax's threefry2x32_p."""
  ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def _key_data(key: jax.Array) -> jax.Array:
  """uint32[2] Threefry key data of a typed or raw key."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(key)) == "threefry2x32":
      return jax.random.key_data(key)
    return jax.random.bits(key, (2,), jnp.uint32)  # another generator: derive a Threefry key
  if key.dtype != jnp.uint32 or key.shape != (2,):
    raise TypeError(f"expected a jax.random key or uint32[2] key data, got {key.dtype}{key.shape}")
  return key


def _fold_in(key_words: jax.Array, data) -> jax.Array:
  """Key data of jax.random.fold_in(key, data), for uint32 data of any shape: [..., 2]."""
  data = jnp.asarray(data, jnp.uint32)
  w0, w1 = _threefry2x32(key_words[0], key_words[1], jnp.zeros_like(data), data)
  return jnp.stack([w0, w1], -1)


def _unit(bits: jax.Array) -> jax.Array:
  """float32 in [0, 1) from the top 23 bits."""
  return jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | _ONE, jnp.float32) - np.float32(1)


_COS_TAYLOR = [np.float32((-1) ** k / np.prod(np.arange(1.0, 2 * k + 1))) for k in range(8)]


def _cos_2pi(u: jax.Array) -> jax.Array:
  """cos(2 pi u) for float32 u = m / 2^23 in [-1/4, 1), to within 2e-7 (all values tested)."""
  t = jnp.abs(u - jnp.round(u))                   # [0, 1/2]: cos is even and 1-periodic
  flip = t > np.float32(0.25)
  t = jnp.where(flip, np.float32(0.5) - t, t)     # cos(2 pi t) = -cos(2 pi (1/2 - t))
  x = t * np.float32(2 * np.pi)                   # [0, pi/2]
  x2 = x * x
  c = _COS_TAYLOR[-1]
  for a in _COS_TAYLOR[-2::-1]:
    c = c * x2 + a
  return jnp.where(flip, -c, c)


def _standard_normal(key_words: jax.Array, shape: tuple[int, ...], row0: int = 0) -> jax.Array:
  """float32 N(0, 1) of shape [rows, cols] or [rows, cols / 2, 2]: the row-major values
  k = row0 * cols + (0 .. rows * cols - 1) of the stream of the key words key_words (uint32 [2]).

  Value k is Box-Muller output (k mod 2) of Threefry block k // 2. In the 3-d shape the pair
  of a block is the trailing axis and the block index a function of the other axes only; XLA's
  CPU code then computes each block once for both values (about 25% less time than one value
  per block, as the 2-d shape gets). A reshape inside the fusion undoes that, so callers
  combine the noise with a gradient viewed in the same shape.
  """
  iota = lambda d: jax.lax.broadcasted_iota(jnp.uint32, shape, d)
  if len(shape) == 3:
    block = (iota(0) + np.uint32(row0)) * np.uint32(shape[1]) + iota(1)
    phase = iota(2)
  else:
    k = (iota(0) + np.uint32(row0)) * np.uint32(shape[1]) + iota(1)
    block, phase = k >> np.uint32(1), k & np.uint32(1)
  w0, w1 = _threefry2x32(key_words[0], key_words[1], jnp.zeros_like(block), block)
  r = jnp.sqrt(np.float32(-2) * jnp.log(np.float32(1) - _unit(w0)))
  # r cos(theta - phase pi/2): r cos(theta) and r sin(theta), theta = 2 pi U(w1)
  return r * _cos_2pi(_unit(w1) - jnp.where(phase == 0, np.float32(0), np.float32(0.25)))


def _map_noise(key: jax.Array, tree: Any, stddev, combine) -> Any:
  """combine(leaf, N(0, stddev^2) noise shaped like leaf) for every leaf, in one fused pass each.

  Leaf i draws from key data fold_in(key, i), so leaves are independent. A leaf is viewed as
  [rows, cols] (cols = its last dimension; a vector as 2 rows when its size is even), and as
  [rows, cols / 2, 2] when cols is even and rows >= 4 (see _standard_normal), and produced as the
  concatenation of its two row halves: that makes XLA materialise the result once instead of
  recomputing the generator inside each consumer (see the module docstring).
  """
  leaves, treedef = jax.tree.flatten(tree)
  if not leaves:
    return tree
  keys = _fold_in(_key_data(key), jnp.arange(len(leaves), dtype=jnp.uint32))
  out = []
  for i, v in enumerate(leaves):
    shape, n = jnp.shape(v), int(np.prod(jnp.shape(v)))
    if n >= 2**32:
      raise ValueError(f"a leaf of {n} values is too large for 32-bit noise counters")
    if n == 0:
      out.append(v)
      continue
    cols = shape[-1] if len(shape) > 1 else (n // 2 if n % 2 == 0 else n)
    rows = n // cols
    # (with a single row in a half, XLA's algebraic simplifier cycles on the 3-d view)
    view = (rows, cols // 2, 2) if cols % 2 == 0 and rows >= 4 else (rows, cols)
    v2 = jnp.reshape(v, view)

    def fill(r0, r1, v2=v2, k=keys[i], view=view):
      z = _standard_normal(k, (r1 - r0,) + view[1:], r0)
      return combine(v2[r0:r1], stddev * z).astype(v2.dtype)

    half = rows // 2
    o = jnp.concatenate([fill(0, half), fill(half, rows)]) if half else fill(0, rows)
    out.append(o.reshape(shape))
  return jax.tree.unflatten(treedef, out)


class PrivatizerState(NamedTuple):
  """The privatiser's state: count, the int32 number of updates so far (the noise's step)."""
  count: jax.Array


def gaussian_privatizer(*, noise_multiplier: float, l2_sensitivity: float,
                        expected_batch_size: float) -> optax.GradientTransformationExtraArgs:
  """The Gaussian privatiser: update(g, state, params=None, *, noise_key) -> ((g + z) / B, state').

  Args:
    noise_multiplier: sigma (the accountant's); 0 adds no noise (dp.fault='no_noise' only).
    l2_sensitivity: C, the clipped sum's L2 sensitivity (clipping.ClippedGrad.l2_sensitivity
      of a correct step; the claimed clip norm).
    expected_batch_size: B = q * n, a public constant.

  Returns:
    An optax.GradientTransformationExtraArgs. init(params) -> PrivatizerState(count=0);
    update(grad_sum, state, params=None, *, noise_key, **ignored) adds z ~ N(0, (sigma C)^2 I)
    drawn from fold_in(noise_key, state.count), divides by B, and counts the step. grad_sum is
    any pytree (the sum of clipped per-example gradients); the output is shaped and typed
    like it. noise_key: a jax.random key (typed or raw uint32[2]) used for nothing else.

  Example:
    >>> tx = optax.chain(gaussian_privatizer(noise_multiplier=1.0, l2_sensitivity=1.0,
    ...                                      expected_batch_size=32.0), optax.sgd(0.1))
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params, noise_key=jax.random.key(0))
    >>> updates["w"].shape, int(state[0].count)
    ((3,), 1)
  """
  stddev = noise_multiplier * l2_sensitivity

  def init_fn(params):
    del params
    return PrivatizerState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, noise_key=None, **extra_args):
    del params, extra_args
    if isinstance(noise_multiplier, (int, float)) and noise_multiplier == 0:
      noisy = jax.tree.map(lambda g: g / expected_batch_size, updates)
    elif noise_key is None:
      raise ValueError("gaussian_privatizer.update needs noise_key=<a fresh key per model>")
    else:
      key_words = _fold_in(_key_data(noise_key), state.count.astype(jnp.uint32))
      noisy = _map_noise(key_words, updates, stddev, lambda g, z: (g + z) / expected_batch_size)
    return noisy, PrivatizerState(count=state.count + 1)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
