"""The defenses the study names but does not evaluate, as rows of experiments/paper_table.py:
curriculum learning, data augmentation, ensembles (disjoint partitions; bagging) and machine
unlearning (retraining, SISA, fine-tuning, gradient ascent).

Each row is attacked twice, as in the logit-reweighting row:
- the loss-threshold attack on the M targets trained on the train split (no shadow models);
- LiRA online on paper.lira_num_models models trained on random halves (`lira_keep`) WITH the
  defense, every model in turn the target: the ADAPTIVE attacker, whose shadows are trained
  with the same defense (and, for augmentation, queried on the training augmentation's views);
- LiRA by an UNAWARE attacker: the same defended targets, but shadows trained without any
  defense (the `none` row's LiRA models) and, for augmentation, only the plain query.

Unlearning asks a different question: after forgetting F, do the forgotten examples look like
non-members? Targets forget a random fraction of their members; the table gives the AUC (and
TPR at 0.1% FPR for LiRA) of forgotten versus never-seen examples, 50% being perfect, and of the
retained members for contrast, with each method's seconds against retraining from scratch. The
adaptive LiRA attacker's shadows forget their own random fraction by the same method (their
forgotten examples counted OUT); the unaware one's are the `none` row's models.

Called by paper_table.run with what it already trained (the `none` row's targets and LiRA
models); every training resumes from its own checkpoint directory under the workdir.
"""

import copy
import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from mia_jax import attacks, inference, metrics, stats
from mia_jax.defenses import ensemble_defense, unlearning
from mia_jax.training import from_config, steps

ROWS = ("curriculum", "augmentation", "ensemble", "ensemble_bagging", "unlearning")
NAMES = {"curriculum": "curriculum learning", "augmentation": "data augmentation",
         "ensemble": "ensemble (disjoint partitions)", "ensemble_bagging": "ensemble (bagging)",
         "unlearning": "machine unlearning"}


@dataclasses.dataclass
class Context:
  """What every defense row needs: the data, the recipe, the `none` row's models, and
  paper_table's training and attack helpers (train, lira, lira_unaware, threshold_attack,
  accuracies). lira_keep is None when no LiRA models were trained."""
  config: Any
  ds: Any
  x: np.ndarray
  y: np.ndarray
  keep: np.ndarray
  lira_keep: np.ndarray | None
  val: Any
  workdir: str
  log: Callable[[str], None]
  train: Callable
  lira: Callable
  lira_unaware: Callable
  threshold_attack: Callable
  accuracies: Callable
  none_state: Any
  none_logits: np.ndarray
  none_lira_state: Any
  none_lira_logits: np.ndarray | None

  @property
  def p(self):
    return self.config.paper

  @property
  def seed(self) -> int:
    return int(self.config.seed)

  @property
  def bs(self) -> int:
    return int(self.config.inference.batch_size)

  @property
  def q(self) -> str:
    return self.config.data.queries


def _spread(name: str, values) -> dict:
  """{name: mean, name_ci: t interval over the targets in [0, 100], name_per_target}."""
  v = [float(x) for x in values]
  lo, hi = stats.t_interval(v)
  return {name: float(np.mean(v)), f"{name}_ci": [float(np.clip(lo, 0, 100)),
                                                 float(np.clip(hi, 0, 100))],
          f"{name}_per_target": v}


def _seconds(result, count: int) -> float:
  return sum(h["seconds"] for h in result.history) / count


