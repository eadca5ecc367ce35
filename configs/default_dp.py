r"""The default audit with DP-SGD: 16 MLPs on digits, each trained with DP-SGD at epsilon 8.

  python -m mia_jax.main --config=configs/default_dp.py --workdir=/tmp/mia_dp

Every model (target and shadows) uses the same recipe: Poisson sampling (expected batch 64),
per-example clipping at C = 1 (ghost clipping), Gaussian noise calibrated for epsilon 8 at
delta = 1 / n, PLD accounting. 100 mislabelled canaries give the one-run empirical lower bound
on epsilon, reported beside the accountant's epsilon in results.json (`privacy`).
"""

from mia_jax import config_lib


def get_config(arg: str = ""):
  config = config_lib.sibling(__file__, "default").get_config(arg)
  config.dp.enabled = True
  config.dp.target_epsilon = 8.0
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.5
  config.train.momentum = 0.9
  config.train.schedule = "constant"
  config.train.epochs = 40 if arg != "quick" else 3
  config.audit.num_canaries = 100 if arg != "quick" else 20
  return config
