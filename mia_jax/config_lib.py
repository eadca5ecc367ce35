"""Helpers for config files: configs/ is a folder of python files loaded by path, not a package.

  from mia_jax import config_lib
  config = config_lib.sibling(__file__, "default").get_config()

`check_command_line(args)` loads the file that `--config=FILE[:ARG]` names and checks that every
`--config.FIELD=VALUE` names a field of it, before absl parses the flags: a missing or broken
config file and a typo'd field are one ConfigError line each (with the nearest field names),
where absl and ml_collections would print a traceback.
"""

import difflib
import importlib.util
import os
import types

import ml_collections

from mia_jax.errors import ConfigError


def sibling(config_file: str, name: str) -> types.ModuleType:
  """Loads configs/<name>.py from the folder of `config_file` (a config's own __file__)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"mia_jax_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(spec: str) -> ml_collections.ConfigDict:
  """get_config(ARG) of the config file FILE in `spec` = 'FILE[:ARG]' (as config_flags splits it).

  Raises:
    ConfigError (one line) for a missing file, a syntax error, an exception while the file is
    executed or get_config runs, and a get_config that returns no ConfigDict.
  """
  path, *arg = spec.split(":", 1)
  if not path:
    raise ConfigError("--config is empty; give a config file, e.g. --config=configs/default.py")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} not found (from {os.getcwd()}); give a path such as "
                      "--config=configs/default.py")
  try:
    spec_ = importlib.util.spec_from_file_location("mia_jax_checked_config", path)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"config file {path}, line {e.lineno}: {e.msg}; fix the file") from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"config file {path} fails to load ({type(e).__name__}: "
                      f"{_first_line(e)}); fix the file") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config(); a config file returns its "
                      "ConfigDict from get_config(arg='')")
  try:
    config = module.get_config(*arg)
  except Exception as e:  # pylint: disable=broad-except
    call = f"get_config({arg[0]!r})" if arg else "get_config()"
    raise ConfigError(f"config file {path}: {call} fails ({type(e).__name__}: "
                      f"{_first_line(e)})") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"config file {path}: get_config() returned {type(config).__name__}, "
                      "not a ConfigDict")
  return config


def check_field(config: ml_collections.ConfigDict, path: str, flag: str) -> None:
  """Raises ConfigError when `path` (e.g. 'train.epochs') names no field of `config`."""
  node, done = config, []
  for part in path.split("."):
    if isinstance(node, ml_collections.ConfigDict) and part in node:
      node = node[part]
      done.append(part)
      continue
    prefix = ".".join(done)
    if not isinstance(node, ml_collections.ConfigDict):
      raise ConfigError(f"{flag}: {prefix} is a value ({type(node).__name__}), not a block of "
                        "fields; set it as a whole")
    fields = sorted(node.keys())
    near = difflib.get_close_matches(part, fields, n=1, cutoff=0.6)
    where = f"{prefix}." if prefix else ""
    hint = (f"did you mean --config.{where}{near[0]}?" if near else
            f"the fields of {prefix or 'the config'} are {', '.join(fields)}")
    raise ConfigError(f"{flag}: the config has no field {where}{part}; {hint}")


def check_command_line(args: list[str]) -> ml_collections.ConfigDict | None:
  """Loads --config's file and checks every --config.FIELD of `args` (absl's argv[1:]).

  Returns the config as the file gives it (None when no --config is given: absl then says the
  flag is required).
  """
  spec, overrides = None, []
  for i, a in enumerate(args):
    if a == "--":
      break
    name = a.lstrip("-").split("=", 1)[0] if a.startswith("--") else ""
    if name == "config":
      spec = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else None)
    elif name.startswith("config.") or name.startswith("noconfig."):
      overrides.append((name.split(".", 1)[1], a.split("=", 1)[0]))
  if spec is None:
    return None
  config = load(spec)
  for path, flag in overrides:
    check_field(config, path, flag)
  return config


def value_error(config: ml_collections.ConfigDict | None, message: str) -> str:
  """One line for absl's message about an unparsable --config.FIELD=VALUE (else the message)."""
  head = message.strip().splitlines()[0] if message.strip() else "bad flag"
  if config is None or not head.startswith("flag --config."):
    return head
  flag, _, reason = head[len("flag "):].partition(": ")
  path, _, value = flag[len("--config."):].partition("=")
  node = config
  for part in path.split("."):
    node = node[part] if isinstance(node, ml_collections.ConfigDict) and part in node else None
  if node is None:
    return head
  kind = type(node).__name__
  article = "an" if kind[0] in "aeiou" else "a"
  return (f"{flag}: {path} holds {article} {kind} (now {node!r}) and {value!r} is not one "
          f"({reason})")


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else ""
