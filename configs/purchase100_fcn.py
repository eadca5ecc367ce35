r"""The study's Purchase100 set-up (Khalil et al. 2025): the 600-1024-512-256-128-100 tanh
network (about 1.317M parameters), Adam lr 5e-4, batch 32, 200 epochs; members = a random 80%
of the 197,324 records, non-members = the other 20% (membership.scheme = 'train_test').

  python -m experiments.paper_table --config=configs/purchase100_fcn.py \
      --config.data.file=/path/to/purchase100.txt --workdir=/tmp/pt_purchase

The data file is the user's (label then 600 binary features per line). `:quick` trains 5
epochs on a 4,000-record subset.

What it reaches: not measured here (the file is not here); the study reports 87.54% test
accuracy. `:quick` learns a synthetic file of the same format and size (tests/test_pipeline.py,
test_shipped_config_quick_variant_learns).
"""

from mia_jax import config_lib


def get_config(arg: str = ""):
  config = config_lib.sibling(__file__, "default").get_config()
  config.data.name = "purchase100"
  config.data.file = ""
  config.data.num_classes = 100
  config.data.pool_size = 157_859   # 80% of 197,324: members
  config.data.val_size = 0
  config.data.test_size = 39_465    # 20%: non-members
  config.data.queries = "none"
  config.model.name = "purchase_fcn"
  config.model.dropout = 0.0
  config.membership.scheme = "train_test"
  config.membership.num_models = 5     # targets per row: the verdicts' units
  config.train.epochs = 200
  config.train.batch_size = 32
  config.train.optimizer = "adam"
  config.train.learning_rate = 5e-4
  config.train.schedule = "constant"
  config.attack.names = ("loss",)
  config.attack.bootstrap = 0
  config.paper = config_lib.sibling(__file__, "cifar10_densenet")._paper_block(config)
  config.paper.label_smoothing = 0.03
  config.paper.dp_noise_multiplier = 1.0   # epsilon 2.38 in the study
  config.paper.gradcam = False
  config.paper.hist_epochs = (1, 20, 100, 200)
  if arg == "quick":
    config.data.pool_size = 3_200
    config.data.test_size = 800
    config.train.epochs = 5
    config.paper.hist_epochs = (1, 5)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'quick'")
  return config
