"""The claims experiments/paper_table.py checks, as dicts for
mia_jax.analysis.significance.decide (Holm over the table, verdicts).

Each claim: {"section" ("study", "post_hoc", "beyond" or "leak"), "claim", "p_for",
"p_against", "test" (estimate, interval, method, n), "detail"}; the tests and the reasons for
them are mia_jax.analysis.significance's.
"""

import numpy as np

from mia_jax.analysis.significance import compare, within
from mia_jax.errors import ConfigError

from experiments.paper_reference import DEFENSE_NAMES, NAMES

NEAR_50 = 2.0          # "removes the leak": mean AUC within this many points of 50 (the
                       # example-level sd of the mean AUC enters the test: a margin it cannot
                       # clear even with no leak at all would make the claim untestable)
UNLEARN_NEAR_50 = 3.0  # "forgotten examples look like non-members": AUC within 3 points of 50
NOT_RAISED = 0.5       # "early stopping does not raise the leak": AUC at most 0.5 points higher
AS_RETRAINING = 1.0    # "hides the forgotten as well as retraining": at most 1 point above it


def _run(e) -> bool:
  return bool(e) and e.get("status", "run") == "run"


def _f(v, d: int = 2) -> str:
  return "–" if v is None or not np.isfinite(v) else f"{v:.{d}f}"


def _ci(e: dict, key: str, d: int = 2) -> str:
  lo, hi = e.get(f"{key}_ci", (None, None))
  return f"{_f(e[key], d)} [{_f(lo, d)}, {_f(hi, d)}]"


def _capital(text: str) -> str:
  return text[0].upper() + text[1:]


class Claims:
  """Collects the table's claims; a claim whose rows have fewer than 2 units is left out."""

  def __init__(self):
    self.items = []

  def add(self, section: str, claim: str, make, detail: str):
    try:
      test = make()
    except ConfigError:           # fewer than 2 models (or mismatched units): nothing to test
      return
    self.items.append({"section": section, "claim": claim, "p_for": test.p_for,
                       "p_against": test.p_against, "test": test.to_dict(), "detail": detail})

  def leak(self, section: str, claim: str, e: dict, detail: str, row: tuple[str, str]):
    """The no-leak permutation test of e (a row of res[row[0]] named row[1])."""
    lk = e.get("leak")
    if not lk:
      return
    self.items.append({"section": section, "claim": claim, "row": list(row),
                       "p_for": lk["p"], "p_against": None,
                       "test": {"estimate": lk["auc"], "method": "permutation (AUC and "
                                "advantage, one permutation of the examples for every target, "
                                f"{lk['num_permutations']} permutations)",
                                "n": lk["num_targets"], "p_auc": lk["p_auc"],
                                "p_advantage": lk["p_advantage"]},
                       "detail": detail})

  def row_vs(self, section, e, base, key, direction, claim, margin=0.0):
    """The claim that row e's `key` is `direction` than base's, paired where they share seeds."""
    self.add(section, claim, lambda: compare(_per(e, key), _per(base, key), direction,
                                             paired=_paired(e, base), margin=margin),
             f"{key.replace('_', ' ')} {_ci(base, key)} -> {_ci(e, key)}")


def _per(e: dict, key: str) -> np.ndarray:
  return np.asarray(e[f"{key}_per_target"], np.float64)


def _paired(a: dict, b: dict) -> bool:
  return bool(a.get("shares_seeds")) and bool(b.get("shares_seeds"))


def _leak_detail(e: dict) -> str:
  lk = e["leak"]
  return (f"AUC {_ci(e, 'auc')} against no-leak {_f(lk['null_auc_mean'])} (95% of the null "
          f"below {_f(lk['null_auc_q95'])}), p {lk['p_auc']:.2g}; advantage "
          f"{_ci(e, 'advantage')} against no-leak {_f(lk['null_advantage_mean'])} (95% below "
          f"{_f(lk['null_advantage_q95'])}), p {lk['p_advantage']:.2g}")


