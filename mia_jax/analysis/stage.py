"""The analysis stage: which examples leak, over every target of a run, and the study's
outlier claims (`config.analysis.enabled`; experiments/vulnerability.py on a finished run).

  1. Scores: every model in turn the target (analysis.attacks, e.g. LiRA online with the
     other M - 1 models as shadows, and the global loss threshold).
  2. Outlier scores from analysis.reference_models models of the run's architecture and
     training config, trained on random halves of the run's held-out TEST split (no pool
     example is in any of them; checkpoints in OUT_DIR/reference, resumed): in their
     penultimate features (distance to the class centroid, kNN distance, LOF, other-class
     neighbours), in their predictions (loss, error), and in pixel space (no model).
  3. mia_jax.analysis.leakage.study over them (flagged vs chance, per-example leakage IN vs OUT,
     the effects of each outlier score within each class and pooled, Holm), and as a null
     control (analysis.null_draws) the same study of the first attack's scores against keep
     matrices drawn independently of the training (nothing can leak with respect to them).
  4. Writes OUT_DIR/analysis.md, analysis.json, per_example.npz and figures/.

Not the target's own features: outlierness measured in a model that trained on an example
reads its memorisation of that example, the signal the attack detects. Not the run's other
models where the example is OUT either: they are the attack's references, so any score
computed from them is coupled to the leakage measure.
"""

import json
import os
import time
from typing import Callable, Mapping

import flax.linen as nn
import ml_collections
import numpy as np

from mia_jax import attacks, inference
from mia_jax.analysis import embeddings, leakage, leakage_report, outliers, plots
from mia_jax.attacks.base import AttackData
from mia_jax.data import Dataset, membership
from mia_jax.errors import ConfigError
from mia_jax.training import from_config

REFERENCE_SEED_OFFSET = 7919     # the reference models' seed: the run's seed plus this
NULL_SEED_OFFSET = 104729        # the null control's keep matrices: the run's seed plus this
FASHION = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "boot")
NAMES = {"centroid_distance": "distance to class centroid (features)",
         "knn_distance": "kNN distance within class (features)",
         "lof": "local outlier factor (features)",
         "border": "neighbours of other classes (features)",
         "ref_loss": "loss of unseen models", "ref_error": "error of unseen models",
         "pixel_centroid_distance": "distance to class centroid (pixels)"}


def enabled(analysis: ml_collections.ConfigDict | None) -> bool:
  """True when the config's analysis block asks for the stage."""
  return analysis is not None and bool(analysis.get("enabled", False))


def check_config(analysis: ml_collections.ConfigDict | None) -> None:
  """ConfigError for an unknown attack, no reference models, or alphas outside (0, 1)."""
  if analysis is None or not analysis.get("enabled", False):
    return
  if not analysis.attacks:
    raise ConfigError("analysis.attacks is empty; name at least one, e.g. "
                      "--config.analysis.attacks=\"('lira_online','loss')\"")
  for name in analysis.attacks:
    attacks.get(name)
  if int(analysis.reference_models) < 1:
    raise ConfigError(f"analysis.reference_models={analysis.reference_models} must be at least "
                      "1 (models trained on the test split score outlierness)")
  if not all(0.0 < float(a) < 1.0 for a in analysis.alphas):
    raise ConfigError(f"analysis.alphas={tuple(analysis.alphas)} must lie in (0, 1), e.g. "
                      "(0.01, 0.001)")
  for field in ("permutations", "null_draws", "null_permutations", "tsne_points"):
    if int(analysis[field]) < 0:
      raise ConfigError(f"analysis.{field}={analysis[field]} must be 0 or more")


