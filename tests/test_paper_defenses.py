"""experiments/paper_defenses.py: every extra defense row of the paper table, end to end on a
tiny digits run, with its adaptive and unaware attackers."""


import numpy as np

from conftest import load_config, paper_table


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
