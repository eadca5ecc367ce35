"""DenseNet-BC and ResNet-18 (CIFAR): parameter counts, shapes, norms, the registry; and a
smoke run of the CIFAR-10 DenseNet paper config on tfds mock data."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from mia_jax import models
from mia_jax.errors import ConfigError

from conftest import load_config, paper_table


def _params(model, shape=(1, 32, 32, 3)):
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return sum(x.size for x in jax.tree.leaves(v["params"])), v


@pytest.mark.parametrize("name,count", [("densenet", 769_162), ("resnet18", 11_173_962)])
def test_paper_sizes(name, count):
  n, v = _params(models.build(ml_collections.ConfigDict({"name": name}), 10))
  assert n == count
  assert "batch_stats" in v


@pytest.mark.parametrize("name,extra", [("densenet", {"depth": 10, "growth": 4}),
                                        ("resnet18", {"width": 4})])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_small_shapes_and_norms(name, extra, norm):
  """Traced only (jax.eval_shape): the smoke run below executes a DenseNet for real."""
  model = models.build(ml_collections.ConfigDict(
      {"name": name, "norm": norm, "dropout": 0.2, **extra}), 7)
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  assert ("batch_stats" in variables) == (norm == "batch")
  eval_out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  train_out, _ = jax.eval_shape(lambda v, x: model.apply(
      v, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]),
      variables, x)
  assert eval_out.shape == train_out.shape == (2, 7)


def test_densenet_depth_and_compression_are_configurable():
  small, _ = _params(models.build(ml_collections.ConfigDict(
      {"name": "densenet", "depth": 40, "growth": 12, "compression": 1.0}), 10))
  bc, _ = _params(models.build(ml_collections.ConfigDict(
      {"name": "densenet", "depth": 40, "growth": 12, "compression": 0.5}), 10))
  assert bc < small
  with pytest.raises(ConfigError, match="6n \\+ 4"):
    models.build(ml_collections.ConfigDict({"name": "densenet", "depth": 50}), 10)


@pytest.mark.slow
def test_cifar10_densenet_config_smoke_on_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = load_config("cifar10_densenet", "smoke")
  assert config.model.depth == 10 and config.membership.scheme == "train_test"
  full = load_config("cifar10_densenet")
  assert (full.model.depth, full.model.growth, full.train.learning_rate) == (100, 12, 0.1)
  config.paper.rows = ("none", "dp_sgd", "logit_reweighting")
  out = str(tmp_path / "table")
  with tfds.testing.mock_data(num_examples=20):
    res = paper_table().run(config, str(tmp_path / "work"), out, log=lambda s: None)
  none = res["rows"]["none"]
  assert none["status"] == "run" and 0 <= none["auc"] <= 100
  dp_row = res["rows"]["dp_sgd"]     # DP-SGD on a GroupNorm DenseNet, accounted
  assert dp_row["status"] == "run" and dp_row["noise_multiplier"] == 0.5
  assert 0 < dp_row["epsilon"] < float("inf") and dp_row["delta"] > 0
  rw = res["post_hoc"]["none"]
  assert rw["w"] == 0.1 and rw["overhead_pct"] >= 0
  assert "gradcam" in res["analysis"]
  md = open(out + ".md").read()
  assert "| none |" in md and "paper CIFAR-10" in md
  assert os.path.getsize(os.path.join(out + "_figures", "gradcam_most_least_vulnerable.png")) > 0
  assert os.path.getsize(os.path.join(out + "_figures", "histograms_by_epoch.png")) > 0


def test_purchase_and_fashion_configs_load():
  p = load_config("purchase100_fcn")
  assert p.model.name == "purchase_fcn" and p.train.learning_rate == 5e-4
  assert p.train.batch_size == 32 and p.train.epochs == 200 and p.paper.label_smoothing == 0.03
  f = load_config("fashion_mnist_paper", "quick")
  assert f.membership.scheme == "train_test" and f.paper.lira_num_models == 4



def test_importable_module_class_and_factory(user_package):
  """A Module subclass gets num_classes and model.kwargs; a factory the whole model block."""
  built = models.build(ml_collections.ConfigDict(
      {"name": f"{user_package}:TinyNet", "kwargs": {"width": 5}}), 3)
  assert type(built).__name__ == "TinyNet" and (built.num_classes, built.width) == (3, 5)
  count, _ = _params(built, (1, 4, 4, 1))
  assert count == 16 * 5 + 5 + 5 * 3 + 3
  default, _ = _params(models.build(ml_collections.ConfigDict(
      {"name": f"{user_package}:TinyNet"}), 3), (1, 4, 4, 1))
  assert default == 16 * 8 + 8 + 8 * 3 + 3
  made = models.build(ml_collections.ConfigDict(
      {"name": f"{user_package}:tiny_factory", "factory_width": 6}), 4)
  assert (made.num_classes, made.width) == (4, 6)


@pytest.mark.parametrize("attr,match", [
    ("Absent", "has no attribute 'Absent'"),
    ("NOT_A_MODEL", "neither a flax.linen.Module subclass nor a factory"),
    ("NotFlax", "neither a flax.linen.Module subclass nor a factory"),
    ("returns_a_string", "built a str, not a flax.linen.Module"),
])
def test_importable_name_errors_are_one_line(user_package, attr, match):
  with pytest.raises(ConfigError, match=match) as e:
    models.build(ml_collections.ConfigDict({"name": f"{user_package}:{attr}"}), 3)
  assert "\n" not in str(e.value)


def test_importable_name_missing_module_or_bad_kwargs(user_package):
  with pytest.raises(ConfigError, match="cannot be imported"):
    models.resolve("user_pkg.absent_module:Net")
  with pytest.raises(ConfigError, match="unknown model 'transformer'"):
    models.resolve("transformer")
  with pytest.raises(ConfigError, match="give it a num_classes field"):
    models.build(ml_collections.ConfigDict(
        {"name": f"{user_package}:TinyNet", "kwargs": {"depth": 2}}), 3)