def _study_claims(c: Claims, r: dict) -> None:
  """The study's findings on the trained rows, each against the `none` row."""
  none = r["none"]
  c.leak("study", "With no defense the model still leaks (mean AUC and advantage above "
         "their no-leak distributions)", none,
         f"test acc {_ci(none, 'test_acc')}; " + _leak_detail(none), ("rows", "none"))
  for k in ("l2_5e-4", "l2_1e-3", "regdrop_0.25", "regdrop_0.5"):
    if _run(r.get(k)):
      c.row_vs("study", r[k], none, "auc", "lower", f"{NAMES[k]} lowers AUC")
      c.row_vs("study", r[k], none, "advantage", "lower", f"{NAMES[k]} lowers the advantage")
  for k in ("l2_5e-3", "dp_sgd"):
    if _run(r.get(k)):
      e = r[k]
      c.add("study", f"{NAMES[k]} removes the leak (mean AUC within {NEAR_50:g} points of 50)",
            lambda e=e: within(_per(e, "auc"), 50.0, NEAR_50,
                               extra_se=e.get("leak", {}).get("null_auc_sd", 0.0)),
            f"AUC {_ci(e, 'auc')}")
      c.row_vs("study", e, none, "test_acc", "lower", f"{NAMES[k]} costs test accuracy")
  if _run(r.get("regdrop_0.25")) and _run(r.get("l2_5e-4")):
    c.row_vs("study", r["regdrop_0.25"], r["l2_5e-4"], "advantage", "lower",
             "Dropout on top of L2 5e-4 lowers the advantage further (RegDrop 0.25 against "
             "L2 5e-4)")
  if _run(r.get("label_smoothing")):
    c.row_vs("study", r["label_smoothing"], none, "auc", "higher", "Label smoothing raises AUC")
    c.row_vs("study", r["label_smoothing"], none, "advantage", "higher",
             "Label smoothing raises the advantage")
  if _run(r.get("early_stopping")):
    c.row_vs("study", r["early_stopping"], none, "auc", "lower",
             f"Early stopping does not raise AUC (by more than {NOT_RAISED:g} point; the study: "
             "no change on CIFAR-10, a drop on Purchase100)", margin=NOT_RAISED)


def _post_hoc_claims(c: Claims, r: dict, post_hoc: dict) -> None:
  """Logit reweighting against the raw outputs of the same models."""
  for base, e in post_hoc.items():
    b = r.get(base)
    if not _run(b):
      continue
    name = NAMES.get(base, base)
    for key, what in (("auc", "AUC"), ("advantage", "the advantage")):
      c.add("post_hoc", f"Logit reweighting on {name} lowers {what}",
            lambda key=key: compare(_per(e, key), _per(b, key), "lower", paired=True),
            f"{key} {_ci(b, key)} -> {_ci(e, key)} on the same models")
    over = np.asarray(e.get("overhead_pct_per_target", []), np.float64)
    c.add("post_hoc", f"Logit reweighting on {name} costs under 1% of inference time",
          lambda: compare(over, np.ones_like(over), "lower", paired=True),
          f"{_ci(e, 'overhead_pct')}% of each model's own inference "
          f"({_f(e.get('reweight_us_per_output'))} µs per output); the difference is from 1%")
    la, lb = e.get("lira_aware"), b.get("lira")
    if la and lb:
      c.add("post_hoc", f"Logit reweighting on {name} lowers LiRA's TPR at 0.1% FPR, for an "
            "attacker who reweights the shadows the same way (not tested by the study)",
            lambda: compare(_per(la, "tpr_at_0.1%"), _per(lb, "tpr_at_0.1%"), "lower",
                            paired=True, method="sign_flip"),
            f"TPR@0.1%FPR {_ci(lb, 'tpr_at_0.1%')} -> {_ci(la, 'tpr_at_0.1%')} on the same "
            f"{lb['num_models']} LiRA targets")
      c.add("post_hoc", f"Logit reweighting on {name} lowers LiRA's AUC, for the same attacker",
            lambda: compare(_per(la, "auc"), _per(lb, "auc"), "lower", paired=True),
            f"AUC {_ci(lb, 'auc')} -> {_ci(la, 'auc')}")


