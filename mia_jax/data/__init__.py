"""Datasets behind a registry, and the pool / population split an audit needs.

`load(config.data, seed)` returns a `Dataset`:
  pool_x [N, ...], pool_y [N]        the examples whose membership is audited
  val_x, val_y                       held out from every model (early stopping)
  test_x, test_y                     held out from every model (test accuracy, RMIA's population)

Sources (`config.data.name`):
  digits             scikit-learn's bundled 8x8 digits (1,797 images; nothing to download)
  fashion_mnist      IDX .gz files in `config.data.dir` (default: the Debian package's path)
  mnist              IDX .gz files in `config.data.dir`
  tfds:<name>        any tensorflow-datasets image classification set, e.g. tfds:cifar10
  purchase100        text file `config.data.file`: label then binary features per line
  texas100           same format
  path/to/file.npz   your own arrays x, y (optional x_test, y_test): see mia_jax.data.npz

All sources are pooled (train and test splits joined), shuffled once with `config.data.seed`,
and split into pool, validation and test parts, as the study pools CIFAR-10's 60k images.
"""

import dataclasses
from typing import Callable

import ml_collections
import numpy as np

from mia_jax.data import augment, canaries, membership, npz, sources
from mia_jax.errors import ConfigError, DataError

__all__ = ["Dataset", "augment", "canaries", "check_name", "check_raw", "load", "load_raw",
           "membership", "names", "normalise", "npz", "register", "sources", "split_sizes"]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Normalised arrays, images as [N, H, W, C] float32, tabular as [N, D] float32."""
  pool_x: np.ndarray
  pool_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  is_image: bool
  name: str

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.pool_x.shape[1:])


_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], sources.RawData]] = {
    "digits": sources.load_digits,
    "fashion_mnist": sources.load_fashion_mnist,
    "mnist": sources.load_mnist,
    "purchase100": sources.load_tabular,
    "texas100": sources.load_tabular,
}


def names() -> list[str]:
  return sorted(_REGISTRY) + ["tfds:<name>", "<file>.npz"]


def register(name: str, loader: Callable[[ml_collections.ConfigDict], sources.RawData]) -> None:
  _REGISTRY[name] = loader


def check_name(name: str) -> None:
  if (name.startswith("tfds:") and len(name) > 5) or npz.is_npz_name(name):
    return
  if name not in _REGISTRY:
    raise ConfigError(f"unknown dataset {name!r}; choose one of {names()} "
                      "with --config.data.name=NAME")


def load_raw(config: ml_collections.ConfigDict) -> sources.RawData:
  """The source's arrays, checked (check_raw)."""
  check_name(config.name)
  if config.name.startswith("tfds:"):
    raw = sources.load_tfds(config)
  elif npz.is_npz_name(config.name):
    raw = npz.load_npz(config)
  else:
    raw = _REGISTRY[config.name](config)
  check_raw(raw, config.name)
  return raw


def check_raw(raw: sources.RawData, name: str) -> None:
  """Raises DataError unless x [N, ...] is finite, y [N] holds integers in [0, num_classes)
  with num_classes >= 2, and x and y have one row per example."""
  if len(raw.x) != len(raw.y) or raw.y.ndim != 1:
    raise DataError(f"dataset {name!r}: {len(raw.x)} inputs but labels of shape "
                    f"{raw.y.shape}; its files disagree, check them")
  if raw.x.dtype.kind == "f" and not np.isfinite(raw.x).all():
    bad = np.flatnonzero(~np.isfinite(raw.x.reshape(len(raw.x), -1)).all(axis=1))
    raise DataError(f"dataset {name!r}: {len(bad)} examples hold NaN or infinite inputs (the "
                    f"first: example {int(bad[0])}); mend the data")
  if len(raw.y) and (raw.y.min() < 0 or raw.y.max() >= raw.num_classes):
    raise DataError(f"dataset {name!r}: labels range over {int(raw.y.min())}..{int(raw.y.max())} "
                    f"but it has {raw.num_classes} classes; mend the labels")
  if raw.num_classes < 2:
    raise DataError(f"dataset {name!r} has {raw.num_classes} class(es); an audit needs 2 or more")


def split_sizes(total: int, config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(pool, val, test) sizes; pool_size <= 0 means 'what val and test leave'."""
  val = int(config.val_size)
  test = int(config.test_size) if config.test_size > 0 else None
  pool = int(config.pool_size)
  if pool <= 0:
    pool = total - val - (test or 0)
  if test is None:
    test = total - pool - val
  if pool < 2 or val < 0 or test < 1 or pool + val + test > total:
    raise ConfigError(
        f"dataset {config.name!r} has {total} examples, too few for pool_size={config.pool_size}, "
        f"val_size={config.val_size}, test_size={config.test_size}; lower them "
        "(--config.data.pool_size=N)")
  return pool, val, test


def load(config: ml_collections.ConfigDict) -> Dataset:
  """Loads, normalises and splits the dataset that `config` (the `data` block) names."""
  raw = load_raw(config)
  x, y = raw.x, raw.y.astype(np.int32)
  pool, val, test = split_sizes(len(y), config)
  order = np.random.default_rng(int(config.seed)).permutation(len(y))
  x, y = x[order], y[order]
  x = normalise(x, raw.is_image, stats_from=x[:pool], enabled=bool(config.normalise))
  cut1, cut2 = pool, pool + val
  return Dataset(
      pool_x=x[:cut1], pool_y=y[:cut1],
      val_x=x[cut1:cut2], val_y=y[cut1:cut2],
      test_x=x[cut2:cut2 + test], test_y=y[cut2:cut2 + test],
      num_classes=raw.num_classes, is_image=raw.is_image, name=config.name)


def normalise(x: np.ndarray, is_image: bool, stats_from: np.ndarray,
              enabled: bool = True) -> np.ndarray:
  """Images: per-channel standardisation with the pool's mean and std. Tabular: unchanged."""
  x = x.astype(np.float32)
  if not (enabled and is_image):
    return x
  axes = tuple(range(stats_from.ndim - 1))
  mean = stats_from.astype(np.float64).mean(axis=axes)
  std = stats_from.astype(np.float64).std(axis=axes) + 1e-8
  return ((x - mean) / std).astype(np.float32)
