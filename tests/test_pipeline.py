"""The audit end to end, from the command line, and its answers to bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mia_jax import pipeline
from mia_jax.data import sources
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
  assert on_disk["risk"]["targets"] == 4 and on_disk["risk"]["examples"] == 200
  assert (tmp_path / "risk.csv").read_text().startswith("index,label,risk,lo,hi")
  assert "## Which examples are at risk" in report

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cli_quick_audit(tmp_path):
  proc = run_cli(tmp_path / "w", "--config.train.epochs=2")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "epoch 2/2" in proc.stderr and "examples/s" in proc.stderr and "time left" in proc.stderr
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  assert results["config"]["train"]["epochs"] == 2


# --- every shipped config's small variant trains models that learn ----------------------------

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _synthetic_purchase(path, rows, classes=100, features=600, flip=0.1, seed=0):
  """A Purchase100-format file (1-based label, then binary features) that can be learnt: each
  class a random binary prototype, each record its class's prototype with `flip` of the bits
  flipped."""
  rng = np.random.default_rng(seed)
  prototypes = rng.random((classes, features)) < 0.5
  labels = np.arange(rows) % classes
  x = prototypes[labels] ^ (rng.random((rows, features)) < flip)
  path.write_text("".join(f"{y + 1}," + ",".join("1" if v else "0" for v in r) + "\n"
                          for y, r in zip(labels, x)))
  return str(path)


def _synthetic_images(n, shape=(32, 32, 3), classes=10, seed=0):
  """Images whose class sets a colour and a stripe direction, under noise (sources.RawData)."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % classes
  colours = rng.random((classes, shape[-1]))
  stripes = np.sin(np.arange(shape[0]) * (1 + np.arange(classes))[:, None] * 0.4)   # [C, H]
  x = (0.5 * colours[y][:, None, None, :] + 0.3 * stripes[y][:, :, None, None]
       + 0.2 * rng.random((n,) + shape))
  return sources.RawData(x=np.clip(x, 0, 1).astype(np.float32), y=y.astype(np.int32),
                         num_classes=classes, is_image=True)


def _quick_config(name, tmp_path, monkeypatch):
  """configs/<name>.py's small variant, with the data it needs where it is absent here."""
  if name.startswith("fashion_mnist") and not os.path.isdir(FASHION_MNIST):
    pytest.skip(f"{FASHION_MNIST} is absent (apt-get install dataset-fashion-mnist)")
  if name == "cifar10_densenet":
    # CIFAR-10 via tfds is not here: the smoke variant's DenseNet and the study's recipe (SGD,
    # momentum 0.9, lr 0.1) on learnable synthetic 32x32x3 images, more of them and more epochs.
    config = load_config(name, "smoke")
    config.data.pool_size, config.data.test_size = 400, 200
    config.train.epochs = 4
    config.membership.num_models = 2     # the smoke trains 1 (the paper table's scheme)
    monkeypatch.setattr(sources, "load_tfds", lambda cfg: _synthetic_images(600))
    return config
  config = load_config(name, "quick")
  if name == "purchase100_fcn":
    # The Purchase100 file is the user's: a synthetic file of its format and size.
    rows = config.data.pool_size + config.data.test_size
    config.data.file = _synthetic_purchase(tmp_path / "purchase100.txt", rows)
  return config


