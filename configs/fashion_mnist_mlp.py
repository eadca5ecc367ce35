r"""The audit on Fashion-MNIST (70k 28x28 images) read from the Debian package's IDX files.

  apt-get install dataset-fashion-mnist      # /usr/share/datasets/fashion-mnist
  python -m mia_jax.main --config=configs/fashion_mnist_mlp.py --workdir=/tmp/mia_fmnist

16 MLPs on random halves of a 20,000-example pool; a few minutes on a 2-core CPU.
`:quick` shrinks it (4 models, a 2,000-example pool, 2 epochs).

What it reaches: the same recipe with 64 models on a 10,000-example pool for 20 epochs, 85.6%
test accuracy (98.7% train), 5.4 min of training on the 2-core CPU
(experiments/results/fashion_mnist_64_audit.md); `:quick` 73% (tests/test_pipeline.py,
test_shipped_config_quick_variant_learns).
"""

from mia_jax import config_lib


def get_config(arg: str = ""):
  config = config_lib.sibling(__file__, "default").get_config()
  config.data.name = "fashion_mnist"
  config.data.dir = ""               # '' = /usr/share/datasets/fashion-mnist
  config.data.pool_size = 20_000
  config.data.val_size = 2_000
  config.data.test_size = 10_000
  config.model.hidden = (512, 256)
  config.train.epochs = 30
  config.train.batch_size = 128
  config.membership.num_models = 16
  if arg == "quick":
    config.data.pool_size = 2_000
    config.data.val_size = 500
    config.data.test_size = 2_000
    config.membership.num_models = 4
    config.train.epochs = 2
    config.attack.bootstrap = 0
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'quick'")
  return config
