r"""The study's defense table (Khalil et al. 2025, Tables 2-3) for one config, plus LiRA, with
every number's interval and each finding's verdict from a test.

  python experiments/paper_table.py --config=configs/fashion_mnist_paper.py \
      --workdir=/tmp/mia_runs/pt_fmnist --out=experiments/results/paper_table_fashion_mnist

Rows (config.paper.rows): none, early_stopping, l2_5e-4, l2_1e-3, l2_5e-3, regdrop_0.25,
regdrop_0.5 (L2 5e-4 plus dropout), label_smoothing, dp_sgd, logit_reweighting (post hoc, on
the `none` models; also given for regdrop_0.25). Each trained row: M = membership.num_models
models on the train split (membership.scheme 'train_test': members = train split,
non-members = test split), the global loss-threshold attack on each as target (AUC and
advantage in percent), train / test accuracy, each the mean over the M targets with its 95% t
interval over them, and the no-leak permutation test of the row (significance.leak_test);
training seconds per model. Model m of every row but DP-SGD shares its initialisation and data
order with model m of the others (ensemble.model_keys, epoch_batches), so rows are compared
paired by model. For rows in paper.lira_rows (all of them in the Fashion-MNIST config), LiRA
online on paper.lira_num_models models trained on random halves of the same audited set gives
TPR at 0.1% FPR with its interval over those targets and the non-members it rests on. Logit
reweighting is attacked by an attacker who knows it (shadow outputs reweighted the same way)
and one who does not (raw shadows). The `none` row is trained epoch by epoch (resuming its
checkpoint) to record member / non-member histograms at paper.hist_epochs, and its first model
is analysed (mia_jax.analysis.study). The rows of paper.defense_rows (curriculum,
augmentation, ensemble, ensemble_bagging, unlearning; experiments/paper_defenses.py) go beyond
the study, each attacked by an adaptive and an unaware attacker. Every training resumes from
the workdir.

Verdicts (mia_jax.analysis.significance.table_claims and decide): every finding is tested
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
import functools
import json
import os

import sys
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position
from mia_jax import attacks, data, defenses, inference, log_filter, metrics, models, stats
from mia_jax.analysis import embeddings, paper_report, plots, significance, study
from mia_jax.data import membership
from mia_jax.defenses import logit_reweighting
from mia_jax.training import dp as dp_lib
from mia_jax.training import ensemble, steps
import paper_defenses
# pylint: enable=wrong-import-position


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


def audited_set(ds):
  """The train split then the test split: x [N, ...], y [N], num_train."""
  return (np.concatenate([ds.pool_x, ds.test_x]), np.concatenate([ds.pool_y, ds.test_y]),
          len(ds.pool_y))


def train(model, tcfg, x, y, keep, seed, val, ckpt, log, dp_plan=None, difficulty=None
          ) -> ensemble.TrainResult:
  """train_ensemble, resuming `ckpt`; result.history holds every epoch's seconds."""
  return ensemble.train_ensemble(model, tcfg, x, y, keep, seed=seed, val=val,
                                 checkpoint_dir=ckpt, log=log, dp_plan=dp_plan,
                                 difficulty=difficulty)


LIRA_ALPHA = 1e-3       # LiRA's headline: TPR at 0.1% FPR


def spread(name: str, values, lo: float = -np.inf, hi: float = np.inf) -> dict:
  """{name: mean, name_ci: 95% t interval over the units (models), name_per_target: values}.

  The interval is clipped to [lo, hi] (a percentage cannot leave [0, 100]); [nan, nan] for
  one unit.
  """
  v = [float(x) for x in values]
  a, b = stats.t_interval(v)
  return {name: float(np.mean(v)), f"{name}_ci": [float(np.clip(a, lo, hi)),
                                                 float(np.clip(b, lo, hi))],
          f"{name}_per_target": v}


