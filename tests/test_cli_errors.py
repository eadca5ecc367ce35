"""Every user mistake and environment failure ends with one `error:` line and exit status 2
(130 and `interrupted; rerun the same command to resume` for Ctrl-C), before any training, and
leaves every folder as it was; the cases of issue 15 as one table.

The table runs the command line in this process (mia_jax.main's flag parser and main, as
absl's app.run calls them): a subprocess costs about 3 s of jax start-up per case. A few cases
run as real subprocesses: the exit status, the absence of tracebacks, Ctrl-C and two processes
at once into one workdir.
"""

import errno
import gzip
import hashlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import time

from absl import flags
import numpy as np
import pytest

from mia_jax import data, pipeline, report
from mia_jax import workdir as workdir_lib
from mia_jax.data import canaries as canaries_lib

from conftest import ROOT, load_config

QUICK = ["--config=configs/default.py:quick", "--config.model.hidden=(16,)"]


_MAIN_FLAGS = ("config", "workdir", "verbose", "compilation_cache")


def cli(args: list[str], capsys) -> tuple[int, str]:
  """Runs `python -m mia_jax.main *args` in this process; returns (exit status, stderr).

  mia_jax.main defines absl flags when imported, as experiments/paper_table.py does (tests of
  both share a worker): the flags of that name are set aside, mia_jax.main imported afresh,
  and everything put back afterwards.
  """
  argv = ["mia_jax.main", *args]
  saved_argv, saved_flags = sys.argv, {}
  for name in _MAIN_FLAGS:
    if name in flags.FLAGS:
      saved_flags[name] = flags.FLAGS[name]
      delattr(flags.FLAGS, name)
  sys.modules.pop("mia_jax.main", None)
  mia_main = importlib.import_module("mia_jax.main")
  sys.argv = argv          # config_flags reads its overrides from sys.argv
  code = 0
  try:
    mia_main.main(mia_main.parse_flags(argv))
  except SystemExit as e:
    code = e.code
  finally:
    logging.disable(logging.NOTSET)       # main's error path silences logging for good
    sys.argv = saved_argv
    flags.FLAGS.unparse_flags()
    for name in list(flags.FLAGS):
      if name in _MAIN_FLAGS or name.startswith("config."):   # and config_flags' overrides
        delattr(flags.FLAGS, name)
    for name, flag in saved_flags.items():
      flags.FLAGS[name] = flag
    sys.modules.pop("mia_jax.main", None)
  return code, capsys.readouterr().err


def snapshot(folder) -> dict:
  """Every path under `folder` with its content's digest (folders: None)."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for d in dirs:
      out[os.path.relpath(os.path.join(root, d), folder)] = None
    for f in files:
      path = os.path.join(root, f)
      with open(path, "rb") as fh:
        out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
  return out


# --- what the cases need, written into tmp_path ----------------------------------------------

def _write_idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())


def _idx_dir(folder, damage=None):
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (300, 6, 6), dtype=np.uint8),
            "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 300, dtype=np.uint8),
            "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (100, 6, 6), dtype=np.uint8),
            "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 100, dtype=np.uint8)}
  if damage == "images as labels":
    arrays["train-labels-idx1-ubyte.gz"] = arrays["train-images-idx3-ubyte.gz"]
  elif damage == "label 200":
    arrays["train-labels-idx1-ubyte.gz"][17] = 200
  for name, a in arrays.items():
    _write_idx(os.path.join(folder, name), a)
  if damage == "truncated":
    path = os.path.join(folder, "t10k-images-idx3-ubyte.gz")
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
      f.write(raw[:-5])
  return folder


def _tabular(path, labels=None, bad=None):
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 500) if labels is None else labels
  rows = [[int(y)] + list(rng.integers(0, 2, 6)) for y in labels]
  lines = [",".join(str(v) for v in r) for r in rows]
  if bad is not None:
    lines[2] = lines[2].rsplit(",", 1)[0] + f",{bad}"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _config(*overrides):
  """configs/default.py:quick with QUICK's and these overrides applied, as the CLI would."""
  c = load_config("default", "quick")
  c.model.hidden = (16,)
  for o in overrides:
    key, value = o[len("--config."):].split("=", 1)
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"
  return c