def reference_models(model: nn.Module, config: ml_collections.ConfigDict, ds: Dataset,
                     checkpoint_dir: str, num: int, log: Callable[[str], None] = print):
  """Trains `num` models on random halves of the test split (resuming checkpoint_dir).

  Returns:
    (features [R, N, D], logits [R, N, Q, C], pool accuracy [R]) on the N pool examples.
  """
  seed = int(config.seed) + REFERENCE_SEED_OFFSET
  keep = membership.keep_matrix(seed, num, len(ds.test_y), 0.5)
  val = (ds.val_x, ds.val_y) if len(ds.val_y) else None
  result = from_config.train_from_config(model, config.train, ds.test_x, ds.test_y, keep,
                                         seed=seed, val=val, checkpoint_dir=checkpoint_dir,
                                         log=log)
  feats = np.stack([embeddings.penultimate(model, embeddings.model_variables(result.state, r),
                                           ds.pool_x)[0] for r in range(num)])
  logits = inference.query_logits(model, result.state, ds.pool_x, config.data.queries,
                                  int(config.inference.batch_size),
                                  augment_cfg=config.train.augment)
  acc = inference.accuracy(logits, ds.pool_y)
  log(f"analysis: reference models' pool accuracy {np.round(acc, 4).tolist()}")
  return feats, logits, acc


def outlier_scores(model: nn.Module, config: ml_collections.ConfigDict, ds: Dataset,
                   checkpoint_dir: str, num: int, include: np.ndarray,
                   log: Callable[[str], None] = print):
  """({name: [N]} of the module docstring's step 2, features [R, N, D], pool accuracy [R])."""
  feats, logits, acc = reference_models(model, config, ds, checkpoint_dir, num, log)
  unseen = np.broadcast_to(include, (num, len(include)))
  scores = outliers.reference_model_scores(feats, ds.pool_y, unseen)
  scores.pop("num_models")
  scores.update(outliers.reference_difficulty(logits, ds.pool_y, unseen))
  pixels = ds.pool_x.reshape(len(ds.pool_y), -1)
  scores["pixel_centroid_distance"] = outliers.centroid_distance(pixels, ds.pool_y, include)
  return scores, feats, acc


def null_analysis(scores: np.ndarray, keep: np.ndarray, labels: np.ndarray,
                  outl: Mapping[str, np.ndarray], include: np.ndarray, alphas, perms: int,
                  seed: int, name: str, draws: int) -> dict:
  """leakage.study of the real scores [T, N] against `draws` keep matrices drawn independently
  of the training (as many IN per example as the run's): no example can leak with respect to
  them, so each draw should find the precision at the base rate and no claim, whatever the
  real scores' spread, in all but about 5% of draws (Holm)."""
  rows = []
  for d in range(draws):
    null_keep = membership.keep_matrix(seed + NULL_SEED_OFFSET + d, keep.shape[0],
                                       keep.shape[1], float(keep.mean()))
    res, _ = leakage.study({name: scores}, null_keep, labels, outl, alphas, include,
                           num_permutations=perms, seed=seed + 1 + d)
    for alpha, r in res["attacks"][name].items():
      ps = [v.get(k, np.nan) for v in r["scores"].values() for k in ("rho_p_holm", "p_holm")]
      rows.append({"draw": d, "alpha": alpha, "precision": r["precision"]["precision"],
                   "base_rate": r["precision"]["base_rate"],
                   "precision_p_holm": r["precision"].get("p_holm", float("nan")),
                   "significant_examples": r["leakage"]["significant_examples"],
                   "supported": [c for c, v in res["verdicts"][name][alpha].items()
                                 if v["verdict"] != "not shown"],
                   "min_p_holm": float(np.nanmin(ps)) if np.isfinite(ps).any() else float("nan"),
                   "family": res["tests"]["pooled"]})
  return {"attack": name, "draws": draws, "permutations": perms, "rows": rows}


def class_names(ds: Dataset) -> list[str]:
  """Fashion-MNIST's class names, else the class indices as strings."""
  if ds.name == "fashion_mnist" and ds.num_classes == 10:
    return list(FASHION)
  return [str(c) for c in range(ds.num_classes)]


