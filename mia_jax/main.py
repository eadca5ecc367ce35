r"""Runs one membership-inference audit: training the models, or attack-only on saved logits.

  python -m mia_jax.main --config=configs/default.py --workdir=/tmp/mia_default
  python -m mia_jax.main --config=configs/attack_only.py --config.logits=FILE.npz --workdir=DIR

A config with a `logits` field (configs/attack_only.py) audits that file without training.

Any config value can be overridden, e.g. --config.train.epochs=5. Resumes from the workdir's
latest checkpoint by default. A mistake in what was given (a name, a value, a data file) ends
the run with one line on stderr saying what is wrong and how to mend it, and exit status 2.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mia_jax import log_filter, pipeline
from mia_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logits and the report.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (python, get_config()).",
                                          lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  log_filter.install()
  logging.info("JAX %s on %s: %s", jax.__version__, jax.default_backend(), jax.devices())
  try:
    config = _CONFIG.value
    run = pipeline.run_attack_only if "logits" in config else pipeline.run
    run(config, _WORKDIR.value, log=logging.info)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
