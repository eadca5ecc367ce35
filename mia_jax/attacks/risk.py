"""Per-example privacy risk: how well one attack tells, for one example, the targets that
trained on it from those that did not.

Input: an attack's scores [T, N] on T target models (e.g. every model of a keep-matrix design
in turn the target, attacks.run(name, data, range(M))) and their keep rows [T, N]. For pool
example i the targets split into n_in that trained on it and n_out that did not; its risk is
the AUC of its IN scores against its OUT scores,

  risk_i = P(s_t,i > s_u,i) + P(s_t,i = s_u,i) / 2,   t IN, u OUT for example i,

the chance that the attack ranks a random IN target above a random OUT one on this example:
0.5 when the attack cannot tell (a target's membership of i leaves no trace in its score), 1
when every IN target outscores every OUT one. Unlike a flag rate at a threshold
(analysis.vulnerability.example_leakage: rate_in - rate_out at one FPR) it needs no threshold
and uses every target's score, so it ranks examples that never cross a low-FPR threshold too.

Interval (`confidence`, 95% by default): the targets are the unit that varies. DeLong's
variance of the Mann-Whitney statistic (the IN and OUT targets' placement values, ties one
half) as a normal interval on the logit scale, as metrics.intervals.auc_interval is for one
target's examples, computed for all examples at once from ranks; at risk 0 or 1 (perfect
separation, no variance to estimate) the Clopper-Pearson end of min(n_in, n_out) trials takes
its place. Examples with n_in = 0 or n_out = 0 get NaN. The targets share shadows and a pool,
so the interval reads this design's spread, not a population of pools. With a few dozen
targets DeLong's interval is narrow just below 1 (few pairs out of order, small placement
variance) while risk 1 gets the Clopper-Pearson end: the lower ends of the two are not
comparable, so the ranking reads the estimate, not the lower end.

Many examples of a memorising model separate perfectly (risk 1). Among them `separation`,
(mean IN score - mean OUT score) / sqrt((var IN + var OUT) / 2) over targets, orders by
margin: the ranking's tie-break.

`per_example` gives the arrays, `write` an .npz or .csv a researcher joins with their data
on `index`, and `ranked` / `markdown` the most at-risk examples with their intervals.
(analysis.vulnerability.example_leakage is the flag-rate form at one threshold.)
"""

import csv
from typing import Mapping, Optional

import numpy as np
from scipy import special
from scipy import stats as sstats

from mia_jax import stats
from mia_jax.errors import ConfigError, DataError

COLUMNS = ("index", "label", "risk", "lo", "hi", "separation", "n_in", "n_out")


def _check(scores, keep) -> tuple[np.ndarray, np.ndarray]:
  s, k = np.asarray(scores, np.float64), np.asarray(keep)
  if s.ndim != 2 or k.shape != s.shape or k.dtype != np.bool_:
    raise ConfigError(f"scores must be float [T, N] and keep bool [T, N] of the same shape, "
                      f"got {s.shape} and {k.dtype} {k.shape}")
  if not np.isfinite(s).all():
    raise DataError("scores hold NaN/inf; per-example risk needs finite scores")
  return s, k


