"""Tests of claims over models and examples, and their verdicts under Holm (the claims of
experiments/paper_table.py live beside it, in experiments/paper_claims.py).

The unit that varies is the target model, i.e. its training seed. The table trains M models per
row on one fixed split (members = the train split, non-members = the test split, as the study
does), so every test here asks what holds for models trained on this split, over the seed; the
"still leaks" test is the one that asks about the examples (which of them are members).

Decisions, and why:
- Rows compared by AUC, advantage or accuracy: a paired t test over the M models where the two
  rows share seeds for initialisation and data order (model m of each; a post-hoc defense is
  the same models, raw against defended outputs), else Welch's unpaired t test. Not the exact
  sign-flip test of mia_jax.stats: over n units it cannot go below p = 2 / 2**n, and Holm over
  the table's K claims asks its smallest p to be at most 0.05 / K; with n = 10 models that floor
  (0.002) is above 0.05 / K for any K > 25, so no claim could hold however large its effect.
  Each model's AUC, advantage and accuracy averages over thousands of examples, so its
  seed-to-seed variation is close to normal, which is what the t test needs
  (tests/test_significance.py checks its size on such data).
- LiRA's TPR at 0.1% FPR: the exact sign-flip over LiRA's targets (the same target models
  under two attackers, or raw against defended outputs). That TPR rests on a handful of
  non-members per target and is far from normal; 16 targets give a floor of 2 / 65536.
- "Still leaks": a permutation null of the mean AUC and the mean advantage over the targets.
  One permutation of the examples relabels every target at once (target t's labels become
  keep[t][perm]): the targets share their members and their scores are correlated through the
  examples, so permuting each target on its own would make the null of the mean too narrow and
  the test too eager (tests/test_significance.py shows both). For one target the null of the
  AUC is the Mann-Whitney one. The claim holds when both statistics exceed their nulls (an
  intersection-union test: p = the larger of the two p-values).
- "Within m points of c" (equivalence): two one-sided t tests (TOST) over the models.
- Every claim carries p_for (a one-sided p-value, small when the data support the claim) and
  p_against (the same for its opposite, None where a claim has no opposite, as "leaks"). Its
  p-value in the family is min(1, 2 min(p_for, p_against)) (a two-sided test), or p_for alone.
  Holm over every claim of the table; an adjusted p <= 0.05 gives "holds", or "fails" when it
  is the opposite that the data support; anything else is "not shown".

  sign_flip(d, alternative)                 exact one-sided sign-flip p of mean(d) > 0 or < 0
  t_p(d, alternative) / welch_p(a, b, alt)   one-sided t p-values (paired / one-sample, Welch)
  compare(a, b, direction, paired, ...)      the claim "a is lower (higher) than b"
  within(values, center, margin)             the claim "|mean - center| < margin"
  leak_test(scores, keep)                    the permutation null of "still leaks"
  decide(claims)                             Holm over the claims, and their verdicts
"""

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np
from scipy import stats as sps

from mia_jax import stats
from mia_jax.errors import ConfigError

LEVEL = 0.05
_EXACT_FLIPS = 16              # up to this many units the sign-flip enumerates all 2**n signs
_TOL = 1e-12


@dataclasses.dataclass(frozen=True, kw_only=True)
class Test:
  """One claim's test: the estimate (a mean, or a difference of means) with its 95% interval,
  one-sided p-values for the claim and for its opposite, the method and the units."""
  estimate: float
  interval: tuple[float, float]
  p_for: float
  p_against: float | None
  method: str
  n: int

  def to_dict(self) -> dict:
    return {"estimate": self.estimate, "interval": list(self.interval), "p_for": self.p_for,
            "p_against": self.p_against, "method": self.method, "n": self.n}


def _vector(v, name: str, min_size: int = 2) -> np.ndarray:
  v = np.asarray(v, np.float64)
  if v.ndim != 1 or v.size < min_size or not np.isfinite(v).all():
    raise ConfigError(f"{name} must be a 1-D list of at least {min_size} finite values, got "
                      f"shape {v.shape}; train more models per row (membership.num_models)")
  return v


