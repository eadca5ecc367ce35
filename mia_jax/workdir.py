"""A workdir belongs to one run: its record, its lock, and the checks made before any work.

The record, run_config.json, is the first thing a run writes into its workdir:

  {"mia_jax_workdir": 3, "kind": "train" | "attack_only", "fingerprint": {...}}

A training run's fingerprint is the config blocks that decide the trained models
(TRAINING_BLOCKS, and audit.num_canaries, which changes the data) plus a digest of the data's
content (`arrays_digest` of the arrays the models train and are tested on), so that a data file
edited in place is not resumed from checkpoints trained on its old content. An attack-only
run's fingerprint is the logits file's size and digest (`file_digest`). The attack block is in
neither: rerunning with other attacks rewrites the report of the same models (and says so).

`claim(workdir, kind, fingerprint)` decides, before anything is written:
- a new or empty folder: created, locked, the record written;
- a workdir whose record matches (same kind, same fingerprint): locked, resumed;
- a workdir of the other kind, or of another fingerprint: refused (WorkdirError), untouched,
  unless nothing but the record was ever written there (a run refused before its work);
- a non-empty folder without a record (not a mia_jax workdir): refused, untouched;
- a workdir that another process holds (fcntl lock on `.lock` in it): refused;
- a path below a regular file, a folder that cannot be written, or a disk with less free space
  than the run needs: refused.
Every refusal is one line saying what to do. The lock is held until `Claim.release()` (or the
process ends: the kernel releases it, so a killed run leaves no stale lock).
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable, Mapping

import ml_collections
import numpy as np

from mia_jax import report
from mia_jax.errors import WorkdirError

RECORD = "run_config.json"
LOCK = ".lock"
VERSION = 3   # 3: checkpoints hold training.TrainState (its step; DP: the privatiser's count)
KINDS = ("train", "attack_only")
# Config blocks that decide the trained models; a workdir's checkpoints belong to these values.
TRAINING_BLOCKS = ("seed", "data", "model", "membership", "train", "dp")
# Fields of those blocks that change how the models are trained or stored, never what they are.
_NOT_FINGERPRINTED = {"train": ("checkpoint_seconds",)}


def training_record(config: ml_collections.ConfigDict) -> dict:
  """The config values that decide a training run's models (JSON-able)."""
  d = config.to_dict()
  record = {k: d[k] for k in TRAINING_BLOCKS}
  for block, fields in _NOT_FINGERPRINTED.items():
    for field in fields:
      record[block].pop(field, None)
  record["audit"] = {"num_canaries": d["audit"]["num_canaries"]}   # canaries change the data
  return json.loads(json.dumps(record, default=str))


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> dict:
  """Shapes, dtypes and one BLAKE2b digest of the arrays' bytes, in key order."""
  h = hashlib.blake2b(digest_size=20)
  shapes = {}
  for key in sorted(arrays):
    a = np.ascontiguousarray(arrays[key])
    shapes[key] = f"{a.dtype.str}{list(a.shape)}"
    h.update(f"{key}:{shapes[key]};".encode())
    h.update(memoryview(a).cast("B"))
  return {"arrays": shapes, "blake2b": h.hexdigest()}


def file_digest(path: str) -> dict:
  """Size in bytes and BLAKE2b digest of a file's content."""
  h = hashlib.blake2b(digest_size=20)
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return {"bytes": os.path.getsize(path), "blake2b": h.hexdigest()}


def _nearest_existing(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  return path


def _writable(folder: str) -> str | None:
  """None if a file can be created (and removed) in `folder`, else the OS's reason."""
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mia-probe-")
    os.close(fd)
    os.remove(tmp)
    return None
  except OSError as e:
    return e.strerror or str(e)


def _read_record(workdir: str) -> dict | None:
  path = os.path.join(workdir, RECORD)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} cannot be read ({e}); it is damaged: use a new --workdir") from None
  if not isinstance(record, dict) or record.get("mia_jax_workdir") != VERSION:
    raise WorkdirError(f"--workdir={workdir} was written by an earlier version of mia_jax; "
                       "use a new --workdir (or delete that folder to start over)")
  return record