def _claimed(workdir, kind="train", config=None, outputs=("keep.npy",)):
  """A workdir as a finished run leaves it: the record of `config`'s run, and outputs."""
  config = config or _config()
  if kind == "train":
    ds = data.load(config.data)
    ds, _ = canaries_lib.plant(ds, int(config.audit.num_canaries), int(config.data.seed))
    fingerprint = pipeline.training_fingerprint(config, ds)
  else:
    fingerprint = {"logits_content": {"bytes": 1, "blake2b": "0" * 40}}
  workdir_lib.claim(str(workdir), kind, fingerprint, log=lambda s: None).release()
  for name in outputs:
    (workdir / name).write_bytes(b"an earlier run's output")
  return str(workdir)


def _logits_file(path, scale=1.0):
  rng = np.random.default_rng(0)
  keep = np.zeros((4, 40), bool)
  for i in range(40):
    keep[rng.permutation(4)[:2], i] = True
  np.savez(path, logits=rng.normal(size=(4, 40, 1, 3)).astype(np.float32) * scale,
           labels=rng.integers(0, 3, 40), keep=keep)
  return str(path)


def _broken_config(tmp):
  path = tmp / "broken.py"
  path.write_text("def get_config(:\n  return None\n")
  return str(path)


# --- the table: name -> (arguments, the error line must contain, prepare(tmp) -> fields) -------