def roc_per_target(scores, keep, alpha: float = LIRA_ALPHA) -> dict:
  """Per target t (scores[t] against keep[t], every example): AUC, advantage (max TPR - FPR)
  and TPR at FPR alpha as fractions [T], and the non-members and false positives allowed."""
  out = {"auc": [], "advantage": [], "tpr": [], "nonmembers": [], "false_positives": []}
  for s, k in zip(np.asarray(scores), np.asarray(keep, bool)):
    fpr, tpr, _ = metrics.roc_curve(s, k)
    out["auc"].append(metrics.auc(fpr, tpr))
    out["advantage"].append(metrics.advantage(fpr, tpr))
    out["tpr"].append(metrics.tpr_at_fpr(fpr, tpr, alpha))
    out["nonmembers"].append(int((~k).sum()))
    out["false_positives"].append(int(np.floor(alpha * (~k).sum() + 1e-9)))
  return {k: np.asarray(v) for k, v in out.items()}


def loss_scores(logits, y, keep) -> np.ndarray:
  """The loss-threshold attack's scores [M, N] of every model as target."""
  if keep.shape[0] == 1:   # AttackData needs a second model; the threshold attack reads none
    return attacks.run("loss", attacks.AttackData(
        logits=np.concatenate([logits, logits]), labels=y,
        keep=np.concatenate([keep, keep])), [0])
  return attacks.run("loss", attacks.AttackData(logits=logits, labels=y, keep=keep),
                     list(range(keep.shape[0])))


_LEAK_PERCENT = ("auc", "advantage", "null_auc_mean", "null_auc_sd", "null_auc_q95",
                 "null_advantage_mean", "null_advantage_q95")


def threshold_attack(logits, y, keep, *, permutations: int = 4999, seed: int = 0) -> dict:
  """The loss-threshold attack on every model as target: AUC and advantage in percent, each
  the mean over targets with its t interval over them, and the no-leak permutation test of
  both (significance.leak_test, one permutation of the examples for every target)."""
  scores = loss_scores(logits, y, keep)
  r = roc_per_target(scores, keep)
  leak = significance.leak_test(scores, keep, num_permutations=permutations, seed=seed)
  return {**spread("auc", 100 * r["auc"], 0, 100),
          **spread("advantage", 100 * r["advantage"], 0, 100),
          "leak": {k: (100 * v if k in _LEAK_PERCENT else v) for k, v in leak.items()}}


def accuracies(logits, y, keep) -> dict:
  """Train and test accuracy in percent: mean over models with its t interval over them."""
  return {**spread("train_acc", 100 * inference.accuracy(logits, y, keep), 0, 100),
          **spread("test_acc", 100 * inference.accuracy(logits, y, ~keep), 0, 100)}


def _lira_summary(per: dict) -> dict:
  return {**spread("tpr_at_0.1%", 100 * per["tpr"], 0, 100),
          **spread("auc", 100 * per["auc"], 0, 100),
          "nonmembers": float(np.mean(per["nonmembers"])),
          "false_positives_at_0.1%": float(np.mean(per["false_positives"])),
          "num_models": int(len(per["tpr"]))}


def lira(logits, y, keep) -> dict:
  """LiRA online on every model as target: TPR at 0.1% FPR and AUC in percent (mean over
  targets, t interval over them, per target), with the non-members per target and the false
  positives that 0.1% of them allows (what the TPR rests on)."""
  targets = list(range(keep.shape[0]))
  scores = attacks.run("lira_online", attacks.AttackData(logits=logits, labels=y, keep=keep),
                       targets)
  return _lira_summary(roc_per_target(scores, keep))


def lira_unaware(logits, defended, y, keep) -> dict:
  """LiRA by an attacker who does not know the defense: each target's outputs defended, its
  shadows' raw. Same fields as `lira`."""
  scores = []
  for t in range(keep.shape[0]):
    mixed = logits.copy()
    mixed[t] = defended[t]
    scores.append(attacks.run("lira_online", attacks.AttackData(
        logits=mixed, labels=y, keep=keep), [t])[0])
  return _lira_summary(roc_per_target(np.stack(scores), keep))