def sign_flip(d, alternative: str, *, num: int = 20000, seed: int = 0) -> float:
  """One-sided p-value of mean(d) > 0 ("greater") or < 0 ("less"), d [n], by flipping signs.

  P(S >= s) (or <=) for S = sum(eps * d) over all 2**n sign vectors eps when n <= 16 (exact;
  the observed signs are among them), else over `num` random ones plus the observed. Twice the
  smaller of the two one-sided values is stats.paired_test's two-sided p.
  """
  d = _vector(d, "sign_flip's differences", 1)
  if alternative not in ("greater", "less"):
    raise ConfigError(f"alternative {alternative!r} must be 'greater' or 'less'")
  if alternative == "less":
    d = -d
  n, observed = d.size, float(d.sum())
  if n <= _EXACT_FLIPS:
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
  else:
    signs = np.random.default_rng(seed).choice((-1, 1), size=(num, n))
  sums = signs @ d
  extreme = int(np.sum(sums >= observed - _TOL * max(abs(observed), 1.0)))
  if n <= _EXACT_FLIPS:
    return extreme / signs.shape[0]
  return (extreme + 1) / (num + 1)


def t_p(d, alternative: str) -> float:
  """One-sided one-sample t p-value of mean(d) > 0 ("greater") or < 0 ("less"), d [n >= 2].

  With no spread (every d equal) the sign decides: p = 0 on its side, 1 on the other, 1 at 0.
  """
  d = _vector(d, "the t test's values")
  if alternative not in ("greater", "less"):
    raise ConfigError(f"alternative {alternative!r} must be 'greater' or 'less'")
  if np.all(d == d[0]):
    side = 1 if d[0] > 0 else (-1 if d[0] < 0 else 0)
    return 0.0 if side == (1 if alternative == "greater" else -1) else 1.0
  t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
  return float(sps.t.sf(t, d.size - 1) if alternative == "greater" else sps.t.cdf(t, d.size - 1))


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
  """(mean(a) - mean(b), its standard error, Welch-Satterthwaite degrees of freedom)."""
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  se = math.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se > 0 else np.inf
  return float(a.mean() - b.mean()), se, float(df)


def welch_p(a, b, alternative: str) -> float:
  """One-sided Welch t p-value of mean(a) - mean(b) > 0 ("greater") or < 0 ("less")."""
  a, b = _vector(a, "Welch's first group"), _vector(b, "Welch's second group")
  diff, se, df = _welch(a, b)
  if se == 0:
    return t_p(np.array([diff, diff]), alternative)
  t = diff / se
  return float(sps.t.sf(t, df) if alternative == "greater" else sps.t.cdf(t, df))


def _t_interval_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  diff, se, df = _welch(a, b)
  if se == 0:
    return diff, diff
  half = float(sps.t.ppf(0.975, df)) * se
  return diff - half, diff + half


def compare(a, b, direction: str, *, paired: bool, method: str = "t", margin: float = 0.0
            ) -> Test:
  """The claim "a is lower (higher) than b", or "... than b + margin".

  a, b: one value per unit [n] (paired: the same units, in order) or per group's units.
  direction: "lower" (claim: mean(a - b) < margin) or "higher" (claim: mean(a - b) > margin).
  method: "t" (paired t, or Welch's t when unpaired) or "sign_flip" (exact, paired only).
  Returns the difference mean(a) - mean(b) with its 95% interval (t over the paired
  differences, or Welch's) and the one-sided p-values of the claim and of its opposite.
  """
  if direction not in ("lower", "higher"):
    raise ConfigError(f"direction {direction!r} must be 'lower' or 'higher'")
  a, b = _vector(a, "the first row's values"), _vector(b, "the second row's values")
  claim, opposite = ("less", "greater") if direction == "lower" else ("greater", "less")
  if paired:
    if a.shape != b.shape:
      raise ConfigError(f"a paired comparison needs one value per unit in both rows, got "
                        f"{a.size} and {b.size}; compare them unpaired")
    d = a - b
    lo, hi = stats.t_interval(d)
    est = float(d.mean())
    if method == "t":
      p_for, p_against = t_p(d - margin, claim), t_p(d - margin, opposite)
    elif method == "sign_flip":
      p_for, p_against = sign_flip(d - margin, claim), sign_flip(d - margin, opposite)
    else:
      raise ConfigError(f"unknown method {method!r}; choose 't' or 'sign_flip'")
    name = f"paired {'t' if method == 't' else 'sign-flip'}"
  else:
    if method != "t":
      raise ConfigError("an unpaired comparison uses Welch's t test; set method='t'")
    est = float(a.mean() - b.mean())
    lo, hi = _t_interval_diff(a, b)
    p_for, p_against = welch_p(a - margin, b, claim), welch_p(a - margin, b, opposite)
    name = "Welch t"
  if margin:
    name += f", margin {margin:g}"
  return Test(estimate=est, interval=(float(lo), float(hi)), p_for=p_for, p_against=p_against,
              method=name, n=int(a.size))


