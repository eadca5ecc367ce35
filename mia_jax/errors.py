"""User-facing errors: each carries one line that says what is wrong and how to mend it.

`mia_jax.main` prints the message of any `UserError` on one line (`error: ...`) and exits with
status 2, without a traceback. Library code raises these for bad configs, bad data files and a
workdir that cannot be used; it raises them before any work where it can, so that a run that
fails leaves its workdir as it was (or resumable).
"""


class UserError(Exception):
  """An error in what the user gave: a config value, a name, a data file, a workdir."""


class ConfigError(UserError, ValueError):
  """A config value is unknown or out of range."""


class DataError(UserError, OSError):
  """A data file is missing, truncated or corrupt."""


class WorkdirError(UserError, OSError):
  """The workdir cannot be used: another run's, in use, not writable, or its disk too full."""
