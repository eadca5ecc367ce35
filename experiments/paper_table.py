r"""The study's defense table (Khalil et al. 2025, Tables 2-3) for one config, plus LiRA, with
every number's interval and each finding's verdict from a test.

  python -m experiments.paper_table --config=configs/fashion_mnist_paper.py \
      --workdir=/tmp/mia_runs/pt_fmnist --out=experiments/results/paper_table_fashion_mnist

Rows (config.paper.rows): none, early_stopping, l2_5e-4, l2_1e-3, l2_5e-3, regdrop_0.25,
regdrop_0.5 (L2 5e-4 plus dropout), label_smoothing, dp_sgd, logit_reweighting (post hoc, on
the `none` models; also given for regdrop_0.25). Each trained row: M = membership.num_models
models on the train split (membership.scheme 'train_test': members = train split,
non-members = test split), the global loss-threshold attack on each as target (AUC and
advantage in percent), train / test accuracy, each the mean over the M targets with its 95% t
interval over them, and the no-leak permutation test of the row (significance.leak_test);
training seconds per model. Model m of every row but DP-SGD shares its initialisation and data
order with model m of the others (training.keys.model_keys, samplers.epoch_batches), so rows
are compared paired by model. For rows in paper.lira_rows (all of them in the Fashion-MNIST config), LiRA
online on paper.lira_num_models models trained on random halves of the same audited set gives
TPR at 0.1% FPR with its interval over those targets and the non-members it rests on. Logit
reweighting is attacked by an attacker who knows it (shadow outputs reweighted the same way)
and one who does not (raw shadows). The `none` row is trained epoch by epoch (resuming its
checkpoint) to record member / non-member histograms at paper.hist_epochs, and its first model
is analysed (mia_jax.analysis.study). The rows of paper.defense_rows (curriculum,
augmentation, ensemble, ensemble_bagging, unlearning; experiments/paper_defenses.py) go beyond
the study, each attacked by an adaptive and an unaware attacker. Every training resumes from
the workdir.

Verdicts (experiments/paper_claims.py's table_claims, mia_jax.analysis.significance.decide): every finding is tested
(paired t over the models where rows share them, Welch otherwise, the exact sign-flip over
LiRA's targets for its TPR at 0.1% FPR, TOST for "within a margin", a permutation null for
"still leaks") and Holm's correction runs over all of the table's claims; a finding "holds"
only when its adjusted p is at most 0.05, "fails" only when the test supports the opposite,
and is "not shown" otherwise. Why t tests and not sign-flips for the models: over n models a
sign-flip cannot go below p = 2 / 2**n, which Holm over about 50 claims needs below 0.001; the
models' AUC, advantage and accuracy each average thousands of examples and vary close to
normally over seeds. How many models: at least 5 (the table's configs use 5 or 10); the
Fashion-MNIST config's 10 keep the whole table within about 1.5 hours of a shared 2-core CPU.
Writes OUT.md, OUT.json (with every per-target value and every claim's test) and OUT_figures/.
"""

import copy
import dataclasses
import functools
import json
import os

from absl import app, flags
import numpy as np
from ml_collections import config_flags

from mia_jax import attacks, data, log_filter, models, pipeline
from mia_jax.analysis import embeddings, plots, significance, study
from mia_jax.data import membership
from mia_jax.defenses import post_hoc
from mia_jax.training import dp as dp_lib
from mia_jax.training import from_config

from experiments import paper_claims, paper_defenses, paper_report
from experiments.paper_metrics import (accuracies, lira, lira_unaware, reweight_overhead,
                                       threshold_attack)


_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py with a `paper` block.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and logits of every row.")
_OUT = flags.DEFINE_string("out", None, "Output prefix (OUT.md, OUT.json); default WORKDIR/table.")



def row_setting(config, row: str):
  """(model config, train config) of a trained row; None for post-hoc or unavailable rows."""
  p = config.paper
  mcfg, tcfg = copy.deepcopy(config.model), copy.deepcopy(config.train)
  if row == "none":
    pass
  elif row == "early_stopping":
    tcfg.early_stopping_patience = int(p.early_stopping_patience)
  elif row.startswith("l2_"):
    tcfg.l2 = float(row[3:])
  elif row.startswith("regdrop_"):
    tcfg.l2, mcfg.dropout = 5e-4, float(row[8:])
  elif row == "label_smoothing":
    tcfg.label_smoothing = float(p.label_smoothing)
  elif row == "dp_sgd":
    if mcfg.get("norm", "none") == "batch":
      mcfg.norm = "group"           # the study replaces BatchNorm by GroupNorm under DP
  else:
    return None
  return mcfg, tcfg


