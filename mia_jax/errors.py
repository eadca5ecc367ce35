"""User-facing errors: each carries one line that says what is wrong and how to mend it.

`mia_jax.main` prints the message of any `UserError` on one line and exits non-zero,
without a traceback. Library code raises these for bad configs and bad data files.
"""


class UserError(Exception):
  """An error in what the user gave: a config value, a name, a data file."""


class ConfigError(UserError, ValueError):
  """A config value is unknown or out of range."""


class DataError(UserError, OSError):
  """A data file is missing, truncated or corrupt."""