def _foreign(workdir: str) -> list[str]:
  return sorted(f for f in os.listdir(workdir) if f != RECORD and not f.startswith(LOCK))


def inspect(workdir: str, kind: str | None = None) -> dict | None:
  """Checks `workdir` without writing anything; returns its record (None: a new or empty folder).

  Raises WorkdirError for a path that is a file or lies below one, a folder (or the nearest
  existing parent of a new one) that cannot be written, a non-empty folder that is not a
  mia_jax workdir, and (given `kind`) a workdir of the other kind of run.
  """
  existing = _nearest_existing(workdir)
  if not os.path.isdir(existing):
    what = ("is a file" if existing == os.path.abspath(workdir)
            else f"lies below the file {existing}")
    raise WorkdirError(f"--workdir={workdir} {what}; give a folder (new or empty) for the run")
  reason = _writable(existing)
  if reason:
    where = "" if existing == os.path.abspath(workdir) else f" (its parent {existing})"
    raise WorkdirError(f"--workdir={workdir}{where} cannot be written: {reason}; give a "
                       "writable folder")
  if existing != os.path.abspath(workdir):
    return None
  record = _read_record(workdir)
  if record is None:
    foreign = _foreign(workdir)
    if foreign:
      shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
      entries = f"{len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'}"
      raise WorkdirError(f"--workdir={workdir} holds {entries} ({shown}) and is not a mia_jax "
                         "workdir; give a new or empty folder")
  elif kind is not None and record.get("kind") != kind:
    raise _other_kind(workdir, record.get("kind"), kind)
  return record


def _other_kind(workdir: str, there: str, kind: str) -> WorkdirError:
  return WorkdirError(f"--workdir={workdir} holds {_describe(there)}, whose results "
                      f"{_describe(kind)} would replace; give a new --workdir")


class Claim:
  """The lock of a claimed workdir (held from claim() until release() or the process's end)."""

  def __init__(self, workdir: str, fd: int, resumed: bool):
    self.workdir = workdir
    self.resumed = resumed      # the record was there: a rerun of the same run
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def _lock(workdir: str, process_index: int = 0) -> int:
  path = os.path.join(workdir, LOCK if process_index == 0 else f"{LOCK}.{process_index}")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      os.close(fd)
      raise
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
    os.close(fd)
    raise WorkdirError(f"--workdir={workdir} is in use by another mia_jax run (pid {holder}); "
                       "wait for it to end, or give another --workdir") from None
  return fd


def _folder_bytes(folder: str) -> int:
  total = 0
  for root, _, files in os.walk(folder):
    for f in files:
      try:
        total += os.path.getsize(os.path.join(root, f))
      except OSError:
        pass
  return total


def _describe(kind: str) -> str:
  return "a training run" if kind == "train" else "an attack-only audit"


def claim(workdir: str, kind: str, fingerprint: dict, *, needed_bytes: int = 0,
          log: Callable[[str], None] = print, process_index: int = 0) -> Claim:
  """Creates or reopens `workdir` for a run of `kind` and `fingerprint`, and locks it.

  Args:
    workdir: the run's folder.
    kind: "train" or "attack_only".
    fingerprint: what identifies the run (training_record plus a data digest; or the logits
      file's digest). JSON-able.
    needed_bytes: the disk space the run will write (checkpoints, logits); the claim is refused
      when the workdir's disk has less free space than that, less what the workdir holds.
    log: receives a line when the workdir is re-claimed.
    process_index: this process's index in a multi-host run (jax.process_index()): each process
      of one run holds its own lock file (.lock, .lock.1, ...), so two runs still exclude each
      other through process 0's.

  Returns:
    The Claim, whose lock the caller releases when the run ends.

  Raises:
    WorkdirError (one line) for every refusal listed in the module docstring; the folder is
    then as it was (a folder this call created is removed again).
  """
  assert kind in KINDS, kind
  fingerprint = json.loads(json.dumps(fingerprint, default=str))
  inspect(workdir, kind)
  created = not os.path.exists(workdir)
  fd = _create_and_lock(workdir, created, process_index)
  try:
    resumed = _take_record(workdir, kind, fingerprint, log)
    _check_space(workdir, needed_bytes)
    pid = str(os.getpid()).encode()
    if os.pread(fd, 64, 0) != pid:       # the holder's pid, for a second run's refusal
      os.ftruncate(fd, 0)
      os.pwrite(fd, pid, 0)
    return Claim(workdir, fd, resumed)
  except BaseException as e:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    if created:
      shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(e, OSError) and not isinstance(e, WorkdirError):
      raise WorkdirError(f"--workdir={workdir} cannot be written: {e.strerror or e}; make it "
                         "writable or give another --workdir") from None
    raise


