"""Keeps the command line's output readable. Used by the command-line entry points.

Default (`install(verbose=False)`): the run's progress lines as plain lines on stderr (`progress`),
libraries' warnings and errors as `warning: ...` lines, and nothing at INFO level from anyone
else: no absl prefixes, no backend probes (jax's `Unable to initialize backend 'tpu'`), no
orbax, tfds or matplotlib chatter.

`install(verbose=True)` (the `--verbose` flag): absl's own format and INFO level, every library
line included except the INFO chatter of orbax, tfds and matplotlib; progress lines go through
absl's INFO log with their prefixes.
"""

import logging as std_logging
import sys

from absl import logging

_LIBRARIES = ("orbax", "tensorflow_datasets", "matplotlib")


def quiet_libraries(record) -> bool:
  """A logging filter: False for an INFO-or-lower record logged from one of the libraries."""
  return record.levelno >= std_logging.WARNING or not any(
      lib in record.pathname for lib in _LIBRARIES)


class _Plain(std_logging.Formatter):
  """'warning: message' (the level's name, lower case), without absl's prefix."""

  def format(self, record):
    return f"{record.levelname.lower()}: {record.getMessage()}"


def progress(line: str) -> None:
  """Prints one progress line on stderr, at once."""
  print(line, file=sys.stderr, flush=True)


def install(verbose: bool = False):
  """Sets up the absl logger as the module docstring says; returns the progress function."""
  logger = logging.get_absl_logger()
  if quiet_libraries not in logger.filters:
    logger.addFilter(quiet_libraries)
  if verbose:
    logging.set_verbosity(logging.INFO)
    return logging.info
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().setFormatter(_Plain())
  return progress
