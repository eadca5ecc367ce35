r"""DP-SGD on Fashion-MNIST with the one-run canary audit (Steinke, Nasr, Jagielski 2023).

  python -m mia_jax.main --config=configs/fashion_mnist_dp.py --workdir=/tmp/fm_dp
  python -m mia_jax.main --config=configs/fashion_mnist_dp.py:nodp --workdir=/tmp/fm_nodp

4 MLPs (784-1024-10, Adam, 80 epochs), each on a random half of a 10,000-image pool that holds
1,000 mislabelled canaries; DP-SGD at epsilon 8, delta 1e-5 (below 1 / (2 * 1,000 canaries):
the one-run bound's delta term grows as 2 m delta), Poisson sampling, clip 1, PLD; or the same
training without DP (`:nodp`). The loss of each target on its canaries, queried on the views
the models trained on (the image alone), gives the empirical lower bound on epsilon
(results.json `privacy.audit`), valid at 95% for the run (Bonferroni across the 4 targets),
beside the accountant's epsilon: a correct DP-SGD never lets the bound pass it.
experiments/dp_audit.py runs the power check on this set-up (dp.fault: DP-SGD without noise,
without clipping).

What it reaches (experiments/results/dp_audit_fashion_mnist.md, the 2-core CPU): at epsilon 8,
82.3% test accuracy, 341 s of training; `:nodp` 82.7%, 171 s. `:quick` (2 epochs): 51% test
accuracy (tests/test_pipeline.py, test_shipped_config_quick_variant_learns).
"""

from mia_jax import config_lib


def get_config(arg: str = ""):
  if arg not in ("", "nodp", "quick"):
    raise ValueError(f"unknown config argument {arg!r}; use '', 'nodp' or 'quick'")
  config = config_lib.sibling(__file__, "default").get_config()
  config.data.name = "fashion_mnist"
  config.data.pool_size = 10_000
  config.data.val_size = 1_000
  config.data.test_size = 5_000
  config.model.hidden = (1024,)
  config.membership.num_models = 4
  config.train.epochs = 80
  config.train.batch_size = 256
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.schedule = "constant"
  config.audit.num_canaries = 1000
  config.attack.names = ("loss", "lira_online", "rmia_online")
  config.attack.scaling_targets = 0
  config.dp.enabled = arg != "nodp"
  config.dp.target_epsilon = 8.0
  config.dp.delta = 1e-5
  if arg == "quick":
    config.data.pool_size = 2_000
    config.audit.num_canaries = 200
    config.train.epochs = 2
  return config