def _decile_figures(res: dict, fig_dir: str, names: list[str]) -> list[str]:
  """Per alpha of the first attack: leakage by outlier decile, and the per-class effects."""
  out = []
  first = next(iter(res["attacks"]))
  for alpha, r in res["attacks"][first].items():
    pct = f"{float(alpha) * 100:g}% FPR"
    name = f"leakage_by_decile_{first}_{alpha}.png"
    plots.leakage_deciles(
        {k: v["deciles"] for k, v in r["scores"].items()}, os.path.join(fig_dir, name),
        f"{first}, {pct}: how often a target flags an example it trained on (red) and one it "
        "did not (blue), by outlier decile; mean over examples, 95% interval", NAMES)
    keys, cls = list(r["scores"]), [str(c) for c in res["classes"]]
    vals = np.array([[r["scores"][k]["per_class"][c]["rho"] for k in keys] for c in cls]
                    + [[r["scores"][k]["rho"] for k in keys]])
    sig = np.array([[r["scores"][k]["per_class"][c].get("rho_p_holm", 1) <= 0.05
                     for k in keys] for c in cls]
                   + [[r["scores"][k].get("rho_p_holm", 1) <= 0.05 for k in keys]])
    effects = f"class_effects_{first}_{alpha}.png"
    plots.class_effects(vals, sig, [names[int(c)] for c in cls] + ["pooled"], keys,
                        os.path.join(fig_dir, effects),
                        f"{first}, {pct}: Spearman rho of per-example leakage with each outlier "
                        "score, within each class (* Holm p <= 0.05)", "rho")
    out += [name, effects]
  return out


def _precision_figure(res: dict, fig_dir: str) -> str:
  panels = {f"{attack}\n{float(alpha) * 100:g}% FPR": {
      "precision": r["precision"]["per_target"], "base_rate": r["precision"]["base_rate"]}
      for attack, by_alpha in res["attacks"].items() for alpha, r in by_alpha.items()}
  plots.precision_strip(panels, os.path.join(fig_dir, "precision_vs_chance.png"),
                        "Members among the examples each target flags, against chance")
  return "precision_vs_chance.png"


def _example_figures(res, per_example, ds, feats, fig_dir, names, points, seed) -> list[str]:
  """The t-SNE map of a reference model's features (leaking examples marked) and the most
  leaking examples' images, for the first attack at its first alpha."""
  first = next(iter(res["attacks"]))
  alpha = next(iter(res["attacks"][first]))
  idx = per_example["index"]
  sig = per_example[f"{first}@{float(alpha):g}"]["p_holm"] <= 0.05
  out = []
  if points >= 2:
    pick = np.random.default_rng(seed).choice(len(idx), min(len(idx), points), replace=False)
    plots.tsne_scatter(embeddings.tsne(feats[0][idx[pick]], seed=seed), ds.pool_y[idx[pick]],
                       sig[pick], os.path.join(fig_dir, "tsne.png"),
                       f"t-SNE of a reference model's penultimate features ({len(pick)} random "
                       "pool examples; the model never saw any)",
                       marked=f"leaking ({first}, {float(alpha):.0%} FPR, Holm p <= 0.05; "
                       f"{int(sig.sum())} of {len(sig)} in the pool)", class_names=names)
    out.append("tsne.png")
  top = res["attacks"][first][alpha]["leakage"]["top_examples"][:16]
  if ds.is_image and top:
    plots.image_grid(ds.pool_x[[t["index"] for t in top]],
                     [f"{names[t['label']]}: IN {100 * t['rate_in']:.0f}% / "
                      f"OUT {100 * t['rate_out']:.0f}%" for t in top],
                     os.path.join(fig_dir, "most_leaking.png"),
                     f"The {len(top)} most leaking examples ({first}): share of targets "
                     "flagging each when IN / OUT")
    out.append("most_leaking.png")
  return out


def target_scores(data: AttackData, attack_names, known: Mapping[str, np.ndarray] | None = None
                  ) -> dict[str, np.ndarray]:
  """{attack: scores [M, N]} with every model the target; `known` scores [M, N] reused."""
  known = known or {}
  every = list(range(data.num_models))
  return {name: (np.asarray(known[name]) if name in known and len(known[name]) == len(every)
                 else attacks.run(name, data, every)) for name in attack_names}


def write_per_example(per_example: dict, outl: Mapping[str, np.ndarray], out_dir: str) -> None:
  """OUT_DIR/per_example.npz: leakage arrays per f"{attack}@{alpha}/{field}" [N'], "index"
  [N'] into the pool, and every outlier score as f"outlier/{name}" [N]."""
  np.savez_compressed(os.path.join(out_dir, "per_example.npz"),
                      **{f"{k}/{f}": v for k, e in per_example.items() if k != "index"
                         for f, v in e.items()}, index=per_example["index"],
                      **{f"outlier/{k}": v for k, v in outl.items()})