def dp_plan_for(config, keep, tcfg):
  """The DP-SGD row's plan: the study's clip 1.0 and noise multiplier (paper.dp_noise_multiplier,
  default 1.0 as its Purchase100 run), delta = 1 / n_train, Poisson sampling, PLD accounting."""
  dpc = copy.deepcopy(config.dp)
  dpc.enabled = True
  dpc.clip_norm = float(config.paper.get("dp_clip", 1.0))
  dpc.noise_multiplier = float(config.paper.get("dp_noise_multiplier", 1.0))
  dpc.target_epsilon = 0.0
  return dp_lib.plan(dpc, keep, int(tcfg.batch_size), int(tcfg.epochs))


def audited_set(ds: data.Dataset) -> tuple[data.Dataset, int]:
  """The dataset whose pool is the train split then the test split (the audited examples, N),
  and the number of train-split examples (members under the train_test scheme)."""
  audited = dataclasses.replace(ds, pool_x=np.concatenate([ds.pool_x, ds.test_x]),
                                pool_y=np.concatenate([ds.pool_y, ds.test_y]))
  return audited, len(ds.pool_y)


def row_config(config, mcfg, tcfg):
  """The config of one row: the table's, with the row's model and train blocks."""
  out = copy.deepcopy(config)
  out.model, out.train = mcfg, tcfg
  return out


def train_and_query(config, model, audited, keep, ckpt, log, dp_plan=None):
  """The pipeline's training and inference stages on the audited set (resuming `ckpt`):
  (TrainResult, whose history holds every epoch's seconds, and logits [M, N, Q, C])."""
  result = pipeline.train_models(config, model, audited, keep, ckpt, dp_plan, log)
  logits, = pipeline.query_models(config, model, result.state, (audited.pool_x,), log)
  return result, logits


def train(model, tcfg, x, y, keep, seed, val, ckpt, log, dp_plan=None, difficulty=None):
  """The trainer on arrays (paper_defenses' rows, which set their own recipe), resuming `ckpt`."""
  return from_config.train_from_config(model, tcfg, x, y, keep, seed=seed, val=val,
                                       checkpoint_dir=ckpt, log=log, dp_plan=dp_plan,
                                       difficulty=difficulty)


def signal_snapshot(logits, y) -> dict:
  """Target 0's loss, confidence and scaled logit [N] (first query)."""
  z = logits[0, :, 0]
  return {"loss": attacks.signals.loss(z, y), "confidence": attacks.signals.confidence(z, y),
          "scaled logit": attacks.signals.scaled_logit(z, y)}


def snapshot_at(path: str, epoch: int, epochs_run: int, logits, y, log) -> dict | None:
  """The signals at `epoch`, saved on first sight: a rerun resumes past that epoch, so it reads
  them back; None (and a log line) if a resumed checkpoint already lay past it."""
  if os.path.isfile(path):
    with np.load(path) as f:
      return {k.replace("_", " "): f[k] for k in f.files}
  if epochs_run != epoch:
    log(f"no histogram for epoch {epoch}: the checkpoint resumed from lies past it")
    return None
  snap = signal_snapshot(logits, y)
  np.savez(path, **{k.replace(" ", "_"): v for k, v in snap.items()})
  return snap


def _brief(entry: dict) -> str:
  """The entry's means for the log (no per-target lists, no nested blocks)."""
  return json.dumps({k: v for k, v in entry.items()
                     if not k.endswith(("_per_target", "_ci")) and not isinstance(v, dict)})


@dataclasses.dataclass
class Table:
  """What the rows share: the audited set, its keep matrices, the attack, the results so far."""
  config: object
  ds: data.Dataset            # the config's split (val: early stopping)
  audited: data.Dataset       # pool = train split then test split: the N audited examples
  keep: np.ndarray            # bool [M, N]: members = the train split (train_test scheme)
  lira_keep: np.ndarray | None  # bool [L, N]: random halves, for LiRA (None: no LiRA models)
  workdir: str
  fig_dir: str
  attack: object              # threshold_attack with the table's permutations and seed
  log: object
  res: dict
  kept: dict = dataclasses.field(default_factory=dict)   # row -> (model, state, logits), ...