NEW = "--workdir={tmp}/new"
CASES = {
    # the config file and the flags
    "config file missing": (["--config=configs/no_such.py", NEW],
                            "config file configs/no_such.py not found", None),
    "config file with a syntax error": (["--config={broken}", NEW], "line 1: invalid syntax",
                                        lambda t: {"broken": _broken_config(t)}),
    "config argument unknown": (["--config=configs/default.py:quik", NEW],
                                "get_config('quik') fails", None),
    "typo'd field": (QUICK + ["--config.train.epocs=3", NEW],
                     "no field train.epocs; did you mean --config.train.epochs?", None),
    "typo'd block": (QUICK + ["--config.trian.epochs=3", NEW], "did you mean --config.train?",
                     None),
    "unparsable value": (QUICK + ["--config.train.epochs=abc", NEW],
                         "train.epochs holds an int (now 10) and 'abc' is not one", None),
    "unknown flag": (QUICK + ["--epochs=3", NEW], "Unknown command line flag 'epochs'", None),
    "workdir not given": (QUICK, "--workdir is required", None),
    # config values
    "NaN learning rate": (QUICK + ["--config.train.learning_rate=nan", NEW],
                          "train.learning_rate=nan is not a finite number", None),
    "infinite weight decay": (QUICK + ["--config.train.l2=inf", NEW],
                              "train.l2=inf is not a finite number", None),
    "hidden width 0": (QUICK[:1] + ["--config.model.hidden=(0,)", NEW],
                       "model.hidden=(0,) must be positive layer widths", None),
    "dropout 1": (QUICK + ["--config.model.dropout=1.0", NEW], "model.dropout=1.0 must lie in",
                  None),
    "batch beyond each model's examples": (QUICK + ["--config.train.batch_size=100000", NEW],
                                           "train.batch_size=100000 is larger than the", None),
    "negative target epsilon": (QUICK + ["--config.dp.enabled=True",
                                         "--config.dp.target_epsilon=-1", NEW],
                                "dp.target_epsilon=-1.0 must be positive", None),
    "num_targets beyond the models": (QUICK + ["--config.attack.num_targets=100", NEW],
                                      "attack.num_targets=100 but there are 4 models", None),
    "unknown dataset": (QUICK + ["--config.data.name=cifar11", NEW], "unknown dataset", None),
    "unknown model": (QUICK + ["--config.model.name=transformer", NEW], "unknown model", None),
    "unknown attack": (QUICK + ["--config.attack.names=('loss','lira_2')", NEW],
                       "unknown attack", None),
    "epochs below 1": (QUICK + ["--config.train.epochs=0", NEW], "train.epochs=0", None),
    "pkeep outside (0, 1)": (QUICK + ["--config.membership.pkeep=1.5", NEW], "pkeep", None),
    "fewer than 2 models": (QUICK + ["--config.membership.num_models=1", NEW], "num_models",
                            None),
    "curriculum without a validation split": (
        QUICK + ["--config.train.curriculum.enabled=True", "--config.data.val_size=0", NEW],
        "val_size", None),
    "unknown curriculum pacing": (
        QUICK + ["--config.train.curriculum.enabled=True",
                 "--config.train.curriculum.pacing=cubic", "--config.data.val_size=50", NEW],
        "pacing", None),
    # data files and their content
    "missing data file": (QUICK + ["--config.data.name=purchase100",
                                   "--config.data.file=/no/such.txt", NEW], "not found", None),
    "missing IDX folder": (QUICK + ["--config.data.name=fashion_mnist",
                                    "--config.data.dir=/no/such", NEW], "not found", None),
    "truncated IDX file": (QUICK + ["--config.data.name=fashion_mnist", "--config.data.dir={idx}",
                                    NEW], "truncated",
                           lambda t: {"idx": _idx_dir(t / "idx", "truncated")}),
    "images saved as the labels file": (
        QUICK + ["--config.data.name=fashion_mnist", "--config.data.dir={idx}", NEW],
        "not the labels it is named for", lambda t: {"idx": _idx_dir(t / "idx",
                                                                     "images as labels")}),
    "corrupt label byte (200)": (
        QUICK + ["--config.data.name=fashion_mnist", "--config.data.dir={idx}", NEW],
        "holds label 200 at index 17", lambda t: {"idx": _idx_dir(t / "idx", "label 200")}),
    "NaN feature in a tabular file": (
        QUICK + ["--config.data.name=purchase100", "--config.data.file={tab}", NEW],
        "record 3 holds nan in column 7", lambda t: {"tab": _tabular(t / "p.txt", bad="nan")}),
    "infinite feature in a tabular file": (
        QUICK + ["--config.data.name=purchase100", "--config.data.file={tab}", NEW],
        "record 3 holds inf", lambda t: {"tab": _tabular(t / "p.txt", bad="inf")}),
    "0-based tabular file without class 0": (
        QUICK + ["--config.data.name=purchase100", "--config.data.file={tab}", NEW],
        "labels run 1..3: 1-based with 3 classes, or 0-based without class 0?",
        lambda t: {"tab": _tabular(t / "p.txt", labels=np.arange(500) % 3 + 1)}),
    "attack-only logits x 1e30": (
        ["--config=configs/attack_only.py", "--config.logits={logits}", NEW],
        "logits reach", lambda t: {"logits": _logits_file(t / "l.npz", 1e30)}),
    "quantile_regression in attack-only mode": (
        ["--config=configs/attack_only.py", "--config.logits={logits}",
         "--config.attack.names=('loss','quantile_regression')", NEW],
        "attack quantile_regression reads the examples' inputs, which a logits file does not "
        "hold", lambda t: {"logits": _logits_file(t / "l.npz")}),
    # the workdir
    "workdir below a regular file": (QUICK + ["--workdir={file}/w"], "lies below the file",
                                     lambda t: {"file": _file(t / "f")}),
    "workdir is a file": (QUICK + ["--workdir={file}"], "is a file",
                          lambda t: {"file": _file(t / "f")}),
    "non-empty folder that is not a workdir": (
        QUICK + ["--workdir={mine}"], "holds 2 entries (notes.txt, results.json) and is not a "
        "mia_jax workdir", lambda t: {"mine": _mine(t / "mine")}),
    "attack-only audit into a training workdir": (
        ["--config=configs/attack_only.py", "--config.logits={logits}", "--workdir={w}"],
        "holds a training run, whose results an attack-only audit would replace",
        lambda t: {"w": _claimed(t / "w"), "logits": _logits_file(t / "l.npz")}),
    "training run into an attack-only workdir": (
        QUICK + ["--workdir={w}"],
        "holds an attack-only audit, whose results a training run would replace",
        lambda t: {"w": _claimed(t / "w", "attack_only", outputs=("results.json",))}),
    "workdir of another config": (
        QUICK + ["--config.train.epochs=4", "--workdir={w}"],
        "another config (train.epochs: 10 there, 4 now)", lambda t: {"w": _claimed(t / "w")}),
    "data file changed in place": (
        QUICK + ["--config.data.name=purchase100", "--config.data.file={tab}", "--workdir={w}"],
        "the data changed since", lambda t: _changed_data(t)),
}