def _timed(path: str, fn):
  """(fn(), wall seconds of its first full run): trainings resume from their checkpoints, so a
  rerun reads the seconds saved at `path` by the first run instead of timing a restore."""
  t0 = time.perf_counter()
  out = fn()
  sec = time.perf_counter() - t0
  if os.path.isfile(path):
    return out, float(np.load(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.save(path, sec)
  return out, sec


def _plain_tcfg(ctx):
  return copy.deepcopy(ctx.config.train)


def _lira_pair(ctx, aware_logits, unaware_target_logits) -> dict:
  """LiRA by the adaptive attacker (every model defended) and the unaware one (raw shadows)."""
  out = {"lira": ctx.lira(aware_logits, ctx.y, ctx.lira_keep)}
  raw = ctx.none_lira_logits[:, :, :unaware_target_logits.shape[2]]
  out["lira_unaware"] = ctx.lira_unaware(raw, unaware_target_logits, ctx.y, ctx.lira_keep)
  return out


def curriculum_row(ctx, model) -> dict:
  """Easy-to-hard training; difficulty from a reference model trained on the validation split
  (held out from every model, so the attacker can rebuild the same order)."""
  tcfg = _plain_tcfg(ctx)
  tcfg.curriculum.enabled = True
  d_path = os.path.join(ctx.workdir, "curriculum", "difficulty.npy")
  if os.path.isfile(d_path):
    diff = np.load(d_path)
  else:
    diff = from_config.reference_difficulty(model, tcfg, ctx.ds.val_x, ctx.ds.val_y, ctx.x, ctx.y,
                                           seed=ctx.seed, batch_size=ctx.bs, log=ctx.log)
    os.makedirs(os.path.dirname(d_path), exist_ok=True)
    np.save(d_path, diff)
  res = ctx.train(model, tcfg, ctx.x, ctx.y, ctx.keep, ctx.seed, ctx.val,
                  os.path.join(ctx.workdir, "curriculum", "train_test"), ctx.log,
                  difficulty=diff)
  logits = inference.query_logits(model, res.state, ctx.x, ctx.q, ctx.bs)
  entry = {"status": "run", **ctx.accuracies(logits, ctx.y, ctx.keep),
           **ctx.threshold_attack(logits, ctx.y, ctx.keep),
           "seconds_per_model": _seconds(res, ctx.keep.shape[0]), "epochs_run": res.epochs_run,
           "shares_seeds": False,        # its batches follow the curriculum, not the seed's order
           "setting": f"pacing {tcfg.curriculum.pacing} from {tcfg.curriculum.start:g} over "
                      f"{tcfg.curriculum.ramp_epochs or tcfg.epochs} epochs, difficulty = "
                      f"{tcfg.curriculum.difficulty} of a reference model trained "
                      f"{tcfg.curriculum.reference_epochs} epochs on the validation split"}
  if ctx.lira_keep is not None and "curriculum" in ctx.p.lira_rows:
    lres = ctx.train(model, tcfg, ctx.x, ctx.y, ctx.lira_keep, ctx.seed, ctx.val,
                     os.path.join(ctx.workdir, "curriculum", "lira"), ctx.log, difficulty=diff)
    ll = inference.query_logits(model, lres.state, ctx.x, ctx.q, ctx.bs)
    entry.update(_lira_pair(ctx, ll, ll))
  return entry


def augmentation_row(ctx, model) -> dict:
  """Random crops (reflect padding) and flips in training. The aware attacker queries every
  view of the augmentation; the unaware one the plain image only."""
  tcfg = _plain_tcfg(ctx)
  tcfg.augment.crop_padding = int(ctx.p.augment_crop_padding)
  tcfg.augment.flip = bool(ctx.p.augment_flip)
  res = ctx.train(model, tcfg, ctx.x, ctx.y, ctx.keep, ctx.seed, ctx.val,
                  os.path.join(ctx.workdir, "augmentation", "train_test"), ctx.log)
  logits = inference.query_logits(model, res.state, ctx.x, "augment", ctx.bs,
                                  augment_cfg=tcfg.augment)
  plain = ctx.threshold_attack(logits[:, :, :1], ctx.y, ctx.keep)
  entry = {"status": "run", **ctx.accuracies(logits[:, :, :1], ctx.y, ctx.keep),
           **ctx.threshold_attack(logits, ctx.y, ctx.keep),
           "threshold_unaware": {k: plain[k] for k in ("auc", "auc_ci", "advantage",
                                                      "advantage_ci")},
           "num_queries": int(logits.shape[2]),
           "seconds_per_model": _seconds(res, ctx.keep.shape[0]), "epochs_run": res.epochs_run,
           "shares_seeds": True,         # model m's initialisation and batch order as `none`'s
           "setting": f"crop padding {tcfg.augment.crop_padding}, flip {tcfg.augment.flip}; "
                      f"aware attacks average the loss over {logits.shape[2]} views"}
  if ctx.lira_keep is not None and "augmentation" in ctx.p.lira_rows:
    lres = ctx.train(model, tcfg, ctx.x, ctx.y, ctx.lira_keep, ctx.seed, ctx.val,
                     os.path.join(ctx.workdir, "augmentation", "lira"), ctx.log)
    ll = inference.query_logits(model, lres.state, ctx.x, "augment", ctx.bs,
                                augment_cfg=tcfg.augment)
    entry.update(_lira_pair(ctx, ll, ll[:, :, :1]))
  return entry


def _sub_keeps(kind: str, keep: np.ndarray, k: int, seed: int) -> np.ndarray:
  """Sub-model keeps [G * K, N]: K parts (or bootstrap samples) of each row of keep [G, N]."""
  make = (ensemble_defense.partition_keep if kind == "ensemble"
          else ensemble_defense.bagging_keep)
  return ensemble_defense.stack_keeps([make(seed + 7 * g, k, keep.shape[1], members=keep[g])
                                       for g in range(keep.shape[0])])


def _train_released(ctx, model, tcfg, kind, keep, k, where):
  sub = _sub_keeps(kind, keep, k, ctx.seed)
  res = ctx.train(model, tcfg, ctx.x, ctx.y, sub, ctx.seed, ctx.val, where, ctx.log)
  logits = inference.query_logits(model, res.state, ctx.x, ctx.q, ctx.bs)
  out, rkeep = ensemble_defense.released(logits, sub, k)
  return out, rkeep, res, sub


def ensemble_row(ctx, model, kind: str) -> dict:
  """The released model averages K sub-models' softmax: each trained on one of K disjoint
  parts of its members ('ensemble') or on a bootstrap sample ('ensemble_bagging')."""
  k = int(ctx.p.ensemble_k)
  tcfg = _plain_tcfg(ctx)
  out, rkeep, res, sub = _train_released(ctx, model, tcfg, kind, ctx.keep, k,
                                         os.path.join(ctx.workdir, kind, "train_test"))
  assert (rkeep == ctx.keep).all() or kind != "ensemble"
  entry = {"status": "run", **ctx.accuracies(out, ctx.y, ctx.keep),
           **ctx.threshold_attack(out, ctx.y, ctx.keep),
           "seconds_per_model": _seconds(res, ctx.keep.shape[0]), "epochs_run": res.epochs_run,
           "shares_seeds": False,        # K sub-models per target, none of them `none`'s model
           "sub_models": k, "examples_per_sub_model": float(sub.sum(1).mean()),
           "setting": (f"K = {k} sub-models on disjoint parts" if kind == "ensemble" else
                       f"K = {k} sub-models on bootstrap samples"
                       f" ({100 * sub.sum(1).mean() / ctx.keep.sum(1).mean():.0f}% distinct)")
                      + "; released = mean softmax; seconds per released model"}
  if ctx.lira_keep is not None and kind in ctx.p.lira_rows:
    lout, lkeep, _, _ = _train_released(ctx, model, tcfg, kind, ctx.lira_keep, k,
                                        os.path.join(ctx.workdir, kind, "lira"))
    if kind == "ensemble":
      assert (lkeep == ctx.lira_keep).all()
    entry.update(_lira_pair(ctx, lout, lout))
  return entry


def _forget_sets(keep: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """bool [M, N]: a random `fraction` of each model's members, drawn per model."""
  out = np.zeros_like(keep, bool)
  for m in range(keep.shape[0]):
    own = np.flatnonzero(keep[m])
    rng = np.random.default_rng([seed, 0xF0, m])
    out[m, rng.choice(own, int(round(fraction * len(own))), replace=False)] = True
  return out


def _auc_tpr(scores, pos, neg) -> tuple[float, float]:
  s = np.concatenate([scores[pos], scores[neg]])
  member = np.r_[np.ones(pos.sum(), bool), np.zeros(neg.sum(), bool)]
  fpr, tpr, _ = metrics.roc_curve(s, member)
  return 100 * metrics.auc(fpr, tpr), 100 * metrics.tpr_at_fpr(fpr, tpr, 1e-3)


def _variables(state, m):
  return (jax.tree.map(lambda a: np.asarray(a[m]), state.params),
          jax.tree.map(lambda a: np.asarray(a[m]), state.batch_stats))


def _approximate(ctx, model, state, keep, forget, method) -> tuple[list, float]:
  """Each model of `state` unlearns its row of `forget` by `method`; returns per-model
  (params, batch_stats) and the mean wall seconds per model (compilation included, once per
  model: the library's finetune / gradient_ascent jit their own steps)."""
  tcfg = ctx.config.train
  out, t0 = [], time.perf_counter()
  for m in range(keep.shape[0]):
    params, bstats = _variables(state, m)
    if method == "finetune":
      ret = keep[m] & ~forget[m]
      params, bstats = unlearning.finetune(
          model, params, bstats, ctx.x[ret], ctx.y[ret], epochs=int(ctx.p.unlearn_finetune_epochs),
          batch_size=int(tcfg.batch_size), learning_rate=float(tcfg.learning_rate),
          seed=ctx.seed + m)
    else:
      params, _ = unlearning.gradient_ascent(
          model, params, bstats, ctx.x[forget[m]], ctx.y[forget[m]],
          max_steps=int(ctx.p.unlearn_ascent_steps),
          learning_rate=float(ctx.p.unlearn_ascent_lr))
    out.append((params, bstats))
  return out, (time.perf_counter() - t0) / keep.shape[0]


def _logits_of(ctx, model, variables) -> np.ndarray:
  state = steps.TrainState(step=None, params=jax.tree.map(lambda *a: np.stack(a),
                                                          *[v[0] for v in variables]),
                           batch_stats=jax.tree.map(lambda *a: np.stack(a),
                                                    *[v[1] for v in variables]),
                           opt_state=None, apply_fn=model.apply, tx=None)
  return inference.query_logits(model, state, ctx.x, ctx.q, ctx.bs)


def _unlearn_metrics(ctx, logits, keep, forget, seconds, retrain_seconds) -> dict:
  """Loss-threshold AUC of forgotten vs never-seen and retained vs never-seen: the mean over
  targets with its t interval over them, and per target (target m forgot its row of forget)."""
  scores = np.stack([-attacks.signals.loss(np.asarray(z, np.float32), ctx.y[:, None]).mean(-1)
                     for z in logits])                                   # [M, N]
  f, r = [], []
  for m in range(keep.shape[0]):
    f.append(_auc_tpr(scores[m], forget[m], ~keep[m])[0])
    r.append(_auc_tpr(scores[m], keep[m] & ~forget[m], ~keep[m])[0])
  pred = logits[:, :, 0].argmax(-1)
  acc = lambda name, mask: _spread(name, [100 * (pred[m] == ctx.y)[mask[m]].mean()  # noqa: E731
                                          for m in range(keep.shape[0])])
  return {**_spread("auc_forgotten", f), **_spread("auc_retained", r),
          **acc("acc_forgotten", forget), **acc("acc_retained", keep & ~forget),
          **acc("test_acc", ~keep), "seconds_per_model": seconds,
          "speedup_vs_retrain": (retrain_seconds / seconds) if seconds else None}


def _lira_forgotten(ctx, unlearned, forget, unlearned_keep=True) -> dict:
  """LiRA on forgotten vs never-seen examples of each LiRA model as target, after `unlearned`
  (logits [L, N, Q, C]; every model forgot its row of forget [L, N]). The adaptive attacker
  counts each shadow's forgotten examples OUT (unlearned_keep=False: nothing was unlearned,
  they stay IN, and the two attackers coincide)."""
  lk = ctx.lira_keep
  targets = list(range(lk.shape[0]))
  aware = attacks.run("lira_online", attacks.AttackData(
      logits=unlearned, labels=ctx.y, keep=(lk & ~forget) if unlearned_keep else lk), targets)
  res = {"aware": [], "unaware": []}
  for t in targets:   # the unaware attacker: the target unlearned, its shadows the raw models
    mixed = np.array(ctx.none_lira_logits)
    mixed[t] = unlearned[t]
    un = attacks.run("lira_online", attacks.AttackData(logits=mixed, labels=ctx.y, keep=lk), [t])
    res["aware"].append(_auc_tpr(aware[t], forget[t], ~lk[t]))
    res["unaware"].append(_auc_tpr(un[0], forget[t], ~lk[t]))
  return {k: {**_spread("auc", [a for a, _ in v]), **_spread("tpr_at_0.1%", [b for _, b in v])}
          for k, v in res.items()}


def unlearning_row(ctx, model) -> dict:
  """Targets forget a random paper.unlearn_fraction of their members; exact (retraining,
  SISA) and approximate (fine-tuning, gradient ascent) unlearning compared."""
  p, tcfg = ctx.p, _plain_tcfg(ctx)
  keep = ctx.keep
  forget = _forget_sets(keep, float(p.unlearn_fraction), ctx.seed)
  methods = {"none": _unlearn_metrics(ctx, ctx.none_logits, keep, forget, None, None)}
  where = os.path.join(ctx.workdir, "unlearning", "retrain")
  res, retrain_s = _timed(where + "_seconds.npy", lambda: ctx.train(
      model, tcfg, ctx.x, ctx.y, keep & ~forget, ctx.seed, ctx.val, where, ctx.log))
  retrain_s /= keep.shape[0]    # wall time of the whole training (compilation, checkpoints)
  logits = inference.query_logits(model, res.state, ctx.x, ctx.q, ctx.bs)
  methods["retrain"] = _unlearn_metrics(ctx, logits, keep, forget, retrain_s, retrain_s)
  for method in ("finetune", "gradient_ascent"):
    variables, sec = _approximate(ctx, model, ctx.none_state, keep, forget, method)
    methods[method] = _unlearn_metrics(ctx, _logits_of(ctx, model, variables), keep, forget, sec,
                                       retrain_s)
  sisa_logits, fit_s, forget_s = [], [], []
  for m in range(keep.shape[0]):
    sisa = unlearning.SISA(model=model, cfg=tcfg, pool_x=ctx.x, pool_y=ctx.y,
                           workdir=os.path.join(ctx.workdir, "unlearning", f"sisa_{m}"),
                           num_shards=int(p.sisa_shards), num_slices=int(p.sisa_slices),
                           seed=ctx.seed + m, members=keep[m], log=ctx.log)
    # fit() resumes (on a rerun: the shards as last left); forget() always retrains the
    # affected shards from their last checkpoint before the forgotten examples
    _, sec = _timed(os.path.join(sisa.workdir, "fit_seconds.npy"), sisa.fit)
    fit_s.append(sec)
    t0 = time.perf_counter()
    shards = sisa.forget(np.flatnonzero(forget[m]))
    forget_s.append(time.perf_counter() - t0)
    sisa_logits.append(sisa.log_probs(ctx.x)[:, None])
    ctx.log(f"SISA target {m}: retrained shards {shards}")
  methods["sisa"] = _unlearn_metrics(ctx, np.stack(sisa_logits), keep, forget,
                                     float(np.mean(forget_s)), retrain_s)
  methods["sisa"]["fit_seconds"] = float(np.mean(fit_s))
  entry = {"status": "run", "methods": methods, "forgotten_per_target": int(forget.sum(1).mean()),
           "setting": f"forget {100 * float(p.unlearn_fraction):g}% of the members; SISA "
                      f"{p.sisa_shards} shards x {p.sisa_slices} slices; fine-tuning "
                      f"{p.unlearn_finetune_epochs} epochs on the retained data; gradient "
                      f"ascent up to {p.unlearn_ascent_steps} steps of lr "
                      f"{p.unlearn_ascent_lr:g}"}
  if ctx.lira_keep is not None and "unlearning" in p.lira_rows:
    lk = ctx.lira_keep
    lforget = _forget_sets(lk, float(p.unlearn_lira_fraction), ctx.seed + 1)
    lira = {"none": _lira_forgotten(ctx, np.asarray(ctx.none_lira_logits), lforget,
                                    unlearned_keep=False)}
    lres = ctx.train(model, tcfg, ctx.x, ctx.y, lk & ~lforget, ctx.seed, ctx.val,
                     os.path.join(ctx.workdir, "unlearning", "lira_retrain"), ctx.log)
    lira["retrain"] = _lira_forgotten(
        ctx, inference.query_logits(model, lres.state, ctx.x, ctx.q, ctx.bs), lforget)
    for method in ("finetune", "gradient_ascent"):
      variables, _ = _approximate(ctx, model, ctx.none_lira_state, lk, lforget, method)
      lira[method] = _lira_forgotten(ctx, _logits_of(ctx, model, variables), lforget)
    entry["lira_forgotten"] = lira
    entry["lira_forgotten_per_target"] = int(lforget.sum(1).mean())
  return entry


def run_rows(ctx, model_for) -> dict:
  """Every row of paper.defense_rows: {row: entry}; model_for(row) builds the row's model."""
  out = {}
  for row in ctx.p.get("defense_rows", ()):
    ctx.log(f"== defense row {row}")
    model = model_for(row)
    if row == "curriculum":
      if not len(ctx.ds.val_y):
        out[row] = {"status": "not run (no validation split for the reference model)"}
        continue
      out[row] = curriculum_row(ctx, model)
    elif row == "augmentation":
      if ctx.x.ndim != 4:
        out[row] = {"status": "not run (augmentation needs images)"}
        continue
      out[row] = augmentation_row(ctx, model)
    elif row in ("ensemble", "ensemble_bagging"):
      out[row] = ensemble_row(ctx, model, row)
    elif row == "unlearning":
      out[row] = unlearning_row(ctx, model)
    else:
      raise ValueError(f"unknown defense row {row!r}; choose from {list(ROWS)}")
    ctx.log(f"{row}: done")
  return out