def write_report(res: dict, prefix: str, fig_ref: str) -> None:
  """PREFIX.json and PREFIX.md (its figures named under fig_ref, relative to the .md)."""
  with open(prefix + ".json", "w") as f:
    json.dump(res, f, indent=1, default=float)
  with open(prefix + ".md", "w") as f:
    f.write(leakage_report.markdown(res, fig_ref, NAMES))


def analyse(config: ml_collections.ConfigDict, ds: Dataset, model: nn.Module, data: AttackData,
            out_dir: str, include: np.ndarray, known_scores: Mapping[str, np.ndarray] | None = None,
            log: Callable[[str], None] = print, fig_dir: str | None = None) -> dict:
  """The stage (module docstring) with `config.analysis`'s settings; writes OUT_DIR.

  Args:
    config: the run's config (analysis, model, train, data, inference and seed blocks read).
    ds: the run's dataset (its pool is data's; the reference models train on its test split).
    model: the run's flax module (the reference models' architecture).
    data: the outputs the run's attacks read: logits [M, N, Q, C], labels [N], keep [M, N].
    out_dir: the folder written (created).
    include: bool [N], the examples analysed (the pool but its planted canaries).
    known_scores: {attack: scores [M, N]} already computed with every model as the target.
    log: takes progress lines.
    fig_dir: where the figures go (None: OUT_DIR/figures).

  Returns:
    The summary also written to OUT_DIR/analysis.json (leakage.study's, plus "run" and
    "figures").
  """
  t0 = time.perf_counter()
  acfg, seed = config.analysis, int(config.seed)
  alphas = tuple(float(a) for a in acfg.alphas)
  fig_dir = fig_dir or os.path.join(out_dir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  scores = target_scores(data, acfg.attacks, known_scores)
  num_refs = int(acfg.reference_models)
  outl, feats, ref_acc = outlier_scores(model, config, ds, os.path.join(out_dir, "reference"),
                                        num_refs, include, log)
  res, per_example = leakage.study(scores, data.keep, data.labels, outl, alphas, include,
                                   num_permutations=int(acfg.permutations), seed=seed)
  first = next(iter(scores))
  if int(acfg.null_draws):
    res["null_control"] = null_analysis(scores[first], data.keep, data.labels, outl, include,
                                        alphas, int(acfg.null_permutations), seed, first,
                                        int(acfg.null_draws))
  names = class_names(ds)
  res["figures"] = (_decile_figures(res, fig_dir, names) + [_precision_figure(res, fig_dir)]
                    + _example_figures(res, per_example, ds, feats, fig_dir, names,
                                       int(acfg.tsne_points), seed))
  res["run"] = {"workdir": os.path.abspath(out_dir), "dataset": ds.name,
                "pool": int(len(data.labels)), "models": int(data.num_models),
                "queries": int(data.logits.shape[2]), "canaries_excluded": int((~include).sum()),
                "reference_models": {"count": num_refs, "trained_on": "random halves of the "
                                     f"test split ({len(ds.test_y)} examples)",
                                     "pool_accuracy": np.asarray(ref_acc).tolist()},
                "permutations": int(acfg.permutations), "class_names": names,
                "seconds": time.perf_counter() - t0, "command": ""}
  write_per_example(per_example, outl, out_dir)
  write_report(res, os.path.join(out_dir, "analysis"), os.path.relpath(fig_dir, out_dir))
  log(f"analysis: {out_dir}/analysis.md in {time.perf_counter() - t0:.1f}s")
  return res


def summary(res: dict, report_path: str) -> dict:
  """What results.json keeps of the analysis: where it lies, and its verdicts per attack and
  FPR (claim -> verdict), flagged precision against the base rate with its interval."""
  out = {"report": report_path, "seconds": res["run"]["seconds"], "attacks": {}}
  for attack, by_alpha in res["attacks"].items():
    out["attacks"][attack] = {
        alpha: {"precision": r["precision"]["precision"],
                "base_rate": r["precision"]["base_rate"],
                "significant_examples": r["leakage"]["significant_examples"],
                "verdicts": {c: v["verdict"] for c, v in res["verdicts"][attack][alpha].items()}}
        for alpha, r in by_alpha.items()}
  return out
