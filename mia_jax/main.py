r"""Runs one membership-inference audit: training the models, or attack-only on saved logits.

  python -m mia_jax.main --config=configs/default.py --workdir=/tmp/mia_default
  python -m mia_jax.main --config=configs/attack_only.py --config.logits=FILE.npz --workdir=DIR

A config with a `logits` field (configs/attack_only.py) audits that file without training.

Any config value can be overridden, e.g. --config.train.epochs=5. Resumes from the workdir's
latest checkpoint by default. `--verbose` shows absl's log format and the libraries' INFO lines.

Compiled programs are kept in jax's persistent compilation cache (`--compilation_cache=DIR`;
default $XDG_CACHE_HOME/mia_jax/jax, i.e. ~/.cache/mia_jax/jax; `none` turns it off; a set
JAX_COMPILATION_CACHE_DIR is left to jax): a later run of the same models in another process
loads them instead of compiling. Every program is cached whatever its compile time, in a cache
bounded to 2 GiB (least recently used evicted; it needs the filelock package). A cached
program is the program compiled: models, logits and scores are the same with or without it.
What it saves lies in experiments/results/profile_default_audit.md.

Every mistake in what was given (the config file, a field, a value, a data file, the workdir)
and every failure of the environment (a read-only or full disk) ends the run with one line on
stderr, `error: ...`, saying what is wrong and how to mend it, and exit status 2; Ctrl-C ends it
with `interrupted; rerun the same command to resume` and status 130. Either way the workdir is
as it was, or resumable. Anything else is a bug, and shows its traceback.
"""

import signal
import sys


def _interrupted_early(signum, frame):
  del signum, frame
  print("interrupted; rerun the same command to resume", file=sys.stderr, flush=True)
  raise SystemExit(130)


if __name__ == "__main__":   # Ctrl-C while jax and the rest import has nothing to clean up
  signal.signal(signal.SIGINT, _interrupted_early)

import errno  # pylint: disable=wrong-import-position
import importlib.util  # pylint: disable=wrong-import-position
import logging as std_logging  # pylint: disable=wrong-import-position
import os  # pylint: disable=wrong-import-position

from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
from ml_collections import config_flags  # pylint: disable=wrong-import-position

from mia_jax import config_lib, log_filter, pipeline  # pylint: disable=wrong-import-position
from mia_jax.errors import UserError  # pylint: disable=wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logits and the report.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (python, get_config()).",
                                          lock_config=True)
_VERBOSE = flags.DEFINE_bool("verbose", False, "absl's log format and the libraries' INFO lines "
                             "(jax's backend probes included; the accountant's warnings stay "
                             "out).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "Folder of jax's persistent compilation cache, reused by later "
    "runs (default: $XDG_CACHE_HOME/mia_jax/jax, ~/.cache/mia_jax/jax; 'none': no cache).")
flags.mark_flags_as_required(["config", "workdir"])
CACHE_MAX_BYTES = 2 << 30

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted; rerun the same command to resume"
# OS errors that are the environment's, not a bug: the disk full, read-only, not permitted.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC: "its disk is full", errno.EDQUOT: "the disk quota is spent",
                       errno.EROFS: "its file system is read-only",
                       errno.EACCES: "permission denied", errno.EPERM: "not permitted"}


def _fail(message: str, status: int = EXIT_ERROR):
  """Prints the one line and exits; the libraries' threads (orbax's, cut short by Ctrl-C or a
  full disk) log nothing after it."""
  std_logging.disable(std_logging.CRITICAL)
  print(message if status == EXIT_INTERRUPTED else f"error: {message}", file=sys.stderr,
        flush=True)
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with the config file loaded and every --config.FIELD checked first;
  every mistake is one `error:` line and exit status 2."""
  config = None
  try:
    config = config_lib.check_command_line(argv[1:])
    return flags.FLAGS(argv)
  except UserError as e:
    _fail(str(e))
  except flags.Error as e:
    text = config_lib.value_error(config, str(e))
    if "must have a value other than None" in text:
      name = text.split("=")[0].replace("flag ", "")
      _fail(f"{name} is required, e.g. {name}=/tmp/mia_run")
    _fail(text if text.startswith("--config.") else f"{text}; see python -m mia_jax.main --help")


def environment_error(e: OSError, workdir: str) -> str | None:
  """The one line for an OS error of the environment (full or read-only disk), else None."""
  reason = _ENVIRONMENT_ERRNOS.get(e.errno)
  if reason is None:
    return None
  where = e.filename or f"into --workdir={workdir}"
  verb = "access" if e.errno in (errno.EACCES, errno.EPERM) else "write"
  return (f"cannot {verb} {where}: {reason} ({e.strerror}); mend that, then rerun the same "
          "command to resume")


def compilation_cache_dir(flag_value: str | None) -> str | None:
  """The cache folder --compilation_cache names (None: no cache, or JAX_COMPILATION_CACHE_DIR
  set, which jax reads itself)."""
  if flag_value is not None:
    return None if flag_value.strip().lower() in ("", "none") else flag_value
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return None
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "mia_jax", "jax")


def enable_compilation_cache(path: str | None) -> str:
  """Points jax's persistent compilation cache at `path` before anything compiles, caching
  every program; returns what the run's first line says of it.

  The cache is bounded (CACHE_MAX_BYTES), and with a bound jax locks it with `filelock`, so
  runs in parallel (pytest-xdist, several audits) never read an entry half written; without
  filelock, or where the folder cannot be created or written, the cache stays off and the run
  goes on as without one.
  """
  if path is None:
    return ("compilation cache " + os.environ["JAX_COMPILATION_CACHE_DIR"]
            if os.environ.get("JAX_COMPILATION_CACHE_DIR") else "no compilation cache")
  if importlib.util.find_spec("filelock") is None:
    return "no compilation cache (it needs the filelock package: pip install filelock)"
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    pass
  if not os.access(path, os.W_OK | os.X_OK):
    return f"no compilation cache ({path} is not writable)"
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)   # LRU, file-locked
  return f"compilation cache {path}"


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}; give options as --name=value")
  signal.signal(signal.SIGINT, signal.default_int_handler)
  log = log_filter.install(verbose=_VERBOSE.value)
  try:
    cache = enable_compilation_cache(compilation_cache_dir(_COMPILATION_CACHE.value))
    log(f"JAX {jax.__version__} on {jax.default_backend()}: {len(jax.devices())} device(s); "
        f"{cache}")
    config = _CONFIG.value
    run = pipeline.run_attack_only if "logits" in config else pipeline.run
    run(config, _WORKDIR.value, log=log)
  except UserError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    _fail(INTERRUPTED, EXIT_INTERRUPTED)
  except OSError as e:
    message = environment_error(e, _WORKDIR.value)
    if message is None:
      raise
    _fail(message)


def run_cli() -> None:
  """The command line: absl's app.run with the checked flag parser."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run_cli()
