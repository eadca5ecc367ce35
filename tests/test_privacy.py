"""Property tests for mia_jax.privacy clipping and noise (tiny models; accounting, sampling and
auditing are in test_privacy_accounting.py)."""

import functools
from unittest import mock

import dp_accounting
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from mia_jax import privacy
from mia_jax.errors import ConfigError
from mia_jax.privacy import ghost, noise
from mia_jax.models.cnn import CNN
from mia_jax.models.mlp import MLP
from mia_jax.training import losses

CLIP_NORMS = (0.05, 1.0, 1e4)  # all clipped, some clipped, none clipped


def _model(name):
  if name == "mlp":
    return MLP(hidden=(16, 8), num_classes=5, activation="tanh"), (8, 12), 5
  if name == "cnn_group":
    return CNN(channels=(4, 8), num_classes=3, dense=16, norm="group"), (6, 8, 8, 1), 3
  return CNN(channels=(4,), num_classes=3, dense=0, norm="layer"), (5, 6, 6, 2), 3


def _random_params(model, x, seed=0):
  """Random parameters of the right shapes without compiling the model's init (slow on CPU)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  return jax.tree_util.tree_map_with_path(
      lambda path, s: jnp.asarray(
          (1.0 if path[-1].key == "scale" else 0.0) + rng.normal(size=s.shape) * (
              0.1 if len(s.shape) < 2 else 1.0 / np.sqrt(np.prod(s.shape[:-1]))),
          jnp.float32), shapes)


def _logits_fn(model):
  """(params, x, rng) -> logits of a flax model in training mode; rng feeds dropout."""
  return lambda p, x, rng: model.apply(
      {"params": p}, x, train=True, rngs={} if rng is None else {"dropout": rng})


def _clipped(apply_fn, params, x, y, mask, *, clip_norm, rng=None, loss_fn=None, **kw):
  """The clipped sum and aux of clipped_grad(loss_fn (cross entropy), clip_norm, **kw)."""
  loss_fn = losses.softmax_cross_entropy if loss_fn is None else loss_fn
  grad_fn = privacy.clipped_grad(loss_fn, clip_norm=clip_norm, **kw)
  return grad_fn(apply_fn, params, (x, y, mask), rng)


@functools.lru_cache(maxsize=None)
def _setup(name):
  model, shape, k = _model(name)
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  y = jnp.arange(shape[0]) % k
  params = _random_params(model, x)
  apply_fn = _logits_fn(model)
  fns = {  # the clip norm traced: one compilation for every C
      m: jax.jit(lambda p, x, mask, c, m=m: _clipped(apply_fn, p, x, y, mask, clip_norm=c,
                                                     method=m))
      for m in ("fast", "reference")}
  return params, x, y, apply_fn, fns


def _assert_tree_close(a, b, rtol=2e-5):
  """Leafwise |a - b| <= rtol * (largest |b| over the whole tree) + 1e-7."""
  scale = max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(b))
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=0, atol=rtol * scale + 1e-7),
               a, b)


def _tree_norm(t):
  return float(jnp.sqrt(sum(jnp.sum(v.astype(jnp.float32) ** 2) for v in jax.tree.leaves(t))))


@pytest.mark.parametrize("name", ["mlp", "cnn_group"])
def test_fast_matches_reference(name):
  params, x, y, apply_fn, fns = _setup(name)
  mask = jnp.ones(x.shape[0]).at[-1].set(0.0)
  for c in CLIP_NORMS:
    fast, aux_f = fns["fast"](params, x, mask, c)
    ref, aux_r = fns["reference"](params, x, mask, c)
    _assert_tree_close(fast, ref)
    np.testing.assert_allclose(aux_f.grad_norms, aux_r.grad_norms, rtol=1e-4)
    np.testing.assert_allclose(aux_f.losses, aux_r.losses, rtol=1e-5)
    assert _tree_norm(fast) <= c * float(mask.sum()) * (1 + 1e-5)
  if name == "mlp":  # with nothing clipped, the sum is the gradient of the masked summed loss
    plain = jax.jit(jax.grad(
        lambda p: jnp.sum(mask * losses.softmax_cross_entropy(apply_fn(p, x, None), y))))(params)
    _assert_tree_close(fns["fast"](params, x, mask, 1e4)[0], plain)


class _TwoLayer(nn.Module):
  """A user's own flax module (no `train` argument): tanh hidden layer, linear output."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(5, name="out")(jnp.tanh(nn.Dense(7, name="hidden")(x)))


