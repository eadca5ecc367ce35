r"""A CPU-sized stand-in for the study's tables on Fashion-MNIST (Debian's IDX files).

Members = 8,000 training images, non-members = 2,000 test images (membership.scheme =
'train_test', 4:1 as CIFAR-10's 50k / 10k is 5:1); 2,000 more held out for early stopping.
A 784-256-128-10 ReLU MLP, Adam lr 1e-3 (constant, so recorded epochs do not depend on the
total), batch 128, 40 epochs; 2 models per row (2 targets). LiRA (online, 16 models on random
halves of the same 10,000 images) gives TPR at 0.1% FPR for the rows in `paper.lira_rows`.

  python experiments/paper_table.py --config=configs/fashion_mnist_paper.py \
      --workdir=/tmp/pt_fmnist --out=experiments/results/paper_table_fashion_mnist

`:quick` shrinks it to a smoke run (a 600-image pool, 2 epochs, 4 LiRA models).
"""

from mia_jax import config_lib


def get_config(arg: str = ""):
  config = config_lib.sibling(__file__, "default").get_config()
  config.data.name = "fashion_mnist"
  config.data.dir = ""
  config.data.pool_size = 8_000     # members
  config.data.val_size = 2_000      # early stopping only
  config.data.test_size = 2_000     # non-members
  config.data.queries = "none"
  config.model.name = "mlp"
  config.model.hidden = (256, 128)
  config.model.activation = "relu"
  config.membership.scheme = "train_test"
  config.membership.num_models = 2
  config.train.epochs = 40
  config.train.batch_size = 128
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.schedule = "constant"
  config.train.strategy = "vmap"
  config.attack.names = ("loss",)
  config.attack.bootstrap = 0
  config.paper = config_lib.sibling(__file__, "cifar10_densenet")._paper_block(config)
  config.paper.dp_noise_multiplier = 1.0   # the study's Purchase100 setting (epsilon 2.38 there)
  config.paper.label_smoothing = 0.1
  config.paper.early_stopping_patience = 3
  config.paper.hist_epochs = (1, 5, 15, 40)
  config.paper.lira_num_models = 16
  config.paper.lira_rows = ("none", "l2_5e-4", "regdrop_0.25", "label_smoothing", "curriculum",
                            "augmentation", "ensemble", "unlearning")
  config.paper.defense_rows = ("curriculum", "augmentation", "ensemble", "ensemble_bagging",
                               "unlearning")
  config.paper.augment_crop_padding = 2
  config.train.curriculum.reference_epochs = 10
  config.paper.gradcam = False      # an MLP; Grad-CAM needs a conv model
  config.paper.notes = (
      "Fashion-MNIST and a 784-256-128-10 MLP stand in for CIFAR-10 / DenseNet-BC-100 and "
      "Purchase100 / the 1.3M-parameter FCN, sized for a shared 2-core CPU; 8,000 members "
      "and 2,000 non-members instead of 50,000 / 10,000.",
      "Adam (lr 1e-3, constant) for every row, as the study's Purchase100 set-up; the "
      "coupled L2 penalty then passes through Adam's normalisation, so L2 5e-3 does not "
      "collapse accuracy as it does under the study's SGD on CIFAR-10.",
      "Two models per row, each a target: the ± is the spread over these two, not a "
      "confidence interval.",
      "Early stopping: patience 3 epochs on a 2,000-image validation split held out from "
      "every model.",
      "LiRA TPR at 0.1% FPR rests on about 5 of the 5,000 non-members of each target "
      "(mean over 16 targets), so it is coarse; LiRA models train on 5,000 images, the "
      "table's models on 8,000.",
      "Runtime: seconds of training per model (the epochs' wall time, first-epoch "
      "compilation included, 2 models vmapped together on a CPU shared with other jobs).",
      "Logit reweighting overhead is measured against this MLP's own inference, which "
      "costs well under a microsecond per example; against a DenseNet's it would be far "
      "below 1%.",
      "The loss-threshold attack has no shadow models, so an attacker who knows the "
      "reweighting and one who does not get the same AUC; they differ for LiRA.",
      "DP-SGD: the study's clip 1.0 and noise multiplier 1.0 (its Purchase100 setting), "
      "delta = 1/8,000, Poisson sampling at the expected batch 128, PLD accounting, Adam on "
      "the privatised gradient as the other rows; the MLP has no BatchNorm to replace.",
      "Extra defense rows: LiRA on 16 models with the defense (adaptive) or without it "
      "(unaware: the `none` row's LiRA models), each in turn the target. LiRA uses shadow "
      "counts independent of the target's membership in exact designs; the unlearning "
      "rows' adaptive keep (halves minus each model's forgotten tenth) is no longer exact, and "
      "a residual count imbalance of one shadow can leave LiRA AUC a point below 50 there "
      "(retraining: 49.1).",
      "Curriculum: an epoch is one pass over the examples open at that epoch (root pacing "
      "from 20% over the 40 epochs), so the curriculum models take fewer optimizer steps "
      "than the `none` row's.",
      "SISA: the 400 random forgotten members of a target touch all 4 shards, so every "
      "shard retrains (each on a quarter of the data) and SISA has nothing to save; its "
      "time is also inflated by one compilation and one checkpoint per shard per epoch "
      "(4 chunks) against one vmapped retraining of both targets. SISA pays off for "
      "requests that touch few shards (tests/test_unlearning.py).",
      "Unlearning seconds: wall time per model, compilation included (fine-tuning and "
      "gradient ascent compile per model); retraining is the same recipe as `none` on the "
      "retained members.",
  )
  if arg == "quick":
    config.data.pool_size = 600
    config.data.val_size = 200
    config.data.test_size = 200
    config.train.epochs = 2
    config.paper.hist_epochs = (1, 2)
    config.paper.lira_num_models = 4
    config.paper.lira_rows = ("none", "curriculum", "augmentation", "ensemble", "unlearning")
    config.paper.tsne_points = 300
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'quick'")
  return config
