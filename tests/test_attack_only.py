"""Attack-only audits of a logits file written here, its answers to malformed files, and the
shadow-scaling curve's mapping of the target."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mia_jax import attacks, logits_io, pipeline
from mia_jax.attacks import scaling as scaling_lib
from mia_jax.errors import ConfigError, DataError, UserError

from conftest import ROOT, load_config

M, N, Q, C, P = 6, 120, 2, 3, 40


def synthetic(seed=0, m=M, n=N, q=Q, c=C, p=P, leak=2.0):
  """Logits of m models with a membership signal: the true logit is `leak` higher for members."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  keep = np.zeros((m, n), bool)
  for i in range(n):
    keep[rng.permutation(m)[: m // 2], i] = True
  hardness = rng.normal(0, 1, n)

  def logits_of(lab, member):
    z = rng.normal(0, 1, (m, lab.size, q, c)).astype(np.float32)
    boost = 1.0 + hardness[: lab.size] if member is not None else 1.0 + rng.normal(0, 1, lab.size)
    extra = leak * member if member is not None else 0.0
    z[np.arange(m)[:, None], np.arange(lab.size)[None], :, lab[None]] += (
        (boost + extra)[..., None] + 0.3 * rng.normal(0, 1, (m, lab.size, q)))
    return z

  pop_labels = rng.integers(0, c, p)
  return {"logits": logits_of(labels, keep.astype(np.float32)), "labels": labels, "keep": keep,
          "population_logits": logits_of(pop_labels, None), "population_labels": pop_labels}


def write(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def config_for(path, names=("loss", "lira_online", "lira_offline", "rmia_online", "shokri"),
               **attack):
  config = load_config("attack_only")
  config.logits = str(path)
  config.attack.names = names
  config.attack.bootstrap = 20
  config.attack.num_targets = 3
  for k, v in attack.items():
    setattr(config.attack, k, v)
  return config


def test_attack_only_audit_writes_everything(tmp_path):
  arrays = synthetic()
  path = write(tmp_path / "logits.npz", **arrays)
  workdir = tmp_path / "w"
  results = pipeline.run_attack_only(config_for(path), str(workdir), log=lambda s: None)
  on_disk = json.loads((workdir / "results.json").read_text())
  assert on_disk["num_models"] == M and on_disk["targets"] == [0, 1, 2]
  assert on_disk["source"] == {"mode": "attack_only", "logits_file": os.path.abspath(path)}
  assert len(on_disk["models"]["train_accuracy"]) == len(on_disk["models"]["test_accuracy"]) == M
  assert on_disk["models"]["test_accuracy_on"] == "population examples"
  assert on_disk["attacks"]["rmia_online"]["auc"]["mean"] > 0.8   # the synthetic leak is found
  a = on_disk["attacks"]["lira_online"]
  for key in ("0.01", "0.001", "0.0001", "0.0"):
    lo, hi = a["tpr_at_fpr_ci95"][key]
    assert 0.0 <= lo <= hi <= 1.0
    assert a["nonmembers_at_fpr"][key]["mean"] == pytest.approx(np.mean(
        [int(float(key) * (N - arrays["keep"][t].sum())) for t in range(3)]))
  assert set(a["slices"]["class"]) == {"0", "1", "2"}
  members = a["slices"]["correct"]["num_members"] + a["slices"]["incorrect"]["num_members"]
  assert members == pytest.approx(arrays["keep"][:3].sum(1).mean())
  assert on_disk["timing"]["total_s"] > 0
  scaling = on_disk["shadow_scaling"]
  assert scaling["sizes"] == [2, 4, 5] and scaling["targets"] == [0, 1]
  assert set(scaling["attacks"]) == {"lira_online", "lira_offline", "rmia_online", "shokri"}
  report = (workdir / "report.md").read_text()
  assert "Attack-only audit" in report and report.count("| lira_online |") == 2  # table, scaling
  assert "## Slices of `" in report and "| misclassified |" in report
  for name in ("roc.png", "score_hist.png", "shadow_scaling.png"):
    assert (workdir / "figures" / name).stat().st_size > 5000
  assert results["attacks"].keys() == on_disk["attacks"].keys()


def test_attack_only_accepts_three_axes_ints_and_unbalanced_examples(tmp_path):
  arrays = synthetic()
  arrays["logits"] = arrays["logits"][:, :, 0]              # [M, N, C]: one query
  arrays["population_logits"] = arrays["population_logits"][:, :, 0]
  arrays["keep"] = arrays["keep"].astype(np.int8)          # 0/1 integers
  arrays["keep"][:, 0] = 1                                 # IN for every model
  arrays["keep"][:, 1] = 0                                 # IN for none
  path = write(tmp_path / "l.npz", **arrays)
  data = logits_io.load(path)
  assert data.logits.shape == (M, N, 1, C) and data.keep.dtype == np.bool_
  results = pipeline.run_attack_only(config_for(path, ("loss", "lira_online"), scaling_targets=0),
                                     str(tmp_path / "w"), log=lambda s: None)
  assert results["shadow_scaling"] == {}
  assert not (tmp_path / "w" / "figures" / "shadow_scaling.png").exists()


def test_attack_only_without_population_uses_pool_nonmembers(tmp_path):
  arrays = synthetic()
  del arrays["population_logits"], arrays["population_labels"]
  path = write(tmp_path / "l.npz", **arrays)
  results = pipeline.run_attack_only(config_for(path, ("rmia_offline",), bootstrap=0),
                                     str(tmp_path / "w"), log=lambda s: None)
  assert results["models"]["test_accuracy_on"] == "each model's non-members of the pool"
  assert results["attacks"]["rmia_offline"]["auc"]["mean"] > 0.6




def _set(key, value):
  def edit(a):
    a[key] = value(a) if callable(value) else value
    return a
  return edit


def _drop(*keys):
  def edit(a):
    for k in keys:
      del a[k]
    return a
  return edit


def _nan(a):
  a["logits"][1, 2, 0, 1] = np.nan
  return a


def _keep_row(value):
  def edit(a):
    a["keep"][0] = value
    return a
  return edit


BAD_FILES = {
    "missing key": (_drop("keep"), "lacks ['keep']"),
    "unknown key": (_set("population_logit", np.zeros(3)), "unknown arrays"),
    "wrong rank": (_set("logits", lambda a: a["logits"][:, :, 0, 0]), "must be [M, N, Q, C]"),
    "labels shape mismatch": (_set("labels", lambda a: np.r_[a["labels"], 0]), "labels has shape"),
    "keep shape mismatch": (_set("keep", lambda a: a["keep"][:, :-1]), "keep has shape"),
    "non-finite logits": (_nan, "1 NaN or infinite"),
    "labels out of range": (_set("labels", lambda a: np.r_[a["labels"][:-1], C]), "labels range"),
    "float labels": (_set("labels", lambda a: a["labels"].astype(float)), "integer class"),
    "keep not 0/1": (_set("keep", lambda a: a["keep"] * 2), "boolean or 0/1"),
    "one model": (_set("logits", lambda a: a["logits"][:1]), "at least 2"),
    "target without members": (_keep_row(False), "target model 0 has 0 members"),
    "target without non-members": (_keep_row(True), f"target model 0 has {N} members"),
    "population without labels": (_drop("population_labels"), "together"),
    "population of another Q": (_set("population_logits",
                                     lambda a: a["population_logits"][:, :, :1]), "Q = 2"),
    "pickled object array": (_set("labels", np.array([{"a": 1}], dtype=object)), "not a readable"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_file_gives_one_line_and_leaves_no_workdir(tmp_path, case):
  edit, expected = BAD_FILES[case]
  path = write(tmp_path / "bad.npz", **edit(synthetic()))
  workdir = tmp_path / "w"
  with pytest.raises(UserError) as err:
    pipeline.run_attack_only(config_for(path), str(workdir), log=lambda s: None)
  assert isinstance(err.value, DataError)
  assert expected in str(err.value) and "\n" not in str(err.value)
  assert not workdir.exists()


def test_unreadable_or_absent_file_or_missing_option(tmp_path):
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"PK\x03\x04 not really a zip file")
  for path, expected in ((garbage, "not a readable"), (tmp_path / "absent.npz", "not found")):
    with pytest.raises(DataError, match=expected):
      pipeline.run_attack_only(config_for(path), str(tmp_path / "w"), log=lambda s: None)
  single = tmp_path / "one.npy"
  np.save(single, np.zeros(3))
  with pytest.raises(DataError, match="one array"):
    logits_io.load(str(single))
  with pytest.raises(ConfigError, match="--config.logits=FILE.npz"):
    pipeline.run_attack_only(config_for(""), str(tmp_path / "w"), log=lambda s: None)
  assert not (tmp_path / "w").exists()


def run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "mia_jax.main", "--config=configs/attack_only.py",
                         *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_attack_only(tmp_path):
  path = write(tmp_path / "logits.npz", **synthetic())
  proc = run_cli(f"--config.logits={path}", f"--workdir={tmp_path / 'w'}",
                 "--config.attack.num_targets=2", "--config.attack.bootstrap=10")
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  assert len(results["attacks"]) == 12                 # every attack of the default list
  assert (tmp_path / "w" / "figures" / "score_hist.png").exists()
  assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.parametrize("case", ["labels out of range", "target without members"])
def test_cli_malformed_file_one_error_line(tmp_path, case):
  edit, expected = BAD_FILES[case]
  path = write(tmp_path / "bad.npz", **edit(synthetic()))
  proc = run_cli(f"--config.logits={path}", f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and expected in lines[0], proc.stderr[-1500:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()


SHADOW_ATTACKS = ("lira_online", "lira_online_fixed_var", "lira_offline", "rmia_online",
                  "rmia_offline", "shokri")


def test_shadow_scaling_with_every_shadow_equals_the_attack():
  arrays = synthetic(m=7)
  data = attacks.AttackData(**arrays)
  targets = [3, 6]
  scaling = scaling_lib.shadow_scaling(data, ("loss",) + SHADOW_ATTACKS, targets, seed=1)
  assert scaling["sizes"] == [2, 4, 6]
  assert set(scaling["attacks"]) == set(SHADOW_ATTACKS)       # loss reads no shadows
  for name in SHADOW_ATTACKS:
    full = scaling["attacks"][name][-1]
    assert full["num_shadows"] == 6
    summary, _ = attacks.evaluate_attack(name, data, targets)
    assert full["auc"]["per_target"] == summary["auc"]["per_target"], name
    assert (full["tpr_at_fpr"]["0.001"]["per_target"]
            == summary["tpr_at_fpr"]["0.001"]["per_target"]), name


def test_shadow_subset_maps_the_target_row():
  arrays = synthetic(m=8)
  data = attacks.AttackData(**arrays)
  sub, row = scaling_lib.shadow_subset(data, 5, [7, 1, 2])
  assert sub.num_models == 4 and row == 2                     # models [1, 2, 5, 7]
  np.testing.assert_array_equal(sub.keep[row], arrays["keep"][5])
  np.testing.assert_array_equal(sub.logits[row], arrays["logits"][5])
  np.testing.assert_array_equal(sub.population_logits[3], arrays["population_logits"][7])
  scores = attacks.run("lira_online", sub, [row])[0]
  np.testing.assert_array_equal(
      scores, attacks.run("lira_online", attacks.AttackData(
          logits=arrays["logits"][[1, 2, 5, 7]], labels=arrays["labels"],
          keep=arrays["keep"][[1, 2, 5, 7]]), [2])[0])


def test_shadow_scaling_small_subsets_still_find_the_target_members():
  # A mapping error (scores of another model, or keep of another row) gives AUC ~ 0.55.
  data = attacks.AttackData(**synthetic(m=9, leak=3.0))
  scaling = scaling_lib.shadow_scaling(data, ("lira_online", "rmia_online"), [4], sizes=[2, 4])
  for name in ("lira_online", "rmia_online"):
    for point in scaling["attacks"][name]:
      assert point["auc"]["mean"] > 0.75, (name, point["num_shadows"])