QUICK_CONFIGS = ("default", "default_dp", "fashion_mnist_mlp", "fashion_mnist_cnn",
                 "fashion_mnist_dp", "fashion_mnist_paper", "purchase100_fcn", "cifar10_densenet")


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK_CONFIGS)
def test_shipped_config_quick_variant_learns(name, tmp_path, monkeypatch):
  """The small variant of every shipped config that trains (configs/attack_only.py trains
  nothing) trains models that learn: every model's held-out accuracy at least 3 times chance
  (a model that learnt nothing sits at chance, within a few points on these test splits) and the
  training loss falling. A recipe that diverges, as default_dp's lr 0.5 did, fails here."""
  import time  # pylint: disable=g-import-not-at-top
  from mia_jax import data, models  # pylint: disable=g-import-not-at-top
  from mia_jax.data import membership  # pylint: disable=g-import-not-at-top
  from mia_jax.training import dp as dp_lib  # pylint: disable=g-import-not-at-top
  from mia_jax.training import from_config, steps  # pylint: disable=g-import-not-at-top
  config = _quick_config(name, tmp_path, monkeypatch)
  t0 = time.perf_counter()
  ds = data.load(config.data)
  model = models.build(config.model, ds.num_classes)
  keep = membership.keep_matrix(int(config.membership.seed), int(config.membership.num_models),
                                len(ds.pool_y), float(config.membership.pkeep))
  plan = None
  if config.dp.enabled:
    plan = dp_lib.plan(config.dp, keep, int(config.train.batch_size), int(config.train.epochs))
  val = (ds.val_x, ds.val_y) if len(ds.val_y) else None
  res = from_config.train_from_config(model, config.train, ds.pool_x, ds.pool_y, keep,
                                      seed=int(config.seed), val=val, dp_plan=plan,
                                      log=lambda s: None)
  acc = np.asarray(steps.accuracy_fn(model.apply)(res.state.params, res.state.batch_stats,
                                                  ds.test_x, ds.test_y))
  loss = [float(np.mean(h["loss"])) for h in res.history]
  chance = 1.0 / ds.num_classes
  print(f"{name}: test accuracy {acc.mean():.4f} (models {acc.min():.4f}-{acc.max():.4f}), "
        f"loss {loss[0]:.3f} -> {loss[-1]:.3f}, {time.perf_counter() - t0:.0f}s")
  assert acc.min() >= 3 * chance, (name, acc)
  assert loss[-1] < loss[0], (name, loss)


@pytest.fixture(scope="module")
def digits_audit(tmp_path_factory):
  """The tiny audit on the built-in digits and MLP: what the bring-your-own runs must match."""
  workdir = tmp_path_factory.mktemp("digits_audit")
  results = pipeline.run(tiny_config(), str(workdir), log=lambda s: None)
  results["logits_path"] = str(workdir / "logits.npz")
  with np.load(workdir / "logits.npz") as f:
    return results, f["logits"]


def _same_audit(results, logits, workdir, reference):
  ref_results, ref_logits = reference
  with np.load(os.path.join(workdir, "logits.npz")) as f:
    np.testing.assert_array_equal(f["logits"], logits)
  np.testing.assert_array_equal(logits, ref_logits)
  for name in ref_results["attacks"]:
    assert results["attacks"][name]["auc"] == ref_results["attacks"][name]["auc"]
  assert results["models"]["test_accuracy"] == ref_results["models"]["test_accuracy"]


def test_own_flax_module_by_import_path_audits_end_to_end(tmp_path, user_package, digits_audit):
  """model.name = package.module:Class on sys.path: the user's module (the MLP's layers in the
  MLP's order) trains, is queried and attacked exactly as the registered MLP is."""
  config = tiny_config()
  config.model.name = f"{user_package}:TinyNet"
  config.model.kwargs = {"width": 32}            # tiny_config's MLP: hidden (32,)
  results = pipeline.run(config, str(tmp_path / "work"), log=lambda s: None)
  with np.load(tmp_path / "work" / "logits.npz") as f:
    logits = f["logits"]
  _same_audit(results, logits, str(tmp_path / "work"), digits_audit)
  assert results["config"]["model"]["name"] == "user_pkg.nets:TinyNet"


def test_own_npz_arrays_audit_end_to_end(tmp_path, digits_audit):
  """data.name = FILE.npz holding the digits as x, y: the same audit as the digits source."""
  raw = sources.load_digits(None)
  path = str(tmp_path / "mine.npz")
  np.savez(path, x=raw.x, y=raw.y)
  config = tiny_config()
  config.data.name = path
  results = pipeline.run(config, str(tmp_path / "work"), log=lambda s: None)
  with np.load(tmp_path / "work" / "logits.npz") as f:
    logits = f["logits"]
  _same_audit(results, logits, str(tmp_path / "work"), digits_audit)
  assert results["dataset"]["name"] == path


def _attack_only(logits_path, workdir, **defense):
  config = load_config("attack_only")
  config.logits = str(logits_path)
  config.attack.names = ("loss", "lira_online")
  config.attack.scaling_targets = 0
  if defense:
    config.defense.post_hoc = defense["post_hoc"]
    config.defense.params.w = defense["w"]
  return pipeline.run_attack_only(config, str(workdir), log=lambda s: None)


