"""The canary audit and the views it scores: queries that follow the training, the one-run
bound's validity (a null target, a correction across targets) and its power (a model that
memorises its canaries against one that cannot)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mia_jax import inference
from mia_jax.data import augment

from conftest import load_config


# ---- Queries follow the training ----------------------------------------------------------

def _training_views(x, crop_padding, flip, draws=300):
  """Every distinct view augment.augment draws of the single image x [1, H, W, C]."""
  keys = jax.random.split(jax.random.key(1), draws)
  out = np.asarray(jax.vmap(lambda k: augment.augment(k, x, crop_padding, flip)[0])(keys))
  return {v.tobytes(): v for v in out}


@pytest.mark.parametrize("crop_padding,flip", [(0, False), (0, True), (1, False), (1, True)])
def test_train_queries_are_views_the_training_draws(crop_padding, flip):
  """'train' queries only views that training draws: the image alone when training neither
  crops nor flips (no mirror), {image, mirror} when it flips, the shifted grid when it crops."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 6, 2)), jnp.float32)
  drawn = _training_views(x, crop_padding, flip)
  q = np.asarray(augment.queries(x, "train", crop_padding, flip))[:, 0]
  names = augment.view_names("train", crop_padding, flip)
  assert len(names) == q.shape[0] and names[0] == "image"
  np.testing.assert_array_equal(q[0], np.asarray(x[0]))
  for view in q:
    assert view.tobytes() in drawn                         # a view the model trained on
  assert len({v.tobytes() for v in q}) == q.shape[0]       # no view twice
  if crop_padding == 0:
    assert q.shape[0] == len(drawn)                        # and every one of them
  assert ("mirror" in names) == flip


def test_explicit_query_kinds_stay_available():
  """'mirror' stays the image and its mirror even for a model trained without flips, and
  tabular inputs (never augmented) get the example alone under every kind."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 4, 1)), jnp.float32)
  q = np.asarray(augment.queries(x, "mirror", 0, False))
  np.testing.assert_array_equal(q[1], np.asarray(x)[:, :, ::-1])
  assert augment.resolve("mirror", 0, False) == "mirror"
  for kind in augment.QUERY_KINDS:
    assert augment.queries(x.reshape(3, -1), kind, 2, True).shape[0] == 1
    assert augment.view_names(kind, 2, True, image=False) == ["image"]
  with pytest.raises(ValueError, match="query kind"):
    augment.resolve("rotations")


def test_default_configs_query_the_training_views():
  """The default and the Fashion-MNIST configs train without flips, so they query the image
  alone; results.json's record says so."""
  for name, arg in (("default", ""), ("fashion_mnist_mlp", ""), ("fashion_mnist_dp", ""),
                    ("fashion_mnist_cnn", "")):
    config = load_config(name, arg)
    assert config.data.queries == "train"
    record = inference.query_record(config.data.queries, config.train.augment, 3)
    assert record["views"] == ["image"] and record["resolved"] == "none"
  config = load_config("default", "")
  config.train.augment.flip = True
  record = inference.query_record(config.data.queries, config.train.augment, 3)
  assert record["views"] == ["image", "mirror"] and record["kind"] == "train"