def _squared_error(logits, labels):
  return jnp.sum((logits - jax.nn.one_hot(labels, logits.shape[-1])) ** 2, axis=-1)


def _smoothed_xent(logits, labels):
  return losses.softmax_cross_entropy(logits, labels, label_smoothing=0.2)


def _float64_clipped_sum(params, x, y, mask, loss_name, clip_norm):
  """sum_i mask_i clip_C(g_i) of _TwoLayer by hand-written backpropagation in float64 numpy."""
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
  x = np.asarray(x, np.float64)
  h = np.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])          # [B, 7]
  z = h @ p["out"]["kernel"] + p["out"]["bias"]                          # [B, 5]
  onehot = np.eye(5)[np.asarray(y)]
  if loss_name == "squared_error":
    dz = 2 * (z - onehot)
  else:  # label-smoothed softmax cross entropy: softmax(z) - smoothed targets
    e = np.exp(z - z.max(axis=1, keepdims=True))
    dz = e / e.sum(axis=1, keepdims=True) - (0.8 * onehot + 0.2 / 5)
  dh = (dz @ p["out"]["kernel"].T) * (1 - h ** 2)
  per_example = {"hidden": {"kernel": np.einsum("bi,bo->bio", x, dh), "bias": dh},
                 "out": {"kernel": np.einsum("bi,bo->bio", h, dz), "bias": dz}}
  norms = np.sqrt(sum(np.sum(v.reshape(len(x), -1) ** 2, axis=1)
                      for v in jax.tree.leaves(per_example)))
  w = np.asarray(mask, np.float64) * np.minimum(1.0, clip_norm / norms)
  return jax.tree.map(lambda v: np.tensordot(w, v, axes=1), per_example), norms


@pytest.mark.parametrize("loss_name", ["squared_error", "smoothed_xent"])
def test_clipped_sum_of_any_loss_matches_float64(loss_name):
  """Any per-example loss on any flax module: both methods equal float64 backpropagation."""
  model = _TwoLayer()
  x = jnp.asarray(np.random.default_rng(4).normal(size=(9, 6)), jnp.float32)
  y = jnp.arange(9) % 5
  params = _random_params(model, x, seed=2)
  apply_fn = lambda p, x, rng: model.apply({"params": p}, x)
  loss_fn = {"squared_error": _squared_error, "smoothed_xent": _smoothed_xent}[loss_name]
  mask = jnp.ones(9).at[4].set(0.0)
  _, norms = _float64_clipped_sum(params, x, y, mask, loss_name, np.inf)
  c = float(np.median(norms))              # some examples clipped, some not
  want, _ = _float64_clipped_sum(params, x, y, mask, loss_name, c)
  for method in ("fast", "reference"):
    grad_fn = privacy.clipped_grad(loss_fn, clip_norm=c, method=method)
    total, aux = jax.jit(lambda p, g=grad_fn: g(apply_fn, p, (x, y, mask)))(params)
    _assert_tree_close(total, want, rtol=1e-5)
    np.testing.assert_allclose(aux.grad_norms, norms, rtol=1e-5)
    np.testing.assert_allclose(aux.losses, loss_fn(apply_fn(params, x, None), y), rtol=1e-6)


