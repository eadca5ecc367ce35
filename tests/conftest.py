"""Shared fixtures: small configs and data the tests make themselves (nothing downloaded)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def load_config(name: str = "default", arg: str = ""):
  """Imports configs/<name>.py and returns get_config(arg)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
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
  """experiments/paper_table.py as a module (loaded once; it puts experiments/ on sys.path)."""
  if "paper_table" not in sys.modules:
    import importlib.util  # pylint: disable=g-import-not-at-top
    spec = importlib.util.spec_from_file_location(
        "paper_table", os.path.join(ROOT, "experiments", "paper_table.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_table"] = module
    spec.loader.exec_module(module)
  return sys.modules["paper_table"]


@pytest.fixture
def tiny():
  return tiny_config()
