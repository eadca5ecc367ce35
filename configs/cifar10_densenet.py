r"""The study's CIFAR-10 set-up (Khalil et al. 2025): DenseNet-BC-100 (k = 12, theta = 0.5,
no dropout, about 769k parameters), SGD momentum 0.9, lr 0.1 divided by 10 at epochs 30 / 60
/ 90, 100 epochs, batch 64, no augmentation; members = the 50,000-image train split,
non-members = the 10,000-image test split (membership.scheme = 'train_test'), one query.

  python -m experiments.paper_table --config=configs/cifar10_densenet.py --workdir=/tmp/pt_cifar

needs CIFAR-10 prepared for tfds (tfds build cifar10) and an accelerator: on a 2-core CPU one
epoch of one model takes hours. `:smoke` shrinks it to seconds (depth 10, growth 4, a few
dozen images, 1 epoch) for tests on tfds mock data.

What it reaches: not measured here (no CIFAR-10, no accelerator); the study reports 87.91% test
accuracy. The smoke's DenseNet with this recipe learns synthetic 32x32x3 images
(tests/test_pipeline.py, test_shipped_config_quick_variant_learns).
"""

import ml_collections

from mia_jax import config_lib


def get_config(arg: str = ""):
  config = config_lib.sibling(__file__, "default").get_config()
  config.data.name = "tfds:cifar10"
  config.data.pool_size = 50_000     # the train split: members
  config.data.val_size = 0           # the study has none; the early-stopping row needs one
  config.data.test_size = 10_000     # the test split: non-members
  config.data.queries = "none"
  config.model.name = "densenet"
  config.model.depth = 100
  config.model.growth = 12
  config.model.compression = 0.5
  config.model.norm = "batch"        # 'group' for DP-SGD
  config.model.dropout = 0.0
  config.membership.scheme = "train_test"
  config.membership.num_models = 5     # targets per row: the verdicts' units
  config.train.epochs = 100
  config.train.batch_size = 64
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.schedule = "piecewise"
  config.train.lr_decay_epochs = (30, 60, 90)
  config.train.lr_decay_factor = 0.1
  config.train.strategy = "auto"
  config.attack.names = ("loss",)
  config.attack.bootstrap = 0

  config.paper = _paper_block(config)
  config.paper.label_smoothing = 0.1
  config.paper.dp_noise_multiplier = 0.5   # epsilon 4.95 in the study
  config.paper.lira_num_models = 0         # LiRA on CIFAR-10 needs far more compute
  if arg == "smoke":
    config.membership.num_models = 1   # too few for verdicts: the table leaves them out
    config.data.pool_size = 16
    config.data.test_size = 8
    config.model.depth = 10
    config.model.growth = 4
    config.train.epochs = 1
    config.train.batch_size = 8
    config.paper.hist_epochs = (1,)
    config.paper.tsne_points = 24
    config.paper.tsne_iter = 250
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'")
  return config


def _paper_block(config):
  """The defense grid and analysis settings of experiments/paper_table.py."""
  p = ml_collections.ConfigDict()
  p.rows = ("none", "early_stopping", "l2_5e-4", "l2_1e-3", "l2_5e-3", "regdrop_0.25",
            "regdrop_0.5", "label_smoothing", "dp_sgd", "logit_reweighting")
  p.label_smoothing = 0.1
  p.early_stopping_patience = 10
  p.dp_clip = 1.0
  p.dp_noise_multiplier = 0.5
  p.reweight_w = 0.1
  p.hist_epochs = (1, 10, 30, int(config.train.epochs))
  p.lira_num_models = 0            # 0: no LiRA measurement
  p.lira_rows = ("none",)
  p.lira_pool = 0                  # 0: the whole audited set (train + test)
  p.leak_permutations = 4999       # the no-leak permutation test of each row
  p.defense_rows = ()              # beyond the study (experiments/paper_defenses.py):
                                   # curriculum, augmentation, ensemble, ensemble_bagging,
                                   # unlearning
  p.augment_crop_padding = 4       # augmentation row: random crops (reflect padding) and flips
  p.augment_flip = True
  p.ensemble_k = 4                 # ensemble rows: sub-models per released model
  p.unlearn_fraction = 0.05        # unlearning: members each target forgets
  p.unlearn_lira_fraction = 0.1    # ... and each LiRA model
  p.unlearn_finetune_epochs = 2
  p.unlearn_ascent_steps = 20
  p.unlearn_ascent_lr = 1e-2
  p.sisa_shards = 4
  p.sisa_slices = 1
  p.tsne_points = 2000
  p.tsne_iter = 1000
  p.gradcam = True
  p.notes = ()                     # protocol differences from the study, printed in the report
  return p
