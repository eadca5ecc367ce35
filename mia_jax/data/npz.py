"""Your own arrays as a dataset: `config.data.name = "path/to/file.npz"`.

The file holds
  x       [N, ...] inputs: [N, H, W, C] or [N, H, W] images (uint8 in 0..255, or floats), or
          [N, D] features (floats);
  y       [N] integer labels, 0..K-1 with every class present (contiguous from 0);
  x_test  optional [N_test, ...], the same trailing shape as x;
  y_test  optional [N_test], given exactly when x_test is.
As with every source, the arrays are joined and `mia_jax.data.load` shuffles and splits them
into pool, validation and test parts. Images (ndim 3 or 4) are scaled to [0, 1] when uint8 and
standardised per channel by `load`; features are used as given. num_classes is K, or
`config.data.num_classes` when that is larger (classes the labels do not show). Every check
that fails is a DataError of one line: a missing file or array, shapes that disagree, a
non-finite input, labels that are not integers contiguous from 0.

Example:

  np.savez("mine.npz", x=features.astype(np.float32), y=labels)
  python -m mia_jax.main --config=configs/default.py --config.data.name=mine.npz \
      --config.model.name=mlp --workdir=/tmp/mine
"""

import os
import zipfile

import ml_collections
import numpy as np

from mia_jax.data.sources import RawData
from mia_jax.errors import DataError

SUFFIX = ".npz"


def is_npz_name(name: str) -> bool:
  """True when a `data.name` names an .npz file."""
  return str(name).endswith(SUFFIX)


def _read(path: str) -> dict[str, np.ndarray]:
  """The arrays of the file (allow_pickle off), DataError when it cannot be read."""
  if not os.path.isfile(path):
    raise DataError(f"data file {path} not found; fix --config.data.name=FILE.npz")
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: np.asarray(f[k]) for k in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}); write it "
                    "with np.savez(path, x=..., y=...)") from None


def _check_shapes(path: str, arrays: dict[str, np.ndarray]) -> None:
  """x and y present; x_test and y_test together; one label per input; one input shape."""
  for key in ("x", "y"):
    if key not in arrays:
      raise DataError(f"{path} has no array {key!r} (it holds {sorted(arrays)}); save the "
                      "inputs as x and the labels as y")
  if ("x_test" in arrays) != ("y_test" in arrays):
    raise DataError(f"{path} holds only one of x_test and y_test; save both or neither")
  for xk, yk in (("x", "y"), ("x_test", "y_test")):
    if xk not in arrays:
      continue
    x, y = arrays[xk], arrays[yk]
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
      raise DataError(f"{path}: {xk} {list(x.shape)} and {yk} {list(y.shape)} do not match; "
                      f"{xk} must be [N, ...] and {yk} [N] with the same N")
    if x.dtype.kind not in "uif" or y.dtype.kind not in "uif":
      raise DataError(f"{path}: {xk} ({x.dtype}) and {yk} ({y.dtype}) must hold numbers")
  if "x_test" in arrays and arrays["x_test"].shape[1:] != arrays["x"].shape[1:]:
    raise DataError(f"{path}: x_test examples are {list(arrays['x_test'].shape[1:])}, x examples "
                    f"{list(arrays['x'].shape[1:])}; save both with one input shape")


def _labels(path: str, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, int]:
  """Integer labels [N] contiguous from 0 and the class count."""
  if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
    raise DataError(f"{path}: the labels must be integers (found {y[~(y == np.round(y))][:1]})")
  y = y.astype(np.int64)
  present = np.unique(y)
  if present[0] != 0 or len(present) != present[-1] + 1:
    missing = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
    raise DataError(f"{path}: labels run {int(present[0])}..{int(present[-1])}"
                    + (f" without class(es) {missing[:5]}" if missing else "")
                    + "; relabel them 0..K-1 with every class present")
  return y.astype(np.int32), max(int(present[-1]) + 1, num_classes)


def load_npz(config: ml_collections.ConfigDict) -> RawData:
  """The arrays of `config.name` (an .npz path) as RawData, checked (module docstring)."""
  path = str(config.name)
  arrays = _read(path)
  _check_shapes(path, arrays)
  has_test = "x_test" in arrays
  x = np.concatenate([arrays["x"], arrays["x_test"]]) if has_test else arrays["x"]
  y = np.concatenate([arrays["y"], arrays["y_test"]]) if has_test else arrays["y"]
  if x.dtype.kind == "f" and not np.isfinite(x).all():
    bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    raise DataError(f"{path}: {len(bad)} examples hold NaN or infinite inputs (the first: "
                    f"example {int(bad[0])} of x then x_test); mend the data")
  y, num_classes = _labels(path, y, int(config.get("num_classes", 0) or 0))
  is_image = x.ndim in (3, 4)
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  x = x.astype(np.float32)
  if x.ndim == 3:
    x = x[..., None]
  return RawData(x=x, y=y, num_classes=num_classes, is_image=is_image)