def _none_row(t: Table, model, cfg, ckpt):
  """The `none` row, trained epoch by epoch (resuming its checkpoint), its signals recorded at
  each of paper.hist_epochs (histograms_by_epoch.png)."""
  p, y = t.config.paper, t.audited.pool_y
  snaps, final = {}, int(cfg.train.epochs)
  for e in sorted({int(v) for v in p.hist_epochs if int(v) <= final} | {final}):
    cfg.train.epochs = e
    result, logits = train_and_query(cfg, model, t.audited, t.keep, ckpt, t.log)
    if e in p.hist_epochs:
      snaps[e] = snapshot_at(os.path.join(t.workdir, "none", f"signals_epoch{e}.npz"), e,
                             result.epochs_run, logits, y, t.log)
  snaps = {e: v for e, v in snaps.items() if v is not None}
  if snaps:
    plots.signal_histograms(snaps, t.keep[0], os.path.join(t.fig_dir, "histograms_by_epoch.png"))
  return result, logits


def trained_row(t: Table, row: str) -> None:
  """One trained row of the table: its models, accuracies, threshold attack, leak test and
  (paper.lira_rows) LiRA on models trained on random halves with the same recipe."""
  config, y, m = t.config, t.audited.pool_y, t.keep.shape[0]
  mcfg, tcfg = row_setting(config, row)
  cfg = row_config(config, mcfg, tcfg)
  model = models.build(mcfg, t.ds.num_classes)
  ckpt = os.path.join(t.workdir, row, "train_test")
  plan = dp_plan_for(config, t.keep, cfg.train) if row == "dp_sgd" else None
  if row == "none":
    result, logits = _none_row(t, model, cfg, ckpt)
  else:
    result, logits = train_and_query(cfg, model, t.audited, t.keep, ckpt, t.log, dp_plan=plan)
  # every row but DP-SGD (Poisson batches) shares model m's initialisation and data order
  # with the `none` row's model m: rows are compared paired by model
  entry = {"status": "run", **accuracies(logits, y, t.keep), **t.attack(logits, y, t.keep),
           "seconds_per_model": sum(h["seconds"] for h in result.history) / m,
           "epochs_run": result.epochs_run, "shares_seeds": row != "dp_sgd"}
  if plan is not None:
    entry.update(epsilon=plan.epsilon(), delta=plan.delta,
                 noise_multiplier=plan.noise_multiplier, clip_norm=plan.clip_norm)
  if t.lira_keep is not None and row in config.paper.lira_rows:
    lplan = dp_plan_for(config, t.lira_keep, cfg.train) if row == "dp_sgd" else None
    lresult, llogits = train_and_query(cfg, model, t.audited, t.lira_keep,
                                       os.path.join(t.workdir, row, "lira"), t.log,
                                       dp_plan=lplan)
    entry["lira"] = lira(llogits, y, t.lira_keep)
    t.kept[row + "/lira"] = llogits
    t.kept[row + "/lira_state"] = lresult.state
  t.res["rows"][row] = entry
  t.log(f"{row}: {_brief(entry)}")
  t.kept[row] = (model, result.state, logits)


def post_hoc_rows(t: Table) -> None:
  """Logit reweighting (the pipeline's post-hoc stage) on the `none` and RegDrop 0.25 models:
  every model's outputs defended, attacked as the trained rows; LiRA by an attacker who
  reweights its shadows too (aware) and by one who does not (unaware)."""
  w, y = float(t.config.paper.reweight_w), t.audited.pool_y
  bs = int(t.config.inference.batch_size)
  for base in ("none", "regdrop_0.25"):
    if base not in t.kept:
      continue
    model, state, logits = t.kept[base]
    reweight = post_hoc.get("logit_reweighting")     # the pipeline's post-hoc defense
    defended = reweight(logits, y, t.keep, w=w)      # on arrays: a row may hold one model
    entry = {"base": base, "w": w, **accuracies(defended, y, t.keep),
             **t.attack(defended, y, t.keep),
             "argmax_changed": float(np.mean(defended.argmax(-1) != logits.argmax(-1))),
             **reweight_overhead(model, state, t.audited.pool_x, t.keep, y, logits, w, bs)}
    if base + "/lira" in t.kept:
      raw = t.kept[base + "/lira"]
      dl = reweight(raw, y, t.lira_keep, w=w)
      entry["lira_aware"] = lira(dl, y, t.lira_keep)
      entry["lira_unaware"] = lira_unaware(raw, dl, y, t.lira_keep)
    t.res["post_hoc"][base] = entry
    t.log(f"logit reweighting on {base}: {_brief(entry)}")


