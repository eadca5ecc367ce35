r"""The default audit: 16 MLPs on scikit-learn's digits, attacked by every attack.

  python -m mia_jax.main --config=configs/default.py --workdir=/tmp/mia_default

Nothing to download. What it reaches (measured on the project's 2-core CPU, 2026-12-01,
shared with other jobs at load average 1.5): test accuracy 97.3% (94.97-98.16% across the 16
models; train 100%), 22 s wall: 5 s process start, 9 s training (a checkpoint after the last
epoch), 1 s inference, 8 s attacks, shadow-scaling curve, figures and report (37 s at load 6).
A rerun of the same models loads its compiled programs from jax's compilation cache (main.py's
--compilation_cache): each stage's CPU seconds, cold and warm, before and after the figures
were drawn once each, in experiments/results/profile_default_audit.md.

Override any field: --config.train.epochs=5 --config.membership.num_models=32
Small quick run:    --config=configs/default.py:quick  (4 models on a 200-example pool, 10
epochs: 87% test accuracy, about 20 s with start-up)
"""

import ml_collections

ALL_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy", "shokri", "lira_online",
               "lira_online_fixed_var", "lira_offline", "lira_offline_fixed_var",
               "lira_offline_logpdf", "rmia_online", "rmia_offline")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The default config; `arg` 'quick' shrinks it to a few-second smoke run."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"
  config.data.dir = ""             # IDX / tfds folder ('' = the source's default)
  config.data.file = ""            # purchase100 / texas100 text file
  config.data.seed = 0             # the one shuffle before the pool / val / test split
  config.data.pool_size = 1000     # N examples whose membership is audited (<= 0: all left)
  config.data.val_size = 200       # held out from every model: early stopping
  config.data.test_size = 0        # held out from every model (0: all left): test accuracy
  config.data.normalise = True
  config.data.queries = "train"    # the views the models trained on (mirror only if train flips,
                                   # the augmentation grid if it crops) | none | mirror | augment
  config.data.num_classes = 0      # tabular: at least this many classes (0: from the labels)
  config.data.label_base = -1      # tabular: the first class's label, 0 or 1 (-1: from the
                                   # labels, which must then say it: see data/sources.py)

  config.model = ml_collections.ConfigDict()
  config.model.name = "mlp"
  config.model.hidden = (256, 256)
  config.model.activation = "relu"
  config.model.dropout = 0.0
  config.model.channels = (32, 64)  # cnn
  config.model.dense = 128          # cnn
  config.model.norm = "none"        # cnn: none | batch | group | layer

  config.membership = ml_collections.ConfigDict()
  config.membership.num_models = 16
  config.membership.pkeep = 0.5
  config.membership.seed = 0

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 60
  config.train.batch_size = 64
  config.train.optimizer = "adam"   # adam | sgd
  config.train.learning_rate = 1e-3
  config.train.momentum = 0.9       # sgd
  config.train.nesterov = False     # sgd
  config.train.schedule = "cosine"  # constant | cosine | piecewise | warmup_cosine
  config.train.lr_decay_epochs = (30, 60, 90)   # piecewise
  config.train.lr_decay_factor = 0.1            # piecewise
  config.train.warmup_epochs = 1.0              # warmup_cosine
  config.train.l2 = 0.0             # coupled L2 (the study's weight decay)
  config.train.weight_decay = 0.0   # decoupled weight decay
  config.train.label_smoothing = 0.0
  config.train.early_stopping_patience = 0      # epochs without val improvement; 0 = off
  config.train.augment = ml_collections.ConfigDict()
  config.train.augment.crop_padding = 0
  config.train.augment.flip = False
  config.train.curriculum = ml_collections.ConfigDict()
  config.train.curriculum.enabled = False       # easy examples first (mia_jax.training.curriculum)
  config.train.curriculum.difficulty = "loss"   # loss | confidence, of the reference model
  config.train.curriculum.pacing = "root"       # linear | root | step
  config.train.curriculum.start = 0.2           # fraction of the easiest examples open at epoch 0
  config.train.curriculum.num_steps = 4         # step pacing: levels after the first
  config.train.curriculum.ramp_epochs = 0       # epochs until every example is open; 0: all
  config.train.curriculum.reference_epochs = 10  # reference model: trained on the val split,
                                                 # held out from every model
  config.train.strategy = "auto"    # how the model axis is mapped: vmap | loop | shared |
                                    # sharded | auto
  config.train.conv = "auto"        # convolutions: auto | lax | im2col | forward
  config.train.lanes = 0            # loop: groups of models trained at once, in threads;
                                    # 0 = auto (2 on a CPU for models without convolutions)
  config.train.chunk_size = 0       # models trained (and checkpointed) together; 0 = all
  config.train.checkpoint_seconds = 30.0  # a checkpoint when this much training time has passed
                                          # since the last (and after the last epoch); 0: every
                                          # epoch. A rerun resumes from the latest, bit-identical

  config.dp = ml_collections.ConfigDict()
  config.dp.enabled = False         # DP-SGD for every model (target and shadows alike)
  config.dp.clip_norm = 1.0         # C, per-example L2 bound
  config.dp.noise_multiplier = 1.0  # sigma; ignored when target_epsilon > 0
  config.dp.target_epsilon = 0.0    # > 0: calibrate sigma for this epsilon
  config.dp.delta = 0.0             # 0: 1 / (examples per model)
  config.dp.clipping = "fast"       # fast (ghost clipping) | reference (jax_privacy, vmap)
  config.dp.sampling = "poisson"    # poisson (amplified accounting) | shuffle (conservative)
  config.dp.accountant = "pld"      # pld | rdp
  config.dp.fault = ""              # audit power checks only: no_noise | no_clipping break
                                    # DP-SGD on purpose (the run is reported NOT private)

  config.audit = ml_collections.ConfigDict()
  config.audit.num_canaries = 0     # mislabelled pool examples for the one-run epsilon audit
  config.audit.attack = "loss"      # the canary scores (an attack that uses no shadow models)
  config.audit.confidence = 0.95
  config.audit.method = "one_run"       # the headline: one_run (Steinke et al. 2023, valid for
                                        # any (eps, delta)-DP) | one_run_fdp (Gaussian f-DP)
  config.audit.beside = ("one_run_fdp",)   # methods reported beside the headline
  config.audit.guesses = "two_sided"    # IN for the top scores and OUT for the bottom | one_sided
  config.audit.fractions = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)  # guesses / canaries
  config.audit.headline = "bonferroni"  # max over targets, each at 1 - 0.05/T | first_target

  config.inference = ml_collections.ConfigDict()
  config.inference.batch_size = 1024
  config.inference.dtype = "float32"   # float32 | float16 (half the logits store)

  config.attack = ml_collections.ConfigDict()
  config.attack.names = ALL_ATTACKS
  config.attack.num_targets = 0     # targets evaluated in turn (0: every model)
  config.attack.bootstrap = 0       # percentile-bootstrap resamples recorded per target for
                                    # comparison only (0: none); the 95% intervals are analytic
  config.attack.scaling_targets = 2  # targets of the shadow-scaling curve (0: no curve)
  config.attack.params = ml_collections.ConfigDict()   # per attack: params.<name>.<key>

  config.defense = ml_collections.ConfigDict()
  config.defense.post_hoc = ""       # applied to every released output before the attacks
                                     # (target and shadows: an attacker who knows it):
                                     # '' (none) | logit_reweighting
  config.defense.params = ml_collections.ConfigDict({"w": 0.1})  # the defense's parameters

  config.analysis = ml_collections.ConfigDict()   # mia_jax.analysis.stage, into WORKDIR/analysis
  config.analysis.enabled = False    # which examples leak and are they outliers (trains
                                     # reference_models more models on the test split)
  config.analysis.attacks = ("lira_online", "loss")   # scored with every model the target
  config.analysis.alphas = (0.01, 0.001)   # FPRs of the targets' thresholds
  config.analysis.reference_models = 4
  config.analysis.permutations = 2000      # of each permutation test
  config.analysis.null_draws = 1           # null-control studies on independent keep matrices
  config.analysis.null_permutations = 1000
  config.analysis.tsne_points = 1000       # pool examples in the t-SNE map (0: no map)

  if arg == "quick":
    config.membership.num_models = 4
    config.train.epochs = 10          # 40 steps: enough to learn (3 epochs of 2 steps did not)
    config.train.batch_size = 32
    config.data.pool_size = 200
    config.attack.bootstrap = 0
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'quick'")
  return config