def _placements(s: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Placement counts [T, N] from midranks down each column: for an IN entry the OUT entries
  below it (ties one half); for an OUT entry the IN entries above it (ties one half)."""
  rank_all = sstats.rankdata(s, axis=0)
  rank_in = sstats.rankdata(np.where(k, s, np.inf), axis=0)     # IN entries among the INs
  rank_out = sstats.rankdata(np.where(k, np.inf, s), axis=0)
  n_in = k.sum(axis=0)
  return rank_all - rank_in, n_in - (rank_all - rank_out)


def _column_var(values: np.ndarray, where: np.ndarray, count: np.ndarray,
                mean: np.ndarray) -> np.ndarray:
  """Sample variance (ddof 1; 0 for a single entry) of each column's selected entries."""
  sq = np.where(where, (values - mean) ** 2, 0.0).sum(axis=0)
  return sq / np.maximum(count - 1, 1)


def per_example(scores: np.ndarray, keep: np.ndarray, confidence: float = 0.95
                ) -> dict[str, np.ndarray]:
  """Each example's risk (the AUC of its IN vs OUT targets' scores) with its interval.

  Args:
    scores: float [T, N], row t an attack's scores against target t (higher = member).
    keep: bool [T, N], the targets' keep rows: keep[t, i] = target t trained on example i.
    confidence: the interval's level.

  Returns:
    {"risk", "lo", "hi", "separation": float64 [N] (NaN where n_in or n_out is 0; separation
    also where both variances are 0), "n_in", "n_out": int [N]}.

  Example:
    >>> scores = np.array([[3.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 3.0]])   # [T=4, N=2]
    >>> keep = np.array([[1, 1], [1, 0], [0, 0], [0, 1]], bool)
    >>> per_example(scores, keep)["risk"]                   # example 0 leaks, 1 does not
    array([1. , 0.5])
  """
  s, k = _check(scores, keep)
  n_in, n_out = k.sum(axis=0), (~k).sum(axis=0)
  both = (n_in > 0) & (n_out > 0)
  below, above = _placements(s, k)
  with np.errstate(invalid="ignore", divide="ignore"):
    v_in, v_out = below / n_out, above / n_in                  # placement values [T, N]
    risk = np.where(k, v_in, 0.0).sum(axis=0) / n_in
    var = (_column_var(v_in, k, n_in, risk) / n_in
           + _column_var(v_out, ~k, n_out, risk) / n_out)
  lo, hi = _interval(risk, var, np.minimum(n_in, n_out), confidence)
  nan = lambda a: np.where(both, a, np.nan)
  return {"risk": nan(risk), "lo": nan(lo), "hi": nan(hi),
          "separation": nan(_separation(s, k, n_in, n_out)), "n_in": n_in, "n_out": n_out}


def _separation(s: np.ndarray, k: np.ndarray, n_in: np.ndarray, n_out: np.ndarray
                ) -> np.ndarray:
  """(mean IN - mean OUT) / sqrt((var IN + var OUT) / 2) of each column [N] (ddof 1)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_in = np.where(k, s, 0.0).sum(axis=0) / n_in
    mean_out = np.where(k, 0.0, s).sum(axis=0) / n_out
    pooled = (_column_var(s, k, n_in, mean_in) + _column_var(s, ~k, n_out, mean_out)) / 2
    return (mean_in - mean_out) / np.sqrt(pooled)


def _interval(risk: np.ndarray, var: np.ndarray, trials: np.ndarray,
              confidence: float) -> tuple[np.ndarray, np.ndarray]:
  """The logit-scale normal interval [N]; Clopper-Pearson of `trials` at risk 0 or 1."""
  z = special.ndtri(0.5 + confidence / 2)
  inside = (risk > 0) & (risk < 1) & (var > 0)
  with np.errstate(invalid="ignore", divide="ignore"):
    centre = special.logit(risk)
    half = z * np.sqrt(var) / (risk * (1 - risk))
    lo = np.where(inside, special.expit(centre - half), risk)
    hi = np.where(inside, special.expit(centre + half), risk)
  for i in np.flatnonzero(((risk == 0) | (risk == 1)) & (trials > 0)):
    cp_lo, cp_hi = stats.clopper_pearson(round(risk[i] * trials[i]), int(trials[i]),
                                         confidence)
    lo[i], hi[i] = (cp_lo, 1.0) if risk[i] == 1 else (0.0, cp_hi)
  return lo, hi


def _table(risk: Mapping[str, np.ndarray], labels: Optional[np.ndarray],
           index: Optional[np.ndarray]) -> dict[str, np.ndarray]:
  n = len(risk["risk"])
  index = np.arange(n) if index is None else np.asarray(index)
  labels = np.full(n, -1) if labels is None else np.asarray(labels)
  if index.shape != (n,) or labels.shape != (n,):
    raise ConfigError(f"index and labels must be [N]=[{n}], got {index.shape} and "
                      f"{labels.shape}")
  return {"index": index, "label": labels, **{c: np.asarray(risk[c]) for c in COLUMNS[2:]}}


def write(path: str, risk: Mapping[str, np.ndarray], labels: Optional[np.ndarray] = None,
          index: Optional[np.ndarray] = None) -> None:
  """Writes per_example's arrays with each example's index (default 0..N-1, its row in the
  pool) and label (-1 when not given) to `path`: .npz (one array per column) or .csv (one
  row per example, columns COLUMNS)."""
  table = _table(risk, labels, index)
  if str(path).endswith(".npz"):
    np.savez(path, **table)
  elif str(path).endswith(".csv"):
    with open(path, "w", newline="") as f:
      out = csv.writer(f)
      out.writerow(COLUMNS)
      for row in zip(*(table[c] for c in COLUMNS)):
        out.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in
                      (x.item() for x in row)])
  else:
    raise ConfigError(f"risk path {path!r} must end in .npz or .csv")


def ranked(risk: Mapping[str, np.ndarray], k: int = 10, labels: Optional[np.ndarray] = None,
           index: Optional[np.ndarray] = None) -> list[dict]:
  """The k most at-risk examples: sorted by risk, then by separation (module docstring);
  each a dict of COLUMNS. NaN rows (no IN or no OUT target) come last."""
  table = _table(risk, labels, index)
  low = lambda a: np.nan_to_num(a, nan=-np.inf)
  order = np.lexsort((-low(table["separation"]), -low(table["risk"])))[:k]
  return [{c: table[c][i].item() for c in COLUMNS} for i in order]


def markdown(rows: list[dict], confidence: float = 0.95) -> str:
  """A markdown table of `ranked`'s rows."""
  pct = f"{confidence:.0%}"
  lines = [f"| rank | index | label | risk (AUC IN vs OUT) | {pct} interval over targets | "
           "separation | IN / OUT targets |", "|---:|---:|---:|---:|---|---:|---|"]
  for r, row in enumerate(rows, 1):
    lines.append(f"| {r} | {row['index']} | {row['label']} | {row['risk']:.3f} | "
                 f"[{row['lo']:.3f}, {row['hi']:.3f}] | {row['separation']:.2f} | "
                 f"{row['n_in']} / {row['n_out']} |")
  return "\n".join(lines)
