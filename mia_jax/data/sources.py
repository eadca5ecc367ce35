"""Readers of raw data: scikit-learn digits, IDX .gz files, tensorflow-datasets, tabular text.

Each returns `RawData` with every split of the source joined; `mia_jax.data` splits it.
Readers check what they read and raise `DataError` with a one-line remedy on a missing,
truncated or corrupt file.
"""

import dataclasses
import gzip
import os
import zlib

import ml_collections
import numpy as np

from mia_jax.errors import ConfigError, DataError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclasses.dataclass(frozen=True)
class RawData:
  x: np.ndarray          # [N, H, W, C] images scaled to [0, 1], or [N, D] features
  y: np.ndarray          # [N] integer labels
  num_classes: int
  is_image: bool


def load_digits(config: ml_collections.ConfigDict) -> RawData:
  del config
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  x = (d.images.astype(np.float32) / 16.0)[..., None]
  return RawData(x=x, y=d.target.astype(np.int32), num_classes=10, is_image=True)


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (gzip-compressed or not) into an array of its stored shape."""
  if not os.path.isfile(path):
    raise DataError(f"data file {path} not found")
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path} is truncated or not a valid gzip file ({e}); "
                    "download or reinstall it") from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise DataError(f"{path} is not an IDX file (bad magic number); check the file")
  ndim = data[3]
  header = 4 + 4 * ndim
  if ndim == 0 or len(data) < header:
    raise DataError(f"{path} is truncated inside its IDX header; download it again")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_IDX_DTYPES[data[2]])
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise DataError(f"{path} holds {len(data)} bytes but its IDX header {shape} needs "
                    f"{expected}; the file is truncated or corrupt, download it again")
  return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _load_idx_dir(directory: str, name: str, hint: str, num_classes: int = 10) -> RawData:
  """The four IDX files of an MNIST-format set, checked against each other: images [n, H, W]
  uint8 of one size in both splits, labels [n] uint8 in [0, num_classes), n equal in the image
  and label file of each split."""
  paths = [os.path.join(directory, f) for f in IDX_FILES]
  for p in paths:
    if not os.path.isfile(p):
      raise DataError(f"{name}: {p} not found; {hint}, or point --config.data.dir at the folder "
                      "that holds the four IDX .gz files")
  arrays = [read_idx(p) for p in paths]
  for p, a, kind in zip(paths, arrays, ("images", "labels", "images", "labels")):
    ndim = 3 if kind == "images" else 1
    if a.ndim != ndim or a.dtype != np.uint8:
      raise DataError(f"{name}: {p} holds {a.dtype} {list(a.shape)}, not the {kind} it is named "
                      f"for (uint8 [{'n, H, W' if ndim == 3 else 'n'}]); the files are swapped or "
                      "damaged, download them again")
  train_x, train_y, test_x, test_y = arrays
  if len(train_x) != len(train_y) or len(test_x) != len(test_y):
    raise DataError(f"{name}: image and label files in {directory} disagree in length; "
                    "download them again")
  if train_x.shape[1:] != test_x.shape[1:]:
    raise DataError(f"{name}: train images are {train_x.shape[1:]}, test images "
                    f"{test_x.shape[1:]}; download the files again")
  for p, y in ((paths[1], train_y), (paths[3], test_y)):
    bad = np.flatnonzero(y >= num_classes)
    if len(bad):
      raise DataError(f"{name}: {p} holds label {int(y[bad[0]])} at index {int(bad[0])} "
                      f"({len(bad)} label{'s' * (len(bad) != 1)} outside 0..{num_classes - 1}); "
                      "the file is corrupt, "
                      "download it again")
  x = np.concatenate([train_x, test_x]).astype(np.float32) / 255.0
  y = np.concatenate([train_y, test_y]).astype(np.int32)
  return RawData(x=x[..., None], y=y, num_classes=num_classes, is_image=True)


def load_fashion_mnist(config: ml_collections.ConfigDict) -> RawData:
  return _load_idx_dir(config.dir or DEBIAN_FASHION_MNIST, "fashion_mnist",
                       "install it with `apt-get install dataset-fashion-mnist`")


def load_mnist(config: ml_collections.ConfigDict) -> RawData:
  if not config.dir:
    raise DataError("mnist: no folder given; set --config.data.dir to the folder that holds "
                    "train-images-idx3-ubyte.gz and the other three IDX files")
  return _load_idx_dir(config.dir, "mnist", "download the four MNIST IDX .gz files")


def load_tabular(config: ml_collections.ConfigDict) -> RawData:
  """Purchase100 / Texas100 text: one record per line, the label then the features,
  separated by commas or whitespace; every value a finite number, the labels integers.

  Labels start at `config.label_base` (0 or 1; 1-based are shifted down). With label_base -1
  (auto), the labels must say it themselves: 0..K-1 with every class present, or 1..C with
  every class present and C = config.num_classes. Anything else (a gap, or 1..K that may be a
  0-based file without class 0) is refused: a wrong guess would shift every class.
  """
  path = config.file
  if not path:
    raise DataError(f"{config.name}: no data file given; set --config.data.file=PATH to a text "
                    "file with the label then the features on each line")
  if not os.path.isfile(path):
    raise DataError(f"{config.name}: data file {path} not found; fix --config.data.file")
  rows = []
  width = None
  with open(path, "r", encoding="utf-8", errors="replace") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      parts = line.replace(",", " ").split()
      try:
        values = [float(v) for v in parts]
      except ValueError:
        raise DataError(f"{path}:{lineno}: not numbers; each line must hold the label then "
                        "the features") from None
      if width is None:
        width = len(values)
      if len(values) != width or width < 2:
        raise DataError(f"{path}:{lineno}: {len(values)} values where line 1 had {width}; "
                        "every line needs the label and the same number of features")
      rows.append(values)
  if not rows:
    raise DataError(f"{path} holds no records; check --config.data.file")
  table = np.asarray(rows, dtype=np.float64)
  finite = np.isfinite(table)
  if not finite.all():
    row, col = np.argwhere(~finite)[0]
    count = int((~finite).sum())
    raise DataError(f"{path}: record {row + 1} holds {table[row, col]} in column {col + 1} "
                    f"({count} value{'s' * (count != 1)} in all NaN or infinite); every value "
                    "must be a finite number")
  y = table[:, 0]
  if not np.all(y == np.round(y)):
    raise DataError(f"{path}: the first column (labels) must hold integers")
  y = y.astype(np.int64)
  y, num_classes = _labels_from(y, int(config.get("label_base", -1)),
                                int(config.get("num_classes", 0) or 0), path)
  return RawData(x=table[:, 1:].astype(np.float32), y=y.astype(np.int32),
                 num_classes=num_classes, is_image=False)


def _labels_from(y: np.ndarray, base: int, num_classes: int, path: str) -> tuple[np.ndarray, int]:
  """0-based labels and the class count (load_tabular's docstring says how)."""
  lo, hi = int(y.min()), int(y.max())
  present = np.unique(y)
  if base not in (-1, 0, 1):
    raise DataError(f"data.label_base={base}: give 0 or 1 (the first class's label), or -1 "
                    "(from the labels)")
  if base == -1:
    contiguous = len(present) == hi - lo + 1
    if lo == 0 and contiguous:
      base = 0
    elif lo == 1 and contiguous and hi == num_classes:
      base = 1
    elif lo == 1 and contiguous:
      raise DataError(f"{path}: labels run 1..{hi}: 1-based with {hi} classes, or 0-based "
                      "without class 0? say which with --config.data.label_base=1 (or 0), or "
                      f"--config.data.num_classes={hi} for 1-based labels")
    else:
      missing = sorted(set(range(min(lo, 0), hi + 1)) - set(present.tolist()))
      shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
      raise DataError(f"{path}: labels {lo}..{hi} have no example of class(es) {shown}; if that "
                      "is right, set --config.data.label_base=0 (or 1) and "
                      "--config.data.num_classes")
  y = y - base
  classes = max(num_classes, int(y.max()) + 1)
  if y.min() < 0 or y.max() >= classes:
    raise DataError(f"{path}: labels {lo}..{hi} do not fit label_base {base} and "
                    f"{classes} classes; labels must be {base}..{base + classes - 1}")
  return y, classes


def load_tfds(config: ml_collections.ConfigDict) -> RawData:
  """Any tfds image classification dataset through `tfds.data_source` (no TensorFlow needed
  to read a prepared dataset; preparing one needs the `tfds` extra). All splits are joined
  (`config.splits` to choose them)."""
  name = config.name[len("tfds:"):]
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError(f"tensorflow-datasets is not importable ({e}); "
                      "pip install 'mia_jax[tfds]'") from None
  kwargs = {"data_dir": config.dir} if config.dir else {}
  try:
    builder = tfds.builder(name, **kwargs)
    splits = list(config.get("splits", ()) or builder.info.splits.keys() or ("train", "test"))
    sources_ = tfds.data_source(name, split=splits, download=bool(config.get("download", False)),
                                **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"tfds:{name} could not be read ({type(e).__name__}: {str(e).splitlines()[0]}); "
                    "prepare it first (pip install 'mia_jax[tfds]'; tfds build "
                    f"{name}) or set --config.data.dir") from None
  image_key = config.get("image_key", "image")
  label_key = config.get("label_key", "label")
  xs, ys = [], []
  for src in sources_:
    n = len(src)
    recs = [src[i] for i in range(n)]
    xs.append(np.stack([np.asarray(r[image_key]) for r in recs]))
    ys.append(np.asarray([int(r[label_key]) for r in recs]))
  x = np.concatenate(xs)
  if x.ndim == 3:
    x = x[..., None]
  x = x.astype(np.float32) / 255.0
  y = np.concatenate(ys).astype(np.int32)
  num_classes = builder.info.features[label_key].num_classes
  return RawData(x=x, y=y, num_classes=int(num_classes), is_image=True)