def _beyond_claims(c: Claims, none: dict, defenses: dict) -> None:
  """The defenses beyond the study (experiments/paper_defenses.py) against `none`."""
  for k in ("curriculum", "augmentation", "ensemble", "ensemble_bagging"):
    e = defenses.get(k)
    if not _run(e):
      continue
    c.row_vs("beyond", e, none, "auc", "lower",
             f"{_capital(DEFENSE_NAMES[k])} lowers the loss-threshold AUC")
    la, lu = e.get("lira"), e.get("lira_unaware")
    if la and lu:
      c.add("beyond", f"{_capital(DEFENSE_NAMES[k])}: the adaptive LiRA attacker reaches a "
            "higher TPR at 0.1% FPR than the unaware one",
            lambda la=la, lu=lu: compare(_per(la, "tpr_at_0.1%"), _per(lu, "tpr_at_0.1%"),
                                         "higher", paired=True, method="sign_flip"),
            f"TPR@0.1%FPR adaptive {_ci(la, 'tpr_at_0.1%')} vs unaware "
            f"{_ci(lu, 'tpr_at_0.1%')}; AUC {_ci(la, 'auc', 1)} vs {_ci(lu, 'auc', 1)}")


def _unlearning_claims(c: Claims, methods: dict) -> None:
  """Exact unlearning hides the forgotten; approximate unlearning as well as retraining."""
  for k, label in (("retrain", "retraining from scratch"), ("sisa", "SISA")):
    if k in methods:
      c.add("beyond", f"After exact unlearning ({label}) the forgotten examples look like "
            f"non-members (loss-threshold AUC within {UNLEARN_NEAR_50:g} points of 50)",
            lambda k=k: within(_per(methods[k], "auc_forgotten"), 50.0, UNLEARN_NEAR_50),
            f"AUC forgotten vs unseen {_ci(methods[k], 'auc_forgotten')}; before unlearning "
            f"{_ci(methods['none'], 'auc_forgotten')}")
  for k, label in (("finetune", "Fine-tuning on the retained data"),
                   ("gradient_ascent", "Gradient ascent on the forgotten")):
    if k in methods and "retrain" in methods:
      c.add("beyond", f"{label} hides the forgotten examples as well as retraining (AUC at "
            f"most {AS_RETRAINING:g} point above retraining's)",
            lambda k=k: compare(_per(methods[k], "auc_forgotten"),
                                _per(methods["retrain"], "auc_forgotten"),
                                "lower", paired=True, margin=AS_RETRAINING),
            f"AUC forgotten vs unseen {_ci(methods[k], 'auc_forgotten')} vs retraining "
            f"{_ci(methods['retrain'], 'auc_forgotten')}")


def _leak_claims(c: Claims, r: dict, post_hoc: dict, defenses: dict) -> None:
  """"Still leaks" for every defended row, post-hoc entry and defense beyond the study."""
  for k, e in r.items():
    if k != "none" and _run(e):
      c.leak("leak", f"{NAMES.get(k, k)} still leaks", e, _leak_detail(e), ("rows", k))
  for base, e in post_hoc.items():
    c.leak("leak", f"Logit reweighting on {NAMES.get(base, base)} still leaks", e,
           _leak_detail(e), ("post_hoc", base))
  for k, e in defenses.items():
    if _run(e) and "leak" in e:
      c.leak("leak", f"{_capital(DEFENSE_NAMES.get(k, k))} still leaks", e, _leak_detail(e),
             ("defenses", k))


def table_claims(res: dict) -> list[dict]:
  """Every claim experiments/paper_table.py checks, as dicts for `decide`.

  res: paper_table.run's results (rows, post_hoc, defenses) with per-target values.
  """
  rows, post_hoc = res.get("rows", {}), res.get("post_hoc", {})
  defenses = res.get("defenses") or {}
  c = Claims()
  if _run(rows.get("none")):
    _study_claims(c, rows)
  _post_hoc_claims(c, rows, post_hoc)
  if _run(rows.get("none")):
    _beyond_claims(c, rows["none"], defenses)
  if _run(defenses.get("unlearning")):
    _unlearning_claims(c, defenses["unlearning"]["methods"])
  _leak_claims(c, rows, post_hoc, defenses)
  return c.items