def defense_rows(t: Table) -> None:
  """The rows beyond the study (experiments/paper_defenses.py), beside the `none` row."""
  rows = t.config.paper.defense_rows
  if "none" not in t.kept:
    t.res["defenses"] = {r: {"status": "not run (needs the none row)"} for r in rows}
    return
  has_lira = "none/lira" in t.kept
  val = (t.ds.val_x, t.ds.val_y) if len(t.ds.val_y) else None
  ctx = paper_defenses.Context(
      config=t.config, ds=t.ds, x=t.audited.pool_x, y=t.audited.pool_y, keep=t.keep,
      lira_keep=t.lira_keep if has_lira else None, val=val, workdir=t.workdir, log=t.log,
      train=train, lira=lira, lira_unaware=lira_unaware, threshold_attack=t.attack,
      accuracies=accuracies, none_state=t.kept["none"][1], none_logits=t.kept["none"][2],
      none_lira_state=t.kept.get("none/lira_state"), none_lira_logits=t.kept.get("none/lira"))
  t.res["defenses"] = paper_defenses.run_rows(
      ctx, lambda row: models.build(t.config.model, t.ds.num_classes))


def analysis(t: Table) -> None:
  """The single-target analysis of the `none` row's first model (mia_jax.analysis.study)."""
  p, x, y = t.config.paper, t.audited.pool_x, t.audited.pool_y
  model, state, logits = t.kept["none"]
  phi = attacks.signals.scaled_logit(logits[0], y[:, None]).mean(-1)
  lira_in = None
  if "none/lira" in t.kept:
    s = attacks.run("lira_online", attacks.AttackData(
        logits=t.kept["none/lira"], labels=y, keep=t.lira_keep),
        list(range(t.lira_keep.shape[0])))
    lira_in = study.lira_inputs(model, t.kept["none/lira_state"], x, s, t.lira_keep,
                                t.kept["none/lira"])
  t.res["analysis"] = study.analyse_target(
      model, embeddings.model_variables(state, 0), x, y, t.keep[0], phi, t.fig_dir, lira=lira_in,
      tsne_points=int(p.tsne_points), tsne_iter=int(p.get("tsne_iter", 1000)),
      do_gradcam=bool(p.gradcam), seed=int(t.config.seed), log=t.log)


def _table(config, workdir: str, out: str, log) -> Table:
  """The table's shared setting: data, audited set, keep matrices, attack, results header."""
  p, seed = config.paper, int(config.seed)
  ds = data.load(config.data)
  audited, n_train = audited_set(ds)
  m = int(config.membership.num_models)
  lira_m = int(p.lira_num_models)
  leak_kw = {"permutations": int(p.get("leak_permutations", 4999)), "seed": seed}
  res = {"config": json.loads(json.dumps(config.to_dict(), default=str)), "rows": {},
         "dataset": {"name": ds.name, "members": n_train, "nonmembers": int(len(ds.test_y)),
                     "val": int(len(ds.val_y)), "num_classes": ds.num_classes},
         "num_models": m, "post_hoc": {}}
  fig_dir = out + "_figures"
  os.makedirs(fig_dir, exist_ok=True)
  return Table(config=config, ds=ds, audited=audited,
               keep=membership.train_test(m, n_train, len(ds.test_y)),
               lira_keep=(membership.keep_matrix(seed, lira_m, len(audited.pool_y), 0.5)
                          if lira_m >= 2 else None),
               workdir=workdir, fig_dir=fig_dir,
               attack=functools.partial(threshold_attack, **leak_kw), log=log, res=res)


def run(config, workdir: str, out: str, log=print) -> dict:
  """Runs the grid and the analysis; writes OUT.md / OUT.json / OUT_figures; returns the dict."""
  t = _table(config, workdir, out, log)
  for row in config.paper.rows:
    log(f"== row {row}")
    if row_setting(config, row) is None:
      continue
    if row == "early_stopping" and not len(t.ds.val_y):
      t.res["rows"][row] = {"status": "not run (no validation split: set data.val_size)"}
      continue
    trained_row(t, row)
  if "logit_reweighting" in config.paper.rows:
    post_hoc_rows(t)
  if config.paper.get("defense_rows"):
    defense_rows(t)
  if "none" in t.kept:
    analysis(t)
  res = t.res
  res["claims"] = significance.decide(paper_claims.table_claims(res))
  with open(out + ".json", "w") as f:
    json.dump(res, f, indent=1, default=float)
  with open(out + ".md", "w") as f:
    f.write(paper_report.markdown(res, os.path.basename(t.fig_dir)))
  log(f"wrote {out}.md, {out}.json and {t.fig_dir}/")
  return res


def main(argv):
  del argv
  log_filter.install()
  workdir = _WORKDIR.value
  out = _OUT.value or os.path.join(workdir, "table")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  run(_CONFIG.value, workdir, out)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