def _create_and_lock(workdir: str, created: bool, process_index: int) -> int:
  """The folder made (if new) and locked: the lock file's descriptor; a folder this call
  created is removed again when that fails."""
  try:
    os.makedirs(workdir, exist_ok=True)
    return _lock(workdir, process_index)
  except OSError as e:
    if created:
      shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(e, WorkdirError):
      raise
    raise WorkdirError(f"--workdir={workdir} cannot be created: {e.strerror or e}; give a "
                       "writable folder") from None


def _take_record(workdir: str, kind: str, fingerprint: dict, log: Callable[[str], None]) -> bool:
  """Reads the record again under the lock and writes it where the folder is new (or held
  nothing but a refused run's record); True when the run resumes the recorded one."""
  record = _read_record(workdir)
  new = {"mia_jax_workdir": VERSION, "kind": kind, "fingerprint": fingerprint}
  if record is None:
    if _foreign(workdir):
      raise WorkdirError(f"--workdir={workdir} is not empty and not a mia_jax workdir; give a "
                         "new or empty folder")
    report.write_json_atomic(os.path.join(workdir, RECORD), new)
    return False
  if record.get("kind") != kind:
    raise _other_kind(workdir, record.get("kind"), kind)
  if record.get("fingerprint") != fingerprint:
    if _foreign(workdir):
      raise _other_run(workdir, kind, record.get("fingerprint"), fingerprint)
    log(f"workdir {workdir}: nothing was written by the run recorded there; claimed anew")
    report.write_json_atomic(os.path.join(workdir, RECORD), new)
    return False
  reason = _writable(workdir)
  if reason:
    raise WorkdirError(f"--workdir={workdir} cannot be written: {reason}; make it writable "
                       "or give another --workdir")
  return True


def _other_run(workdir: str, kind: str, recorded: dict, fingerprint: dict) -> WorkdirError:
  """The refusal of a workdir that holds a run of other content or another config."""
  diff = _first_difference(recorded, fingerprint)
  if diff.split(".")[0] in ("data_content", "logits_content"):
    what = "data" if diff.startswith("data") else "logits file"
    return WorkdirError(f"--workdir={workdir} holds {_describe(kind)} of other content: the "
                        f"{what} changed since ({diff}); restore it, or use a new --workdir")
  return WorkdirError(f"--workdir={workdir} holds {_describe(kind)} of another config "
                      f"({diff}); use a new --workdir, or delete that folder to start over")


def _check_space(workdir: str, needed_bytes: int) -> None:
  free = shutil.disk_usage(workdir).free
  short = needed_bytes - _folder_bytes(workdir) - free
  if short > 0:
    raise WorkdirError(
        f"--workdir={workdir}: its disk has {_size(free)} free, the run needs about "
        f"{_size(free + short)} (checkpoints, logits); free space or give a --workdir on "
        "another disk")


def _size(num_bytes: float) -> str:
  for unit in ("bytes", "KiB", "MiB", "GiB"):
    if num_bytes < 1024 or unit == "GiB":
      return f"{num_bytes:,.0f} {unit}" if unit == "bytes" else f"{num_bytes:,.1f} {unit}"
    num_bytes /= 1024
  return ""


def _first_difference(old, new, prefix="") -> str:
  if isinstance(old, dict) and isinstance(new, dict):
    for k in sorted(set(old) | set(new)):
      if old.get(k) != new.get(k):
        return _first_difference(old.get(k), new.get(k), f"{prefix}{k}.")
  return f"{prefix.rstrip('.')}: {_short(old)} there, {_short(new)} now"


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."