def test_post_hoc_defense_stage_attacks_the_defended_outputs(tmp_path, digits_audit):
  """defense.post_hoc=logit_reweighting: the attacks read every model's reweighted pool and
  population outputs (centroids from each model's members only), exactly as an audit of a
  file holding those outputs; results.json and report.md say so."""
  from mia_jax.defenses import logit_reweighting, post_hoc  # pylint: disable=g-import-not-at-top
  ref_results, _ = digits_audit
  raw = ref_results["logits_path"]
  with np.load(raw) as f:
    arrays = {k: f[k] for k in f.files}
  defended = _attack_only(raw, tmp_path / "defended", post_hoc="logit_reweighting", w=0.3)
  # the same reweighting by hand, in float64 numpy: centroids of each model's members (query 0)
  z = arrays["logits"].astype(np.float64)
  y, keep = arrays["labels"], arrays["keep"]
  onehot = np.eye(z.shape[-1])[y]
  counts = np.einsum("mn,nc->mc", keep, onehot)
  mu = np.einsum("mn,nc,mnk->mck", keep, onehot, z[:, :, 0]) / counts[:, :, None]

  def by_hand(out):
    centre = mu[np.arange(len(mu))[:, None, None], out.argmax(-1)]
    cos = (out * centre).sum(-1) / (np.linalg.norm(out, axis=-1) *
                                    np.linalg.norm(centre, axis=-1) + 1e-12)
    s = 0.3 * cos[..., None]
    return s * out + (1 - s) * centre

  np.savez(tmp_path / "by_hand.npz", logits=by_hand(z).astype(np.float32), labels=y, keep=keep,
           population_logits=by_hand(arrays["population_logits"].astype(np.float64)
                                     ).astype(np.float32),
           population_labels=arrays["population_labels"])
  again = _attack_only(tmp_path / "by_hand.npz", tmp_path / "by_hand")
  for name in ("loss", "lira_online"):
    np.testing.assert_allclose(defended["attacks"][name]["auc"]["mean"],
                               again["attacks"][name]["auc"]["mean"], atol=2e-3)
  np.testing.assert_allclose(defended["models"]["test_accuracy"],
                             again["models"]["test_accuracy"], atol=1e-9)
  plain = _attack_only(raw, tmp_path / "plain")
  assert plain["defense"]["post_hoc"] == "" and "as queried" in plain["defense"]["attacked"]
  assert defended["attacks"]["loss"]["auc"] != plain["attacks"]["loss"]["auc"]
  record = defended["defense"]
  assert record["post_hoc"] == "logit_reweighting" and record["params"] == {"w": 0.3}
  assert "every model" in record["attacked"]
  np.testing.assert_allclose(record["argmax_changed"],
                             np.mean(by_hand(z).argmax(-1) != z.argmax(-1)), atol=1e-3)
  assert json.loads((tmp_path / "defended" / "results.json").read_text())["defense"] == record
  assert "Post-hoc defense `logit_reweighting` (w=0.3)" in (
      tmp_path / "defended" / "report.md").read_text()
  # the pool part of the joined call is the registered defense on the pool alone
  data = pipeline.attacks.AttackData(
      logits=arrays["logits"], labels=y, keep=keep,
      population_logits=arrays["population_logits"], population_labels=arrays["population_labels"])
  np.testing.assert_array_equal(post_hoc.defend_all(data, "logit_reweighting", {"w": 0.3}).logits,
                                logit_reweighting.defend(arrays["logits"], y, keep, 0.3))


