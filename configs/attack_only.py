r"""Attack-only audit: every attack and the report on logits saved by any framework.

  python -m mia_jax.main --config=configs/attack_only.py --config.logits=FILE.npz --workdir=DIR

FILE.npz holds logits [M, N, Q, C] (or [M, N, C]), labels [N], keep [M, N] and optionally
population_logits [M, P, Q, C] and population_labels [P] (mia_jax/logits_io.py; README,
"Attack-only audits"); a training run's workdir/logits.npz is such a file. Nothing is trained.
The attack and defense blocks are configs/default.py's: override them as there, e.g.
--config.attack.num_targets=4 --config.attack.names="('loss','lira_online')".
`:quick` evaluates 2 targets without bootstrap or shadow-scaling curve.
"""

import ml_collections

from mia_jax import config_lib


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                    # bootstrap, Shokri's sampling, shadow-scaling subsets
  config.logits = ""                 # the .npz file to audit (required)
  default = config_lib.sibling(__file__, "default").get_config()
  config.attack = default.attack
  config.defense = default.defense   # defense.post_hoc: the file's outputs defended first
  if arg == "quick":
    config.attack.num_targets = 2
    config.attack.bootstrap = 0
    config.attack.scaling_targets = 0
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'quick'")
  return config