def reweight_overhead(model, state, x, keep, y, logits, w, batch_size) -> dict:
  """Seconds of eval-mode inference of each model on x vs of reweighting its outputs
  (centroids precomputed, as a deployed defense holds them); both compiled before timing.
  overhead_pct: the mean over models of each model's ratio, with its t interval (the
  repetitions the overhead claim is tested over)."""
  predict = jax.jit(lambda v, inp: steps.predict(model, v, inp, batch_size))
  mu = logit_reweighting.class_centroids(logits[:, :, 0].astype(np.float32), y, keep)
  variables = [embeddings.model_variables(state, m) for m in range(keep.shape[0])]
  predict(variables[0], x).block_until_ready()
  logit_reweighting.reweight_ensemble(logits[:1], mu[:1], w)
  t_query, t_rw = [], []
  for m, v in enumerate(variables):
    t0 = time.perf_counter()
    predict(v, x).block_until_ready()
    t_query.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    logit_reweighting.reweight_ensemble(logits[m:m + 1], mu[m:m + 1], w)
    t_rw.append(time.perf_counter() - t0)
  t_query, t_rw = np.asarray(t_query), np.asarray(t_rw)
  return {"inference_s": float(t_query.sum()), "reweight_s": float(t_rw.sum()),
          **spread("overhead_pct", 100 * t_rw / t_query, 0),
          "reweight_us_per_output": float(1e6 * t_rw.sum() / (logits.size // logits.shape[-1]))}


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


def run(config, workdir: str, out: str, log=print) -> dict:
  """Runs the grid and the analysis; writes OUT.md / OUT.json / OUT_figures; returns the dict."""
  p = config.paper
  ds = data.load(config.data)
  x, y, n_train = audited_set(ds)
  m = int(config.membership.num_models)
  keep = membership.train_test(m, n_train, len(ds.test_y))
  val = (ds.val_x, ds.val_y) if len(ds.val_y) else None
  seed, bs, q = int(config.seed), int(config.inference.batch_size), config.data.queries
  fig_dir = out + "_figures"
  os.makedirs(fig_dir, exist_ok=True)
  lira_m = int(p.lira_num_models)
  lira_keep = membership.keep_matrix(seed, lira_m, len(y), 0.5) if lira_m >= 2 else None
  leak_kw = {"permutations": int(p.get("leak_permutations", 4999)), "seed": seed}
  attack = functools.partial(threshold_attack, **leak_kw)
  res = {"config": json.loads(json.dumps(config.to_dict(), default=str)), "rows": {},
         "dataset": {"name": ds.name, "members": n_train, "nonmembers": int(len(ds.test_y)),
                     "val": int(len(ds.val_y)), "num_classes": ds.num_classes},
         "num_models": m, "post_hoc": {}}
  kept = {}
  for row in p.rows:
    log(f"== row {row}")
    setting = row_setting(config, row)
    if setting is None:
      continue
    if row == "early_stopping" and val is None:
      res["rows"][row] = {"status": "not run (no validation split: set data.val_size)"}
      continue
    mcfg, tcfg = setting
    model = models.build(mcfg, ds.num_classes)
    ckpt = os.path.join(workdir, row, "train_test")
    if row == "none":
      # epoch by epoch (resuming the checkpoint), the logits recorded at each chosen epoch
      snaps, final = {}, int(tcfg.epochs)
      for e in sorted({int(v) for v in p.hist_epochs if int(v) <= final} | {final}):
        tcfg.epochs = e
        result = train(model, tcfg, x, y, keep, seed, val, ckpt, log)
        logits = inference.query_logits(model, result.state, x, q, bs)
        if e in p.hist_epochs:
          snaps[e] = snapshot_at(os.path.join(workdir, row, f"signals_epoch{e}.npz"), e,
                                 result.epochs_run, logits, y, log)
      snaps = {e: v for e, v in snaps.items() if v is not None}
      if snaps:
        plots.signal_histograms(snaps, keep[0], os.path.join(fig_dir, "histograms_by_epoch.png"))
    else:
      plan = dp_plan_for(config, keep, tcfg) if row == "dp_sgd" else None
      result = train(model, tcfg, x, y, keep, seed, val, ckpt, log, dp_plan=plan)
      logits = inference.query_logits(model, result.state, x, q, bs)
    # every row but DP-SGD (Poisson batches) shares model m's initialisation and data order
    # with the `none` row's model m: rows are compared paired by model
    entry = {"status": "run", **accuracies(logits, y, keep), **attack(logits, y, keep),
             "seconds_per_model": sum(h["seconds"] for h in result.history) / m,
             "epochs_run": result.epochs_run, "shares_seeds": row != "dp_sgd"}
    if row == "dp_sgd":
      entry.update(epsilon=plan.epsilon(), delta=plan.delta,
                   noise_multiplier=plan.noise_multiplier, clip_norm=plan.clip_norm)
    if lira_keep is not None and row in p.lira_rows:
      lplan = dp_plan_for(config, lira_keep, tcfg) if row == "dp_sgd" else None
      lresult = train(model, tcfg, x, y, lira_keep, seed, val,
                      os.path.join(workdir, row, "lira"), log, dp_plan=lplan)
      llogits = inference.query_logits(model, lresult.state, x, q, bs)
      entry["lira"] = lira(llogits, y, lira_keep)
      kept[row + "/lira"] = llogits
      kept[row + "/lira_state"] = lresult.state
    res["rows"][row] = entry
    log(f"{row}: {_brief(entry)}")
    kept[row] = (model, result.state, logits)

  if "logit_reweighting" in p.rows:
    w = float(p.reweight_w)
    for base in ("none", "regdrop_0.25"):
      if base not in kept:
        continue
      model, state, logits = kept[base]
      defended = defenses.get("logit_reweighting")(logits, y, keep, w)
      entry = {"base": base, "w": w, **accuracies(defended, y, keep),
               **attack(defended, y, keep),
               "argmax_changed": float(np.mean(defended.argmax(-1) != logits.argmax(-1))),
               **reweight_overhead(model, state, x, keep, y, logits, w, bs)}
      if base + "/lira" in kept:
        raw = kept[base + "/lira"]
        dl = defenses.get("logit_reweighting")(raw, y, lira_keep, w)
        entry["lira_aware"] = lira(dl, y, lira_keep)
        entry["lira_unaware"] = lira_unaware(raw, dl, y, lira_keep)
      res["post_hoc"][base] = entry
      log(f"logit reweighting on {base}: {_brief(entry)}")

  if p.get("defense_rows"):
    if "none" not in kept:
      res["defenses"] = {r: {"status": "not run (needs the none row)"} for r in p.defense_rows}
    else:
      has_lira = "none/lira" in kept
      ctx = paper_defenses.Context(
          config=config, ds=ds, x=x, y=y, keep=keep, lira_keep=lira_keep if has_lira else None,
          val=val, workdir=workdir, log=log, train=train, lira=lira, lira_unaware=lira_unaware,
          threshold_attack=attack, accuracies=accuracies,
          none_state=kept["none"][1], none_logits=kept["none"][2],
          none_lira_state=kept.get("none/lira_state"), none_lira_logits=kept.get("none/lira"))
      res["defenses"] = paper_defenses.run_rows(
          ctx, lambda row: models.build(config.model, ds.num_classes))

  if "none" in kept:
    model, state, logits = kept["none"]
    phi = attacks.signals.scaled_logit(logits[0], y[:, None]).mean(-1)
    lira_in = None
    if "none/lira" in kept:
      s = attacks.run("lira_online", attacks.AttackData(
          logits=kept["none/lira"], labels=y, keep=lira_keep), list(range(lira_m)))
      lira_in = study.lira_inputs(model, kept["none/lira_state"], x, s, lira_keep,
                                  kept["none/lira"])
    res["analysis"] = study.analyse_target(
        model, embeddings.model_variables(state, 0), x, y, keep[0], phi, fig_dir, lira=lira_in,
        tsne_points=int(p.tsne_points),
        tsne_iter=int(p.get("tsne_iter", 1000)), do_gradcam=bool(p.gradcam), seed=seed, log=log)
  res["claims"] = significance.decide(significance.table_claims(res))
  with open(out + ".json", "w") as f:
    json.dump(res, f, indent=1, default=float)
  with open(out + ".md", "w") as f:
    f.write(paper_report.markdown(res, os.path.basename(fig_dir)))
  log(f"wrote {out}.md, {out}.json and {fig_dir}/")
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
