"""The audit end to end, from the command line, and its answers to bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mia_jax import pipeline
from mia_jax.errors import WorkdirError

from conftest import ROOT, load_config, tiny_config


def test_tiny_audit_writes_everything(tmp_path):
  config = tiny_config()
  config.attack.bootstrap = 20
  results = pipeline.run(config, str(tmp_path), log=lambda s: None)
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["num_models"] == results["num_models"] == 4
  assert len(on_disk["models"]["train_accuracy"]) == len(on_disk["models"]["test_accuracy"]) == 4
  for name in config.attack.names:
    a = on_disk["attacks"][name]
    for key in ("auc", "advantage"):
      assert 0.0 <= a[key]["mean"] <= 1.0 and a[key]["std"] >= 0.0
    for alpha in ("0.01", "0.001"):
      assert 0.0 <= a["tpr_at_fpr"][alpha]["mean"] <= 1.0
    assert set(a["tpr_at_fpr_ci95"]) == {"0.01", "0.001", "0.0001", "0.0"}
    assert a["nonmembers_at_fpr"]["0.01"]["mean"] >= 0
    assert set(a["slices"]) == {"class", "correct", "incorrect"}
  assert on_disk["models"]["test_accuracy_on"] == "held-out test split"
  # the strategy auto resolved to, as trained (on this CPU: the loop, with its lanes)
  assert on_disk["models"]["strategy"].split("+")[0] in ("vmap", "loop", "shared", "sharded")
  assert on_disk["timing"]["total_s"] > 0
  scaling = on_disk["shadow_scaling"]
  assert scaling["sizes"] == [2, 3] and list(scaling["attacks"]) == ["lira_online"]
  report = (tmp_path / "report.md").read_text()
  assert report.count("| lira_online |") == 2           # the attack table and the scaling table
  for alpha in ("1%", "0.1%", "0.01%"):
    assert f"TPR @ {alpha} FPR" in report
  assert "## Slices of" in report and "| correctly classified |" in report
  for name in ("roc.png", "score_hist.png", "shadow_scaling.png"):
    assert (tmp_path / "figures" / name).stat().st_size > 1000
  assert on_disk["dataset"]["queries"]["views"] == ["image"]    # data.queries=train
  with np.load(tmp_path / "logits.npz") as f:
    assert f["logits"].shape == (4, 200, 1, 10)             # [M, N, Q, C]: trained unflipped
    np.testing.assert_array_equal(f["keep"], np.load(tmp_path / "keep.npy"))
    assert f["population_logits"].shape[0] == 4
  assert os.listdir(tmp_path / "checkpoints")

  # The attack-only mode on the run's own logits.npz gives the same attack results.
  only = load_config("attack_only")
  only.logits = str(tmp_path / "logits.npz")
  only.attack = config.attack
  again = pipeline.run_attack_only(only, str(tmp_path / "again"), log=lambda s: None)
  for name in config.attack.names:
    for key in ("auc", "tpr_at_fpr", "auc_ci95", "tpr_at_fpr_ci95", "slices"):
      assert again["attacks"][name][key] == results["attacks"][name][key]
  assert again["shadow_scaling"] == results["shadow_scaling"]
  assert again["models"]["train_accuracy"] == results["models"]["train_accuracy"]


def test_rerun_resumes_and_gives_the_same_results(tmp_path):
  config = tiny_config()
  first = pipeline.run(config, str(tmp_path), log=lambda s: None)
  logs = []
  second = pipeline.run(config, str(tmp_path), log=logs.append)
  assert any("resumed from the checkpoint of epoch 3" in line for line in logs)
  assert second["timing"]["resumed_from_epoch"] == 3
  for name in config.attack.names:
    assert first["attacks"][name]["auc"] == second["attacks"][name]["auc"]


def test_workdir_of_another_config_or_kind_is_refused_and_kept(tmp_path):
  config = tiny_config()
  pipeline.run(config, str(tmp_path), log=lambda s: None)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  config.train.epochs = 4
  with pytest.raises(WorkdirError, match="train.epochs: 3 there, 4 now"):
    pipeline.run(config, str(tmp_path), log=lambda s: None)
  only = load_config("attack_only")
  only.logits = str(tmp_path / "logits.npz")
  with pytest.raises(WorkdirError, match="holds a training run"):
    pipeline.run_attack_only(only, str(tmp_path), log=lambda s: None)
  assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
  # Other attacks on the same models rewrite the report without retraining.
  config.train.epochs = 3
  config.attack.names = ("loss",)
  logs = []
  again = pipeline.run(config, str(tmp_path), log=logs.append)
  assert list(again["attacks"]) == ["loss"] and any("resumed" in l for l in logs)
  assert not any(l.startswith("epoch ") for l in logs)


def run_cli(workdir, *overrides, config="configs/default.py:quick"):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "mia_jax.main", f"--config={config}", f"--workdir={workdir}",
       "--config.model.hidden=(16,)", *overrides],
      cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_cli_quick_audit(tmp_path):
  proc = run_cli(tmp_path / "w", "--config.train.epochs=2")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "epoch 2/2" in proc.stderr and "examples/s" in proc.stderr and "time left" in proc.stderr
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  assert results["config"]["train"]["epochs"] == 2
