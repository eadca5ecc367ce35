"""Shared fixtures: small configs and data the tests make themselves (nothing downloaded)."""

import importlib
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def load_config(name: str = "default", arg: str = ""):
  """Imports configs/<name>.py and returns get_config(arg)."""
  spec = importlib.util.spec_from_file_location(f"_cfg_{name}", os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config():
  """The default audit shrunk to seconds: 4 models, 3 epochs, a pool of 200 digits; a
  checkpoint every epoch (the interruption tests resume from a chosen epoch)."""
  c = load_config("default", "quick")
  c.model.hidden = (32,)
  c.train.epochs, c.train.batch_size = 3, 64
  c.attack.names = ("loss", "lira_online")
  c.train.checkpoint_seconds = 0.0
  return c


def paper_table():
  """experiments/paper_table.py as a module (imported once: it defines absl flags)."""
  return importlib.import_module("experiments.paper_table")


@pytest.fixture
def tiny():
  return tiny_config()


USER_MODULE = '''
import flax.linen as nn


class TinyNet(nn.Module):
  """A user's model: one hidden layer of `width` (the layers of mia_jax's MLP, in its order)."""
  num_classes: int
  width: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False):
    hidden = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes)(hidden)


def tiny_factory(config, num_classes):
  return TinyNet(num_classes=num_classes, width=int(config.factory_width))


NOT_A_MODEL = 3


class NotFlax:
  pass


def returns_a_string(config, num_classes):
  return "no module"
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
  """A package `user_pkg` with the module `nets` (USER_MODULE) on sys.path, imported afresh."""
  pkg = tmp_path / "user_pkg"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "nets.py").write_text(USER_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  for name in ("user_pkg", "user_pkg.nets"):
    monkeypatch.delitem(sys.modules, name, raising=False)
  return "user_pkg.nets"