def test_clipped_grad_states_its_sensitivity():
  """The transform carries C (add/remove one; 2C replace one), as jax_privacy's callable does,
  and the sum obeys it: replacing one example by another moves it by at most 2C."""
  grad_fn = privacy.clipped_grad(losses.softmax_cross_entropy, clip_norm=0.25)
  assert grad_fn.l2_sensitivity == 0.25 == grad_fn.sensitivity()
  assert grad_fn.sensitivity(dp_accounting.NeighboringRelation.REPLACE_ONE) == 0.5
  params, x, y, apply_fn, _ = _setup("mlp")
  mask = jnp.ones(x.shape[0])
  total = grad_fn(apply_fn, params, (x, y, mask))[0]
  other = -3.0 * x[0]
  replaced = grad_fn(apply_fn, params, (x.at[1].set(other), y.at[1].set(y[0] + 1), mask))[0]
  diff = _tree_norm(jax.tree.map(jnp.subtract, total, replaced))
  assert 0.25 < diff <= 0.5 * (1 + 1e-5)


def test_conv_norm_variants_agree():
  """Ghost-norm Gram, im2col patches and batched-conv (vmap) paths; LayerNorm model."""
  params, x, y, apply_fn, fns = _setup("cnn_layer")
  mask = jnp.ones(x.shape[0])
  ref = fns["reference"](params, x, mask, 0.5)[0]
  _assert_tree_close(fns["fast"](params, x, mask, 0.5)[0], ref)  # auto = patches here
  for conv_norm in ("ghost", "vmap"):
    out, _ = jax.jit(lambda p, cn=conv_norm: _clipped(
        apply_fn, p, x, y, mask, clip_norm=0.5, conv_norm=cn))(params)
    _assert_tree_close(out, ref)


