"""experiments/paper_table.py's verdicts on synthetic rows (logits made here, no training), and
experiments/paper_defenses.py: every extra defense row of the paper table, end to end on a tiny
digits run, with its adaptive and unaware attackers."""


import numpy as np
import pytest

from conftest import load_config, paper_table
from mia_jax import stats
from mia_jax.analysis import significance

from experiments import paper_claims, paper_report


def _logits(shared, noise, keep, y, leak, num_classes=3):
  """Logits [M, N, 1, C]: the true class's logit = 1 + an example effect shared by every model
  (the same data) + model m's own noise + leak_m on model m's members."""
  m, n = keep.shape
  z = np.zeros((m, n, 1, num_classes), np.float32)
  z[:, :, 0] = shared["other"][None] + 0.3 * noise["other"]
  true = 1.0 + shared["example"][None] + 0.5 * noise["example"] + leak[:, None] * keep
  z[np.arange(m)[:, None], np.arange(n)[None], 0, y[None]] = true
  return z


def _synthetic_rows(rng, m=6, n_train=2400, n_test=600):
  """Rows of the table from logits with a planted leak: `none` leaks, L2 5e-4 leaks less on
  the same seeds, RegDrop 0.25 as much as none (other noise, no real effect), label smoothing
  more, DP-SGD not at all (its own seeds)."""
  n = n_train + n_test
  y = rng.integers(0, 3, n)
  keep = np.zeros((m, n), bool)
  keep[:, :n_train] = True
  shared = {"example": rng.normal(0, 1, n), "other": rng.normal(0, 0.5, (n, 3))}
  noise = lambda: {"example": rng.normal(0, 1, (m, n)),  # noqa: E731
                   "other": rng.normal(0, 1, (m, n, 3))}
  seeds = noise()
  pt = paper_table()
  rows = {}
  for row, leak, own in (("none", 0.40, False), ("l2_5e-4", 0.20, False),
                         ("regdrop_0.25", 0.40, True), ("label_smoothing", 0.70, False),
                         ("dp_sgd", 0.0, True)):
    nz = seeds
    if own:
      fresh = noise()
      nz = ({k: 0.9 * seeds[k] + 0.44 * fresh[k] for k in seeds} if row != "dp_sgd" else fresh)
    z = _logits(shared, nz, keep, y, leak + rng.normal(0, 0.02, m))
    rows[row] = {"status": "run", **pt.accuracies(z, y, keep),
                 **pt.threshold_attack(z, y, keep, permutations=999, seed=1),
                 "seconds_per_model": 1.0, "epochs_run": 1, "shares_seeds": row != "dp_sgd"}
  return {"rows": rows, "post_hoc": {}, "num_models": m, "config": {"paper": {}},
          "dataset": {"name": "synthetic", "members": n_train, "nonmembers": n_test}}


def test_verdicts_on_synthetic_rows_follow_the_tests_not_the_point_estimates():
  res = _synthetic_rows(np.random.default_rng(0))
  claims = significance.decide(paper_claims.table_claims(res))
  v = {c["claim"]: c for c in claims}
  r = res["rows"]
  assert v["With no defense the model still leaks (mean AUC and advantage above their no-leak "
           "distributions)"]["verdict"] == "holds"
  assert v["L2 5e-4 lowers AUC"]["verdict"] == "holds"
  assert v["L2 5e-4 lowers AUC"]["test"]["method"] == "paired t"
  assert v["Label smoothing raises AUC"]["verdict"] == "holds"
  # no real effect: the verdict is "not shown" whichever way the point estimate moved
  assert v["RegDrop 0.25 lowers AUC"]["verdict"] == "not shown"
  assert r["regdrop_0.25"]["auc"] != r["none"]["auc"]
  # no leak planted: not shown; its accuracy comparison is unpaired (its own seeds)
  assert v["DP-SGD still leaks"]["verdict"] == "not shown"
  assert v["DP-SGD costs test accuracy"]["test"]["method"] == "Welch t"
  # Holm over every claim of the table, the leak tests included
  p = [significance.family_p(c["p_for"], c["p_against"]) for c in claims]
  assert [c["p_holm"] for c in claims] == pytest.approx(stats.holm(p))
  assert {c["section"] for c in claims} == {"study", "leak"}
  # every number the table prints carries its interval over the models
  for e in r.values():
    for k in ("auc", "advantage", "train_acc", "test_acc"):
      lo, hi = e[f"{k}_ci"]
      assert lo <= e[k] <= hi and len(e[f"{k}_per_target"]) == 6
  res["claims"] = claims
  md = paper_report.markdown(res, "figs")
  assert "- L2 5e-4 lowers AUC: **holds**" in md
  assert "- RegDrop 0.25 lowers AUC: **not shown**" in md
  assert f"| none | {paper_report._ci(r['none'], 'train_acc')} |" in md
  assert "Holm" in md and "## How the verdicts are tested" in md