def _file(path):
  path.write_text("a regular file")
  return str(path)


def _mine(folder):
  folder.mkdir()
  (folder / "notes.txt").write_text("a user's own folder")
  (folder / "results.json").write_text("{}")
  return str(folder)


def _changed_data(tmp):
  tab = tmp / "p.txt"
  _tabular(tab)
  config = _config("--config.data.name=purchase100", f"--config.data.file={tab}")
  w = _claimed(tmp / "w", config=config)
  text = tab.read_text().splitlines()
  text[5] = text[5][:-1] + ("0" if text[5].endswith("1") else "1")   # one feature edited
  tab.write_text("\n".join(text) + "\n")
  return {"tab": str(tab), "w": w}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_error_line_and_leaves_every_folder_as_it_was(tmp_path, capsys,
                                                                           case):
  args, expected, prepare = CASES[case]
  fields = {"tmp": str(tmp_path), **(prepare(tmp_path) if prepare else {})}
  before = snapshot(tmp_path)
  code, err = cli([a.format(**fields) for a in args], capsys)
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert code == 2, err
  assert len(errors) == 1 and expected in errors[0], err
  assert err.rstrip().endswith(errors[0]) and "Traceback" not in err
  assert snapshot(tmp_path) == before                 # nothing written, nothing removed


def test_read_only_workdir_is_refused_before_any_attack(tmp_path, capsys):
  """An attack-only workdir that cannot be written (a read-only file system when root, whom
  permissions do not stop) fails at its claim, not after every attack ran."""
  logits = _logits_file(tmp_path / "l.npz")
  w = tmp_path / "w"
  args = ["--config=configs/attack_only.py", f"--config.logits={logits}", f"--workdir={w}",
          "--config.attack.names=('loss',)", "--config.attack.bootstrap=0"]
  assert cli(args, capsys)[0] == 0                      # the audit, once
  with _read_only(w):
    before = snapshot(w)
    code, err = cli(args + ["--config.attack.names=('loss','rmia_online')"], capsys)
    assert snapshot(w) == before
  assert code == 2 and err.count("error:") == 1, err
  assert "cannot be written" in err and "attack " not in err      # no attack ran


class _read_only:
  """Makes a folder read-only: by permissions, or (as root) by remounting a copy of it on a
  read-only tmpfs; skips the test where neither is possible."""

  def __init__(self, folder):
    self.folder = str(folder)
    self.mounted = False

  def __enter__(self):
    if os.geteuid() != 0:
      for root, dirs, _ in os.walk(self.folder):
        for d in dirs:
          os.chmod(os.path.join(root, d), 0o555)
      os.chmod(self.folder, 0o555)
      return self
    copy = self.folder + ".copy"
    os.rename(self.folder, copy)
    os.mkdir(self.folder)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", self.folder],
                      capture_output=True).returncode != 0:
      os.rmdir(self.folder)
      os.rename(copy, self.folder)
      pytest.skip("root cannot be stopped by permissions here, and cannot mount a tmpfs")
    self.mounted = True
    subprocess.run(["cp", "-a", copy + "/.", self.folder], check=True)
    subprocess.run(["mount", "-o", "remount,ro", self.folder], check=True)
    return self

  def __exit__(self, *exc):
    if self.mounted:
      subprocess.run(["umount", self.folder], check=True)
      os.rmdir(self.folder)
      os.rename(self.folder + ".copy", self.folder)
    else:
      for root, dirs, _ in os.walk(self.folder):
        os.chmod(root, 0o755)