class _GroupNorms(nn.Module):
  """GroupNorm in the settings fast clipping handles itself: on [B, T, C] and [B, C] inputs, by
  group count or group size, without scale, with exact variance."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    h = nn.Dense(12)(x).reshape(x.shape[0], 3, 4)
    h = nn.GroupNorm(num_groups=2)(h)
    h = nn.GroupNorm(num_groups=None, group_size=2, use_scale=False)(h.reshape(x.shape[0], 12))
    h = nn.GroupNorm(num_groups=3, use_fast_variance=False, epsilon=1e-3)(jnp.tanh(h))
    return nn.Dense(3)(h)


@pytest.mark.slow
def test_group_norm_sites_match_reference():
  """GroupNorm's per-example scale and bias gradients (sums over positions of delta * xhat and
  delta) against per-example gradients by vmap, and the rule is the one taken."""
  model = _GroupNorms()
  x = jnp.asarray(np.random.default_rng(2).normal(size=(7, 5)) * 2 + 1, jnp.float32)
  y = jnp.arange(7) % 3
  params = _random_params(model, x, seed=3)
  apply_fn = _logits_fn(model)
  mask = jnp.ones(7).at[2].set(0.0)
  kinds = []
  real = ghost._site_kind
  with mock.patch.object(ghost, "_site_kind", lambda *a: kinds.append(real(*a)) or kinds[-1]):
    for c in CLIP_NORMS:
      fast, aux_f = _clipped(apply_fn, params, x, y, mask, clip_norm=c)
      ref, aux_r = _clipped(apply_fn, params, x, y, mask, clip_norm=c, method="reference")
      _assert_tree_close(fast, ref)
      np.testing.assert_allclose(aux_f.grad_norms, aux_r.grad_norms, rtol=1e-4)
  assert kinds.count("group_norm") == 3 * len(CLIP_NORMS) and "generic" not in kinds


def test_fast_under_vmap_over_models():
  """The trainer vmaps the whole step over a leading model axis of params."""
  model, _, _ = _model("mlp")
  params, x, y, apply_fn, fns = _setup("mlp")
  stacked = jax.tree.map(lambda *v: jnp.stack(v),
                         *[_random_params(model, x, seed) for seed in (5, 6)])
  mask = jnp.ones(x.shape[0])
  out, aux = jax.jit(jax.vmap(lambda p: _clipped(apply_fn, p, x, y, mask, clip_norm=0.3)))(
      stacked)
  for m in range(2):
    one = jax.tree.map(lambda v, m=m: v[m], stacked)
    _assert_tree_close(jax.tree.map(lambda v, m=m: v[m], out),
                       fns["reference"](one, x, mask, 0.3)[0])
  assert aux.grad_norms.shape == (2, x.shape[0])


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_one_example_moves_sum_by_at_most_c(method):
  params, x, y, _, fns = _setup("cnn_group")
  full = jnp.ones(x.shape[0])
  for c in (0.05, 1.0):
    total = fns[method](params, x, full, c)[0]
    for j in range(x.shape[0]):
      without = fns[method](params, x, full.at[j].set(0.0), c)[0]
      diff = _tree_norm(jax.tree.map(jnp.subtract, total, without))
      sensitivity = privacy.clipped_grad(losses.softmax_cross_entropy, clip_norm=c,
                                         method=method).l2_sensitivity
      assert diff <= sensitivity * (1 + 1e-4), (j, diff)
  # Padding contributes nothing whatever its contents.
  mask = full.at[0].set(0.0)
  garbage = x.at[0].set(1e6)
  _assert_tree_close(fns[method](params, garbage, mask, 1.0)[0],
                     fns[method](params, x, mask, 1.0)[0], rtol=1e-6)


def test_non_finite_example_contributes_zero():
  params, x, y, _, fns = _setup("mlp")
  mask = jnp.ones(x.shape[0])
  bad = x.at[2].set(jnp.nan)
  out, aux = fns["fast"](params, bad, mask, 1.0)
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(out))
  _assert_tree_close(out, fns["fast"](params, x, mask.at[2].set(0.0), 1.0)[0])


def test_fast_with_dropout_matches_per_example_jacobian():
  """Same dropout key: fast clipping equals clipping the rows of the per-example Jacobian."""
  model = MLP(hidden=(16, 8), num_classes=5, activation="tanh", dropout=0.5)
  x = jax.random.normal(jax.random.key(1), (8, 12))
  y = jnp.arange(8) % 5
  params = _random_params(model, x)
  apply_fn, key, c = _logits_fn(model), jax.random.key(7), 0.3
  out, aux = jax.jit(lambda p: _clipped(apply_fn, p, x, y, jnp.ones(8), clip_norm=c,
                                        rng=key))(params)
  jac = jax.jit(jax.jacrev(lambda p: losses.softmax_cross_entropy(apply_fn(p, x, key), y)))(params)
  norms = jnp.sqrt(sum(jnp.sum(v.reshape(8, -1) ** 2, axis=1) for v in jax.tree.leaves(jac)))
  w = jnp.minimum(1.0, c / norms)
  _assert_tree_close(out, jax.tree.map(lambda v: jnp.tensordot(w, v, axes=1), jac))
  np.testing.assert_allclose(aux.grad_norms, norms, rtol=1e-4)
  ref, _ = jax.jit(lambda p: _clipped(apply_fn, p, x, y, jnp.ones(8), clip_norm=c,
                                      method="reference", rng=key, microbatch_size=4))(params)
  assert _tree_norm(ref) <= 8 * c * (1 + 1e-5)


def test_batch_norm_refused():
  model = CNN(channels=(4,), num_classes=3, dense=0, norm="batch")
  x = jnp.ones((2, 8, 8, 1))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  variables = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), variables)
  with pytest.raises(ConfigError, match="norm=group"):
    privacy.check_dp_compatible(variables)
  apply_fn = _logits_fn(model)
  for method in ("fast", "reference"):
    with pytest.raises(ConfigError, match="BatchNorm"):
      _clipped(apply_fn, variables["params"], x, jnp.zeros(2, jnp.int32), jnp.ones(2),
               clip_norm=1.0, method=method)


def test_bad_arguments_raise_config_error():
  params, x, y, apply_fn, _ = _setup("mlp")
  mask = jnp.ones(x.shape[0])
  for kwargs in ({"method": "ghostly"}, {"clip_norm": 0.0}, {"clip_norm": -1.0},
                 {"microbatch_size": 3}, {"conv_norm": "fft"}):
    kw = {"clip_norm": 1.0, **kwargs}
    with pytest.raises(ConfigError):
      _clipped(apply_fn, params, x, y, mask, **kw)


def _privatize(grad_sum, key, *, step, sigma, c, batch):
  """The gaussian_privatizer's update of grad_sum at its step `step` (its state's count)."""
  privatizer = privacy.gaussian_privatizer(noise_multiplier=sigma, l2_sensitivity=c,
                                           expected_batch_size=batch)
  state = privacy.PrivatizerState(count=jnp.asarray(step, jnp.int32))
  noisy, new_state = privatizer.update(grad_sum, state, noise_key=key)
  assert new_state.count.dtype == jnp.int32
  return noisy


@functools.partial(jax.jit, static_argnames="n")
def _noise(key, step, n=300_000, sigma=0.7, c=2.0, batch=1.0):
  zeros = {"a": jnp.zeros((n // 2,)), "b": jnp.zeros((n // 4, 2))}
  out = _privatize(zeros, key, step=step, sigma=sigma, c=c, batch=batch)
  return jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(out)])


def test_noise_std_is_sigma_c_over_batch():
  z = np.asarray(_noise(jax.random.key(0), 0), np.float64)
  assert abs(z.std() - 1.4) < 0.015 and abs(z.mean()) < 0.015
  assert stats.kstest(z / 1.4, "norm").pvalue > 1e-3
  z = np.asarray(_noise(jax.random.key(0), 1, batch=10.0))
  assert abs(z.std() - 0.14) < 0.0015


def test_noise_moments_are_gaussian():
  """Mean, variance, skewness, excess kurtosis, tail mass and lag-1 correlation of 1.2M draws
  (float64 statistics, bounds at about 5 standard errors)."""
  n = 1_200_000
  z = np.asarray(_noise(jax.random.key(11), 5, n=n, sigma=1.0, c=1.0), np.float64)
  se = 1 / np.sqrt(n)
  assert abs(z.mean()) < 5 * se
  assert abs(z.var() - 1) < 5 * np.sqrt(2) * se
  assert abs(stats.skew(z)) < 5 * np.sqrt(6) * se
  assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24) * se
  p3 = 2 * stats.norm.sf(3)
  assert abs(np.mean(np.abs(z) > 3) - p3) < 5 * np.sqrt(p3 * (1 - p3) / n)
  assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 * se
  assert stats.kstest(z, "norm").pvalue > 1e-3
  assert np.isfinite(z).all() and np.abs(z).max() < 5.7  # Box-Muller with 23-bit uniforms


def _threefry_np(key, x0, x1):
  """Threefry-2x32-20 in numpy (uint32 arithmetic wraps)."""
  rot = lambda v, r: (v << np.uint32(r)) | (v >> np.uint32(32 - r))
  with np.errstate(over="ignore"):
    k = [np.uint32(key[0]), np.uint32(key[1])]
    k.append(k[0] ^ k[1] ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + k[0], x1 + k[1]
    for i in range(5):
      for r in ((13, 15, 26, 6), (17, 29, 16, 24))[i % 2]:
        x0 = x0 + x1
        x1 = x0 ^ rot(x1, r)
      x0, x1 = x0 + k[(i + 1) % 3], x1 + k[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def test_noise_matches_float64_reference():
  """Values 2b, 2b + 1 (row-major) of leaf i: the Box-Muller pair (r cos, r sin) of the two
  words of Threefry-2x32 under the key fold_in(fold_in(key, step), i) at counter (0, b),
  recomputed in numpy float64; leaves with even and odd last dimensions and sizes."""
  words = lambda k, c: [hex(int(w)) for w in _threefry_np(k, *map(np.uint32, c))]
  # Known-answer vectors of Threefry-2x32-20 (Random123; also in jax's tests).
  assert words([0, 0], [0, 0]) == ["0x6b200159", "0x99ba4efe"]
  assert words([2**32 - 1] * 2, [2**32 - 1] * 2) == ["0x1cb996fc", "0xbb002be7"]
  assert words([0x13198a2e, 0x03707344], [0x243f6a88, 0x85a308d3]) == ["0xc4923a9c", "0x483df7a0"]
  key, step, sigma, batch = jax.random.key(7), 12, 0.8, 4.0
  grads = {"b": jnp.linspace(-1, 1, 7), "c": jnp.ones((4, 9)), "s": jnp.float32(2.0),
           "v": jnp.ones(12), "w": jnp.ones((5, 3, 6))}
  out = jax.jit(lambda g: _privatize(g, key, step=step, sigma=sigma, c=1.5, batch=batch))(grads)
  sk = jax.random.fold_in(key, step)
  for i, name in enumerate(sorted(grads)):  # pytree leaf order
    g = np.asarray(grads[name], np.float64)
    kd = np.asarray(jax.random.key_data(jax.random.fold_in(sk, i)))
    k = np.arange(g.size, dtype=np.uint32)
    w0, w1 = _threefry_np(kd, np.zeros(g.size, np.uint32), k >> np.uint32(1))
    u0, u1 = (w0 >> np.uint32(9)) / 2.0**23, (w1 >> np.uint32(9)) / 2.0**23
    r, theta = np.sqrt(-2 * np.log1p(-u0)), 2 * np.pi * u1
    z = np.where(k % 2 == 0, r * np.cos(theta), r * np.sin(theta)).reshape(g.shape)
    np.testing.assert_allclose(out[name], (g + sigma * 1.5 * z) / batch, rtol=1e-5, atol=2e-6)
  # The module's key derivation is jax.random.fold_in's.
  kd = jax.random.key_data(key)
  np.testing.assert_array_equal(noise._fold_in(kd, jnp.arange(4, dtype=jnp.uint32)), np.stack(
      [jax.random.key_data(jax.random.fold_in(key, d)) for d in range(4)]))


def test_noise_is_fresh_every_step_and_reproducible():
  key = jax.random.key(3)
  fn = jax.jit(lambda s: _privatize(jnp.zeros(4000), key, step=s, sigma=1.0, c=1.0, batch=1))
  draws = np.stack([np.asarray(fn(s)) for s in range(20)])
  corr = np.corrcoef(draws) - np.eye(20)
  assert np.abs(corr).max() < 0.1  # no two steps share noise
  np.testing.assert_array_equal(draws[7], np.asarray(fn(7)))  # a resumed run redraws step 7
  keys = jax.vmap(lambda s: noise._fold_in(noise._key_data(key), s))(jnp.arange(10_000))
  assert len(np.unique(np.asarray(keys), axis=0)) == 10_000
  # Leaves of one step are independent draws, not copies.
  two = _privatize({"a": jnp.zeros(1000), "b": jnp.zeros(1000)}, key, step=0, sigma=1.0, c=1.0,
                   batch=1.0)
  assert abs(np.corrcoef(two["a"], two["b"])[0, 1]) < 0.15


def test_noise_under_vmap_matches_per_model():
  keys = jax.random.split(jax.random.key(0), 3)
  f = lambda k: _privatize(jnp.zeros((70, 1000)), k, step=4, sigma=1.0, c=1.0,
                           batch=1)  # two row halves
  batched = jax.jit(jax.vmap(f))(keys)
  for m in range(3):
    np.testing.assert_array_equal(batched[m], jax.jit(f)(keys[m]))
  n = batched[0].size
  assert abs(np.corrcoef(np.ravel(batched[0]), np.ravel(batched[1]))[0, 1]) < 5 / np.sqrt(n)
  # Keys and gradients both batched (the trainer's case), odd-sized leaves, a traced step.
  grads = {"b": jnp.arange(3 * 9.0).reshape(3, 9), "w": jnp.ones((3, 7, 5))}
  g = lambda k, t, s: _privatize(t, k, step=s, sigma=0.5, c=2.0, batch=3.0)
  batched = jax.jit(jax.vmap(g, in_axes=(0, 0, None)))(keys, grads, jnp.int32(9))
  for m in range(3):
    one = jax.jit(g)(keys[m], jax.tree.map(lambda v, m=m: v[m], grads), 9)
    jax.tree.map(lambda a, b, m=m: np.testing.assert_allclose(a[m], b, rtol=1e-6, atol=1e-7),
                 batched, one)


def test_privatizer_in_a_chain_is_noise_then_the_users_tx():
  """optax.chain(privatizer, tx) for three steps equals the privatizer's noisy mean gradient
  fed to tx alone, step t drawing the noise of count t; the count is the chain's first state;
  no noise key, no noise: a ValueError (sigma 0 needs none, and only divides by B)."""
  privatizer = privacy.gaussian_privatizer(noise_multiplier=0.8, l2_sensitivity=0.5,
                                           expected_batch_size=4.0)
  tx = optax.adamw(0.1, weight_decay=0.01)
  chain = optax.chain(privatizer, tx)
  params = {"w": jnp.ones((4, 6)), "b": jnp.zeros(6)}
  grads = {"w": jnp.full((4, 6), 0.3), "b": jnp.arange(6.0)}
  key = jax.random.key(9)
  state, tx_state = chain.init(params), tx.init(params)
  update = jax.jit(lambda g, s, p, k: chain.update(g, s, p, noise_key=k))
  alone = jax.jit(lambda g, t: _privatize(g, key, step=t, sigma=0.8, c=0.5, batch=4.0))
  for t in range(3):
    updates, state = update(grads, state, params, key)
    want, tx_state = jax.jit(tx.update)(alone(grads, t), tx_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 updates, want)
    assert int(state[0].count) == t + 1
    params = optax.apply_updates(params, updates)
  with pytest.raises(ValueError, match="noise_key"):
    chain.update(grads, state, params)
  quiet = privacy.gaussian_privatizer(noise_multiplier=0.0, l2_sensitivity=0.5,
                                      expected_batch_size=4.0)
  out, _ = quiet.update(grads, quiet.init(params))
  jax.tree.map(lambda a, g: np.testing.assert_array_equal(a, g / 4.0), out, grads)


@pytest.mark.parametrize("padding,ks", [("SAME", (3, 3)), ("VALID", (3, 3)), ("SAME", (2, 3)),
                                        ("VALID", (1, 2))])
def test_conv_patches_are_lax_patches_in_kernel_order(padding, ks):
  """The ghost norms' patches of a stride-1 conv (kernels.im2col_patches' shifted slices,
  loop-friendly) equal lax's identity-kernel convolution reordered window major (the flax
  kernel's order), SAME's uneven padding of even kernels included, with no convolution in
  their trace."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 6, 3)), jnp.float32)
  patches, _ = ghost._conv_patches(nn.Conv(4, ks, padding=padding), x)
  dn = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                    out_spec=(0, 3, 1, 2))
  ref = jax.lax.conv_general_dilated_patches(x, ks, (1, 1), padding, dimension_numbers=dn,
                                             precision=jax.lax.Precision.HIGHEST)
  ref = ref.reshape(2, -1, 3, ks[0] * ks[1]).swapaxes(2, 3).reshape(2, -1, 3 * ks[0] * ks[1])
  np.testing.assert_array_equal(patches, ref)
  jaxpr = jax.make_jaxpr(lambda v: ghost._conv_patches(nn.Conv(4, ks, padding=padding), v)[0])(x)
  assert not any(e.primitive.name == "conv_general_dilated" for e in jaxpr.jaxpr.eqns)


class _StridedConv(nn.Module):
  """Convolutions ghost clipping takes through lax's patches: strided 2-d, dilated 1-d."""

  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Conv(3, (3, 2), strides=2, padding="SAME")(x))
    h = nn.Conv(2, (3,), kernel_dilation=2, padding="SAME")(h.reshape(h.shape[0], -1, 3))
    return nn.Dense(3)(h.reshape(h.shape[0], -1))


def test_strided_and_dilated_convs_match_reference():
  model = _StridedConv()
  x = jnp.asarray(np.random.default_rng(5).normal(size=(5, 9, 8, 2)), jnp.float32)
  y = jnp.arange(5) % 3
  params = _random_params(model, x, seed=1)
  apply_fn = lambda p, x, rng: model.apply({"params": p}, x)
  mask = jnp.ones(5).at[3].set(0.0)
  fast = _clipped(apply_fn, params, x, y, mask, clip_norm=0.2)
  ref = _clipped(apply_fn, params, x, y, mask, clip_norm=0.2, method="reference")
  _assert_tree_close(fast[0], ref[0])
  np.testing.assert_allclose(fast[1].grad_norms, ref[1].grad_norms, rtol=1e-4)