def within(values, center: float, margin: float, extra_se: float = 0.0) -> Test:
  """The claim "|mean(values) - center| < margin" (equivalence) by two one-sided t tests.

  values [n]: one per unit. extra_se: a standard error the units' spread does not hold, added
  in quadrature to s / sqrt(n) (Satterthwaite's degrees of freedom, extra_se as known). The
  table passes the example-level one: its models share one split, so their spread leaves out
  which examples happen to be members, and "50" is not a row on the same split (the
  permutation null's sd of the mean AUC is that spread where there is no leak).
  p_for = the larger of the TOST's two p-values; p_against = twice the smaller p-value of
  "the mean lies above center + margin" and "below center - margin" (Bonferroni over the two
  sides). The interval is the 95% interval of the mean with the same standard error.
  """
  v = _vector(values, "the equivalence test's values")
  if margin <= 0 or extra_se < 0:
    raise ConfigError(f"equivalence margin {margin} must be positive and extra_se {extra_se} "
                      "non-negative")
  var_units = v.var(ddof=1) / v.size
  se = math.sqrt(var_units + extra_se ** 2)
  mean = float(v.mean())
  if se == 0:
    p = lambda x, alt: t_p(np.array([x, x]), alt)  # noqa: E731
    lo = hi = mean
  else:
    df = (v.size - 1) * (se ** 2 / var_units) ** 2 if var_units > 0 else np.inf
    p = lambda x, alt: float(sps.t.sf(x / se, df) if alt == "greater"  # noqa: E731
                             else sps.t.cdf(x / se, df))
    half = float(sps.t.ppf(0.975, df)) * se
    lo, hi = mean - half, mean + half
  p_for = max(p(mean - (center - margin), "greater"), p(mean - (center + margin), "less"))
  p_against = min(1.0, 2 * min(p(mean - (center + margin), "greater"),
                               p(mean - (center - margin), "less")))
  name = f"TOST (t), margin {margin:g}" + (f", example-level se {extra_se:.2g}" if extra_se
                                           else "")
  return Test(estimate=mean, interval=(lo, hi), p_for=p_for, p_against=p_against,
              method=name, n=int(v.size))


def _target_tables(scores: np.ndarray):
  """Per target: ascending average ranks [N], descending order [N], tie-group ends [G]."""
  out = []
  for s in scores:
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    new = np.r_[False, ss[1:] != ss[:-1]]
    out.append((sps.rankdata(s), order, np.r_[np.nonzero(new[1:])[0], s.size - 1]))
  return out


def _auc_adv(labels: np.ndarray, ranks, order, ends) -> tuple[np.ndarray, np.ndarray]:
  """AUC and max(TPR - FPR) [B] of one target's scores under member labels [B, N] (bool).

  AUC = (sum of members' average ranks - n1 (n1 + 1) / 2) / (n1 n0): the Mann-Whitney
  statistic with ties as one half, which is metrics.auc of metrics.roc_curve. The advantage is
  metrics.advantage's: over the ROC's points (one per distinct score) and (0, 0).
  """
  n1 = labels[0].sum()
  n0 = labels.shape[1] - n1
  auc = (labels.astype(np.float64) @ ranks - n1 * (n1 + 1) / 2) / (n1 * n0)
  tps = np.cumsum(labels[:, order], axis=1, dtype=np.int64)[:, ends]
  fps = ends[None] + 1 - tps
  adv = np.maximum((tps / n1 - fps / n0).max(axis=1), 0.0)
  return auc, adv


