"""The logits file an audit reads in attack-only mode: its layout and its checks.

The layout is the logits.npz that pipeline.run writes, so a run of any framework (say
PyTorch models) can be audited by saving its outputs with np.savez:

  logits             float [M, N, Q, C] (or [M, N, C]: one query): model m, pool example n,
                     query q (e.g. the image and its mirror), class c.
  labels             int [N] true classes in [0, C).
  keep               bool (or 0/1) [M, N]: model m trained on example n. M >= 2.
  population_logits  optional float [M, P, Q, C] (or [M, P, C]) on examples no model saw
                     (RMIA's z samples; test accuracy).
  population_labels  int [P], given with population_logits.

The file is read with allow_pickle=False, so it cannot run code. An example IN for no model
or for every model is allowed (LiRA borrows its missing statistics); a target model without
members or without non-members is refused by pipeline.run_attack_only.
"""

import os
import zipfile
import zlib

import numpy as np

from mia_jax.attacks.base import AttackData
from mia_jax.errors import DataError

KEYS = ("logits", "labels", "keep", "population_logits", "population_labels")
# Beyond this magnitude float32 resolves steps of 0.06 or more: the differences of logits that
# every signal reads (softmax, the scaled logit) lose their digits. Real models stay far below.
MAX_ABS_LOGIT = 1e6


def _logits_array(a: np.ndarray, key: str, path: str, rows: int | None = None) -> np.ndarray:
  """Checks logits [M, X, Q, C] (or [M, X, C], given Q = 1): float, finite."""
  if a.ndim == 3:
    a = a[:, :, None, :]
  if a.ndim != 4:
    raise DataError(f"{path}: {key} has shape {a.shape}; it must be [M, N, Q, C] or [M, N, C]")
  if a.dtype.kind != "f":
    raise DataError(f"{path}: {key} has dtype {a.dtype}; save float logits (float16/32/64)")
  if rows is not None and a.shape[0] != rows:
    raise DataError(f"{path}: {key} has {a.shape[0]} models, logits {rows}; save the same models")
  bad = int(a.size - np.count_nonzero(np.isfinite(a)))
  if bad:
    raise DataError(f"{path}: {key} holds {bad} NaN or infinite values; save finite logits")
  peak = float(np.max(np.abs(a))) if a.size else 0.0
  if peak > MAX_ABS_LOGIT:
    raise DataError(f"{path}: {key} reach {peak:.3g} in magnitude, beyond {MAX_ABS_LOGIT:g} "
                    "where float32 scores lose their digits; save the models' raw logits")
  return a


def _labels_array(a: np.ndarray, key: str, path: str, size: int, num_classes: int) -> np.ndarray:
  """Checks labels [size]: integers in [0, num_classes)."""
  if a.shape != (size,):
    raise DataError(f"{path}: {key} has shape {a.shape}; it must be [{size}], one per example")
  if a.dtype.kind not in "iu":
    raise DataError(f"{path}: {key} has dtype {a.dtype}; save integer class indices")
  if size and (a.min() < 0 or a.max() >= num_classes):
    raise DataError(f"{path}: {key} range over [{a.min()}, {a.max()}] but the logits have "
                    f"{num_classes} classes; labels must lie in [0, {num_classes})")
  return a.astype(np.int64)


def load(path: str) -> AttackData:
  """Reads and checks the logits file at `path` (layout above).

  Returns:
    AttackData with logits [M, N, Q, C] (a query axis added where the file has none), labels
    int64 [N], keep bool [M, N] and the population arrays when the file holds them.

  Raises:
    DataError, with one line saying what is wrong, for a missing or unreadable file, a
    missing or unknown key, a wrong rank, shape or dtype, non-finite logits or logits beyond
    MAX_ABS_LOGIT in magnitude, labels out of range, keep not boolean (or 0/1), or fewer than
    2 models.
  """
  arrays = _read_arrays(path)
  logits = _logits_array(arrays["logits"], "logits", path)
  m, n, q, c = logits.shape
  if m < 2:
    raise DataError(f"{path}: logits hold {m} model(s); an audit needs at least 2 (a target "
                    "and a shadow)")
  if c < 2:
    raise DataError(f"{path}: logits have {c} class(es); save the logits of all C >= 2 classes")
  labels = _labels_array(arrays["labels"], "labels", path, n, c)
  keep = arrays["keep"]
  if keep.shape != (m, n):
    raise DataError(f"{path}: keep has shape {keep.shape}; it must be [M, N] = [{m}, {n}]")
  if keep.dtype != np.bool_:
    if keep.dtype.kind not in "iuf" or not np.isin(keep, (0, 1)).all():
      raise DataError(f"{path}: keep ({keep.dtype}) must be boolean or 0/1")
    keep = keep.astype(bool)
  pop_logits, pop_labels = _population(arrays, path, m, q, c)
  return AttackData(logits=logits, labels=labels, keep=keep,
                    population_logits=pop_logits, population_labels=pop_labels)


def _read_arrays(path: str) -> dict[str, np.ndarray]:
  """The named arrays of the .npz at path: the known keys only, logits, labels and keep
  present (DataError otherwise)."""
  if not os.path.isfile(path):
    raise DataError(f"logits file {path} not found; pass --config.logits=FILE.npz")
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise DataError(f"{path} holds one array, not an .npz of named arrays; write it with "
                      "np.savez(path, logits=..., labels=..., keep=...)")
    with loaded:
      unknown = sorted(set(loaded.files) - set(KEYS))
      if unknown:
        raise DataError(f"{path} holds unknown arrays {unknown}; the keys are {list(KEYS)}")
      missing = [k for k in KEYS[:3] if k not in loaded.files]
      if missing:
        raise DataError(f"{path} lacks {missing}; save logits [M, N, Q, C], labels [N] and "
                        "keep [M, N] with np.savez")
      return {k: loaded[k] for k in loaded.files}
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"{path} is not a readable .npz of numeric arrays ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); write it with np.savez") from e


def _population(arrays: dict, path: str, m: int, q: int, c: int):
  """(population_logits [M, P, Q, C], population_labels [P]) checked, or (None, None)."""
  has_pop = ["population_logits" in arrays, "population_labels" in arrays]
  if any(has_pop) and not all(has_pop):
    raise DataError(f"{path}: give population_logits and population_labels together, or neither")
  if not any(has_pop):
    return None, None
  pop_logits = _logits_array(arrays["population_logits"], "population_logits", path, m)
  if pop_logits.shape[2:] != (q, c):
    raise DataError(f"{path}: population_logits {pop_logits.shape} must be [M, P, Q, C] with "
                    f"the logits' Q = {q} and C = {c}")
  pop_labels = _labels_array(arrays["population_labels"], "population_labels", path,
                             pop_logits.shape[1], c)
  return pop_logits, pop_labels
