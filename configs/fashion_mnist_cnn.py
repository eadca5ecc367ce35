r"""The audit of 64 CNNs on Fashion-MNIST (the Debian package's IDX files), sized for a 2-core CPU.

  apt-get install dataset-fashion-mnist      # /usr/share/datasets/fashion-mnist
  python -m mia_jax.main --config=configs/fashion_mnist_cnn.py --workdir=/tmp/mia_fmnist_cnn

64 CNNs (conv 32, conv 64, dense 128) on random halves of a 4,000-example pool, 10 epochs,
trained 16 models at a time (`train.chunk_size`: each chunk checkpointed and resumed on its
own); about 4 minutes of training on a 2-core CPU under `train.strategy=auto` (the loop with
forward convolutions; 6 minutes for the whole run; see experiments/results/bench_ensemble.md). The logits store is float16 (half the memory; see
mia_jax/inference.py for what it costs the scores).
`:quick` shrinks it to a smoke run (8 models, a 512-example pool, 10 epochs of batch 16).
What it reaches: `:quick` 41% test accuracy in about 90 s (tests/test_pipeline.py,
test_shipped_config_quick_variant_learns); the full run's accuracy is not measured here yet.
"""

from mia_jax import config_lib


def get_config(arg: str = ""):
  config = config_lib.sibling(__file__, "default").get_config()
  config.data.name = "fashion_mnist"
  config.data.dir = ""               # '' = /usr/share/datasets/fashion-mnist
  config.data.pool_size = 4_000
  config.data.val_size = 1_000
  config.data.test_size = 2_000
  config.model.name = "cnn"
  config.model.channels = (32, 64)
  config.model.dense = 128
  config.model.norm = "none"
  config.membership.num_models = 64
  config.train.epochs = 10
  config.train.batch_size = 128
  config.train.strategy = "auto"     # vmap | loop | shared | sharded | auto
  config.train.conv = "auto"         # lax | im2col | forward | auto (mapping.resolve)
  config.train.chunk_size = 16       # models trained (and checkpointed) together; 0 = all
  config.inference.dtype = "float16"
  config.attack.num_targets = 8
  if arg == "quick":
    config.data.pool_size = 512
    config.data.val_size = 128
    config.data.test_size = 256
    config.membership.num_models = 8
    config.train.chunk_size = 4
    config.train.epochs = 10           # 160 steps of 16: it learns (1 epoch of 2 did not)
    config.train.batch_size = 16
    config.attack.bootstrap = 0
    config.attack.num_targets = 2
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'quick'")
  return config
