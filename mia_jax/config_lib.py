"""Helpers for config files: configs/ is a folder of python files loaded by path, not a package.

  from mia_jax import config_lib
  config = config_lib.sibling(__file__, "default").get_config()
"""

import importlib.util
import os
import types


def sibling(config_file: str, name: str) -> types.ModuleType:
  """Loads configs/<name>.py from the folder of `config_file` (a config's own __file__)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"mia_jax_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