def test_disk_too_full_for_the_checkpoints_is_refused_before_training(tmp_path, capsys,
                                                                      monkeypatch):
  real = workdir_lib.shutil.disk_usage
  monkeypatch.setattr(workdir_lib.shutil, "disk_usage",
                      lambda p: real(p)._replace(free=20 * 1024))      # 20 KiB free
  code, err = cli(QUICK + [f"--workdir={tmp_path / 'w'}"], capsys)
  assert code == 2 and err.count("error:") == 1, err
  assert "its disk has 20.0 KiB free, the run needs about" in err and "epoch" not in err
  assert not (tmp_path / "w").exists()                  # the folder it made is gone again


@pytest.mark.slow
def test_disk_full_during_the_run_is_one_line_and_the_rerun_resumes(tmp_path, capsys,
                                                                   monkeypatch):
  args = QUICK + ["--config.train.epochs=2", "--config.train.checkpoint_seconds=0",
                  "--config.attack.names=('loss',)", "--config.attack.scaling_targets=0",
                  f"--workdir={tmp_path / 'w'}"]

  def full(path, **arrays):
    raise OSError(errno.ENOSPC, "No space left on device", path)

  with monkeypatch.context() as m:
    m.setattr(report, "save_npz_atomic", full)           # logits.npz, after training
    code, err = cli(args, capsys)
  assert code == 2 and err.count("error:") == 1, err
  assert err.rstrip().splitlines()[-1].startswith("error: cannot write ")
  assert "logits.npz: its disk is full" in err and "rerun the same command to resume" in err
  code, err = cli(args, capsys)
  assert code == 0, err
  assert "resumed from the checkpoint of epoch 2" in err and "epoch 1/2" not in err


def test_a_second_run_into_a_workdir_in_use_is_refused(tmp_path, capsys):
  config = _config()
  ds = data.load(config.data)
  w = str(tmp_path / "w")
  with workdir_lib.claim(w, "train", pipeline.training_fingerprint(config, ds),
                         log=lambda s: None):
    before = snapshot(tmp_path)
    code, err = cli(QUICK + [f"--workdir={w}"], capsys)
    assert snapshot(tmp_path) == before
  assert code == 2 and f"is in use by another mia_jax run (pid {os.getpid()})" in err, err
  assert err.count("error:") == 1


# --- real processes ----------------------------------------------------------------------------