def leak_test(scores, keep, *, num_permutations: int = 4999, seed: int = 0,
              chunk: int = 128) -> dict:
  """The no-leak null of the mean AUC and mean advantage over targets, by permutation.

  Args:
    scores: float [T, N], target t's member-ness scores (higher = member).
    keep: bool [T, N], target t's members (each row needs a member and a non-member).
    num_permutations: B random permutations of the N examples; each relabels every target at
      once (labels keep[t][perm]), which keeps the targets' shared examples together.
    seed: the permutations' seed.
    chunk: permutations evaluated at once (memory: chunk x N per target).

  Returns:
    {"auc", "advantage"}: observed means over targets (fractions); "null_auc_mean",
    "null_auc_sd", "null_auc_q95", "null_advantage_mean", "null_advantage_q95": the null's
    moments; "p_auc", "p_advantage" = (1 + #{null >= observed}) / (B + 1) (one-sided: a leak
    raises both); "p" = max of the two (both must exceed their null); "num_permutations",
    "num_targets".
  """
  scores = np.asarray(scores, np.float64)
  keep = np.asarray(keep, bool)
  _check_leak_inputs(scores, keep, num_permutations)
  mean_stats = functools.partial(_mean_stats, keep, _target_tables(scores),
                                 bool((keep == keep[0]).all()))
  n = keep.shape[1]
  obs_auc, obs_adv = (float(x[0]) for x in mean_stats(np.arange(n)[None]))
  rng = np.random.default_rng(seed)
  null_auc, null_adv = [], []
  for start in range(0, num_permutations, chunk):
    b = min(chunk, num_permutations - start)
    perm = np.tile(np.arange(n), (b, 1))
    rng.permuted(perm, axis=1, out=perm)
    a, v = mean_stats(perm)
    null_auc.append(a)
    null_adv.append(v)
  null_auc, null_adv = np.concatenate(null_auc), np.concatenate(null_adv)
  p_auc = (1 + np.sum(null_auc >= obs_auc - _TOL)) / (num_permutations + 1)
  p_adv = (1 + np.sum(null_adv >= obs_adv - _TOL)) / (num_permutations + 1)
  return {"auc": obs_auc, "advantage": obs_adv,
          "null_auc_mean": float(null_auc.mean()), "null_auc_sd": float(null_auc.std(ddof=1))
          if num_permutations > 1 else float("nan"),
          "null_auc_q95": float(np.quantile(null_auc, 0.95)),
          "null_advantage_mean": float(null_adv.mean()),
          "null_advantage_q95": float(np.quantile(null_adv, 0.95)),
          "p_auc": float(p_auc), "p_advantage": float(p_adv), "p": float(max(p_auc, p_adv)),
          "num_permutations": int(num_permutations), "num_targets": int(keep.shape[0])}


def _check_leak_inputs(scores: np.ndarray, keep: np.ndarray, num_permutations: int) -> None:
  if scores.ndim != 2 or keep.shape != scores.shape:
    raise ConfigError(f"leak_test needs scores and keep of one shape [T, N], got {scores.shape} "
                      f"and {keep.shape}")
  n1 = keep.sum(1)
  if (n1 == 0).any() or (n1 == keep.shape[1]).any() or not np.isfinite(scores).all():
    raise ConfigError("leak_test needs finite scores and, per target, a member and a non-member")
  if num_permutations < 1:
    raise ConfigError(f"num_permutations={num_permutations} must be >= 1")


def _mean_stats(keep: np.ndarray, tables, shared: bool, perm: np.ndarray):
  """Mean AUC and mean advantage [b] over the targets under the permutations perm [b, N] of
  their member labels (one label row for all where every target has the same keep)."""
  auc = np.zeros(perm.shape[0])
  adv = np.zeros(perm.shape[0])
  labels = keep[0][perm] if shared else None
  for t, tab in enumerate(tables):
    a, v = _auc_adv(labels if shared else keep[t][perm], *tab)
    auc += a
    adv += v
  return auc / len(tables), adv / len(tables)


def family_p(p_for: float, p_against: float | None) -> float:
  """A claim's p-value in the family: two-sided when it has an opposite, else p_for."""
  if p_against is None:
    return float(p_for)
  return float(min(1.0, 2 * min(p_for, p_against)))


def decide(claims: Sequence[dict], level: float = LEVEL) -> list[dict]:
  """Holm over the family of claims; returns copies with "p", "p_holm" and "verdict".

  claims: dicts with at least "p_for" and "p_against" (None: the claim has no opposite).
  verdict: "holds" where p_holm <= level and p_for is the smaller side; "fails" where
  p_holm <= level and the opposite is; "not shown" otherwise.
  """
  if not claims:
    return []
  p = np.array([family_p(c["p_for"], c.get("p_against")) for c in claims])
  adjusted = stats.holm(p)
  out = []
  for c, pi, adj in zip(claims, p, adjusted):
    against = c.get("p_against")
    if adj > level:
      verdict = "not shown"
    elif against is None or c["p_for"] <= against:
      verdict = "holds"
    else:
      verdict = "fails"
    out.append({**c, "p": float(pi), "p_holm": float(adj), "verdict": verdict})
  return out