@pytest.mark.slow
def test_defense_rows_end_to_end_on_digits(tmp_path):
  config = load_config("fashion_mnist_paper", "quick")
  config.data.name = "digits"
  config.data.pool_size, config.data.val_size, config.data.test_size = 240, 120, 120
  config.model.hidden = (16,)
  config.train.epochs = 2
  config.train.batch_size = 32
  config.train.curriculum.reference_epochs = 2
  config.paper.rows = ("none",)
  config.paper.hist_epochs = (2,)
  config.paper.tsne_points = 60
  config.paper.tsne_iter = 250
  config.paper.augment_crop_padding = 1
  config.paper.ensemble_k = 2
  config.paper.sisa_shards = 2
  config.paper.unlearn_fraction = 0.1
  config.paper.unlearn_finetune_epochs = 1
  config.paper.unlearn_ascent_steps = 3
  out = str(tmp_path / "table")
  res = paper_table().run(config, str(tmp_path / "work"), out, log=lambda s: None)
  d = res["defenses"]
  assert set(d) == set(config.paper.defense_rows)
  for row in ("curriculum", "augmentation", "ensemble", "ensemble_bagging"):
    e = d[row]
    assert e["status"] == "run", row
    assert 0 <= e["auc"] <= 100 and 0 <= e["test_acc"] <= 100
    if row != "ensemble_bagging":       # not in lira_rows
      for k in ("lira", "lira_unaware"):
        assert 0 <= e[k]["tpr_at_0.1%"] <= 100 and 0 <= e[k]["auc"] <= 100, (row, k)
  aug = d["augmentation"]
  assert aug["num_queries"] == 10 and "threshold_unaware" in aug  # 5 shifts x mirror
  assert d["ensemble"]["sub_models"] == 2
  # partitions: each released model's sub-models split its members exactly in two
  assert d["ensemble"]["examples_per_sub_model"] == 120
  u = d["unlearning"]
  assert set(u["methods"]) == {"none", "retrain", "finetune", "gradient_ascent", "sisa"}
  assert u["forgotten_per_target"] == 24
  for m in u["methods"].values():
    assert 0 <= m["auc_forgotten"] <= 100 and 0 <= m["auc_retained"] <= 100
  assert u["methods"]["retrain"]["speedup_vs_retrain"] == 1.0
  assert set(u["lira_forgotten"]) == {"none", "retrain", "finetune", "gradient_ascent"}
  # nothing unlearned: the adaptive and unaware attackers coincide
  n = u["lira_forgotten"]["none"]
  assert np.isclose(n["aware"]["auc"], n["unaware"]["auc"])
  md = open(out + ".md").read()
  assert "## Defenses the study names but does not evaluate" in md
  assert "| curriculum learning |" in md and "| SISA (exact) |" in md
  assert "LiRA adaptive" in md and "Beyond the study" in md