def test_post_hoc_defense_config_errors(tmp_path, digits_audit):
  from mia_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.defense.post_hoc = "rounding"
  with pytest.raises(ConfigError, match="unknown post-hoc defense 'rounding'"):
    pipeline.run(config, str(tmp_path / "a"), log=lambda s: None)
  config.defense.post_hoc = "logit_reweighting"
  config.defense.params.temperature = 2.0
  with pytest.raises(ConfigError, match=r"takes no parameter\(s\) \['temperature'\]"):
    pipeline.run(config, str(tmp_path / "b"), log=lambda s: None)
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_analysis_stage_by_config(tmp_path, digits_audit):
  """analysis.enabled: the vulnerability / outlier analysis of the run's own scores, with
  reference models trained on the test split, written to WORKDIR/analysis and linked from
  report.md; off by default (the plain audit writes none)."""
  ref_results, _ = digits_audit
  assert "analysis" not in ref_results
  assert not os.path.exists(os.path.join(os.path.dirname(ref_results["logits_path"]), "analysis"))
  config = tiny_config()
  config.analysis.enabled = True
  config.analysis.reference_models = 2
  config.analysis.alphas = (0.02,)
  config.analysis.permutations, config.analysis.null_permutations = 100, 50
  config.analysis.tsne_points = 0            # no t-SNE map: 1,000 iterations cost 15 s
  results = pipeline.run(config, str(tmp_path), log=lambda s: None)
  out = tmp_path / "analysis"
  full = json.loads((out / "analysis.json").read_text())
  assert full["targets"] == 4 and full["run"]["reference_models"]["count"] == 2
  assert set(full["attacks"]) == {"lira_online", "loss"} and full["null_control"]["draws"] == 1
  with np.load(tmp_path / "logits.npz") as f:
    keep = f["keep"]
  per = np.load(out / "per_example.npz")
  for attack in ("lira_online", "loss"):
    for alpha in ("0.02",):
      brief = results["analysis"]["attacks"][attack][alpha]
      # chance precision: each target's share of members, averaged over the 4 targets
      np.testing.assert_allclose(brief["base_rate"], keep.mean(), atol=1e-12)
      assert set(brief["verdicts"]) <= {"noisy", "hard", "far", "sparse", "border"}
      leak = {k.split("/")[1]: per[k] for k in per.files if k.startswith(f"{attack}@{alpha}/")}
      np.testing.assert_allclose(leak["leakage"], leak["rate_in"] - leak["rate_out"])
      np.testing.assert_array_equal(leak["n_in"] + leak["n_out"], np.full(200, 4))
  assert {"lof", "ref_loss", "pixel_centroid_distance"} <= {
      k.split("/")[1] for k in per.files if k.startswith("outlier/")}
  for name in ("precision_vs_chance.png", "most_leaking.png", "leakage_by_decile_lira_online_0.02.png"):
    assert (out / "figures" / name).stat().st_size > 1000
  assert not (out / "figures" / "tsne.png").exists()
  report = (tmp_path / "report.md").read_text()
  assert "[analysis/analysis.md](analysis/analysis.md)" in report
  assert (out / "analysis.md").read_text().startswith("# Which examples leak")
  assert results["timing"]["analysis_s"] > 0


def test_analysis_stage_config_errors(tmp_path):
  from mia_jax import validation  # pylint: disable=g-import-not-at-top
  from mia_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  for field, value, match in (("attacks", (), "analysis.attacks is empty"),
                              ("attacks", ("lira_onlin",), "lira_onlin"),
                              ("alphas", (0.01, 1.5), r"must lie in \(0, 1\)"),
                              ("reference_models", 0, "at least 1")):
    config = tiny_config()
    config.analysis.enabled = True
    config.analysis[field] = value
    with pytest.raises(ConfigError, match=match):
      pipeline.run(config, str(tmp_path / field), log=lambda s: None)
    assert not (tmp_path / field).exists()
  only = load_config("attack_only")
  only.logits = str(tmp_path / "absent.npz")
  only.analysis = tiny_config().analysis
  only.analysis.enabled = True
  with pytest.raises(ConfigError, match="analysis.enabled needs the run's data"):
    validation.validate_attack_only(only)


def test_quantile_regression_reads_the_inputs_the_pipeline_passes(tmp_path):
  """The training pipeline gives AttackData the examples' features (the population's
  principal components + the label), so the shadow-free attack runs beside the others."""
  config = tiny_config()
  config.attack.names = ("loss", "quantile_regression")
  config.attack.scaling_targets = 0
  results = pipeline.run(config, str(tmp_path), log=lambda s: None)
  auc = results["attacks"]["quantile_regression"]["auc"]
  assert 0.3 < auc["mean"] < 1.0 and len(results["attacks"]["quantile_regression"]["per_target"]) == 4
