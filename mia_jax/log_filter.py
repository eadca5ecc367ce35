"""Keeps the absl log readable: drops the INFO chatter of orbax, tfds and matplotlib (their
warnings and errors still show). Used by the command-line entry points."""

import logging as std_logging

from absl import logging

_LIBRARIES = ("orbax", "tensorflow_datasets", "matplotlib")


def quiet_libraries(record) -> bool:
  """A logging filter: False for an INFO-or-lower record logged from one of the libraries."""
  return record.levelno >= std_logging.WARNING or not any(
      lib in record.pathname for lib in _LIBRARIES)


def install() -> None:
  """Adds the filter to the absl logger (idempotent)."""
  logger = logging.get_absl_logger()
  if quiet_libraries not in logger.filters:
    logger.addFilter(quiet_libraries)