def _popen(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  quick = QUICK if not any(a.startswith("--config.model.hidden") for a in args) else QUICK[:1]
  return subprocess.Popen([sys.executable, "-m", "mia_jax.main", *quick, *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(*args):
  proc = _popen(*args)
  out, err = proc.communicate(timeout=300)
  return proc.returncode, err


@pytest.mark.parametrize("args,expected", [
    (["--config.train.epocs=3"], "did you mean --config.train.epochs?"),
    (["--config.train.epochs=abc"], "train.epochs holds an int"),
    (["--config.model.hidden=(0,)"], "model.hidden=(0,) must be positive layer widths"),
])
def test_cli_process_exits_2_with_one_line(tmp_path, args, expected):
  code, err = _run(*args, f"--workdir={tmp_path / 'w'}")
  assert code == 2 and "Traceback" not in err and "FATAL" not in err, err
  lines = [l for l in err.splitlines() if l.strip()]
  assert lines[-1].startswith("error:") and expected in lines[-1], err
  assert sum(l.startswith("error:") for l in lines) == 1
  assert "Unable to initialize backend" not in err and "] " not in err   # no absl prefixes
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_two_processes_one_workdir_and_ctrl_c(tmp_path):
  """A second process into a workdir in use is refused at once; Ctrl-C ends the first with one
  line and status 130, and the same command then resumes from its last checkpoint."""
  w = tmp_path / "w"
  args = ["--config.train.epochs=400", "--config.train.checkpoint_seconds=0",
          "--config.attack.names=('loss',)", "--config.attack.scaling_targets=0",
          "--config.attack.bootstrap=0", f"--workdir={w}"]
  first = _popen(*args)
  lines = []
  deadline = time.time() + 120
  while not any(l.startswith("epoch 3/") for l in lines) and time.time() < deadline:
    line = first.stderr.readline()
    if not line:
      break
    lines.append(line)
  assert any(l.startswith("epoch 3/") for l in lines), "".join(lines)
  code, err = _run(*args)                                     # the second, while it trains
  assert code == 2 and err.count("error:") == 1, err
  assert f"is in use by another mia_jax run (pid {first.pid})" in err
  first.send_signal(signal.SIGINT)
  rest = first.communicate(timeout=60)[1]
  assert first.returncode == 130, rest
  tail = [l for l in rest.splitlines() if l.strip()]
  assert tail[-1] == "interrupted; rerun the same command to resume"
  assert "Traceback" not in rest and "error:" not in rest
  saved = max(int(d) for d in os.listdir(w / "checkpoints") if d.isdigit())
  assert saved >= 3
  resumed = _popen(*args)
  lines = []
  for line in resumed.stderr:
    lines.append(line)
    if line.startswith("epoch "):
      break
  resumed.send_signal(signal.SIGINT)
  resumed.communicate(timeout=60)
  assert f"resumed from the checkpoint of epoch {saved}" in "".join(lines)
  assert lines[-1].startswith(f"epoch {saved + 1}/"), lines
  assert resumed.returncode == 130


# --- the persistent compilation cache ----------------------------------------------------------

def _main_module():
  """mia_jax.main's module functions (its flags defined and put back as `cli` does)."""
  saved = {n: flags.FLAGS[n] for n in _MAIN_FLAGS if n in flags.FLAGS}
  for name in saved:
    delattr(flags.FLAGS, name)
  sys.modules.pop("mia_jax.main", None)
  module = importlib.import_module("mia_jax.main")
  for name in list(flags.FLAGS):
    if name in _MAIN_FLAGS:
      delattr(flags.FLAGS, name)
  for name, flag in saved.items():
    flags.FLAGS[name] = flag
  sys.modules.pop("mia_jax.main", None)
  return module


def test_compilation_cache_folder_by_flag_and_environment(tmp_path, monkeypatch):
  mia_main = _main_module()
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert mia_main.compilation_cache_dir(None) == str(tmp_path / "mia_jax" / "jax")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert mia_main.compilation_cache_dir(None) == str(tmp_path / "home/.cache/mia_jax/jax")
  assert mia_main.compilation_cache_dir("/x/y") == "/x/y"
  assert mia_main.compilation_cache_dir("none") is None and mia_main.compilation_cache_dir("") \
      is None
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "theirs"))
  assert mia_main.compilation_cache_dir(None) is None               # jax reads it itself
  assert mia_main.enable_compilation_cache(None).endswith("theirs")
  (tmp_path / "a_file").write_text("")
  said = mia_main.enable_compilation_cache(str(tmp_path / "a_file" / "cache"))
  assert said.startswith("no compilation cache") and "not writable" in said


_CACHED_STEP = """
import sys
from jax._src import monitoring
import jax, jax.numpy as jnp, numpy as np
import mia_jax.main as mia_main
hits = []
monitoring.register_event_listener(
    lambda e, **k: hits.append(e) if e == "/jax/compilation_cache/cache_hits" else None)
print(mia_main.enable_compilation_cache(sys.argv[1]), file=sys.stderr)
x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 32)), jnp.float32)
step = jax.jit(lambda w: w - 0.1 * jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w))
w = step(step(jnp.ones((32, 8), jnp.float32)))
print(len(hits), np.asarray(w).tobytes().hex())
"""


def test_a_cached_program_is_reused_by_another_process_with_the_same_result(tmp_path):
  """The second process loads the first's compiled step from the cache (a cache hit, nothing
  compiled afresh) and computes the same bits."""
  cache = tmp_path / "cache"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  runs = [subprocess.run([sys.executable, "-c", _CACHED_STEP, str(cache)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120) for _ in range(2)]
  (hits_first, bits_first), (hits_second, bits_second) = (r.stdout.split() for r in runs)
  assert runs[0].returncode == 0 and f"compilation cache {cache}" in runs[0].stderr, runs[0]
  assert "warning" not in runs[1].stderr.lower(), runs[1].stderr
  assert int(hits_first) == 0 and int(hits_second) >= 1
  assert bits_first == bits_second
  assert any(cache.iterdir())
