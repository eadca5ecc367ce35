"""LiRA (Carlini et al., S&P 2022) on the scaled logit phi, online and offline.

For target model t and pool example i, the shadows are the other models that references.py
picks for i: IN shadows trained on i, OUT shadows did not, in counts that do not depend on
the target's membership (for the full set, count truncation in exact designs; for K
references, K // 2 of each drawn per example). Per example and query, as the reference code:
mu = median of phi over the shadows, sigma = np.std (ddof 0) over the shadows, plus 1e-30 in
every Gaussian.

  lira_online             mean_q [log N(phi_t; mu_in, s_in) - log N(phi_t; mu_out, s_out)]
  lira_online_fixed_var   the same with one global s_in and one global s_out
  lira_offline            mean_q log Pr[Z <= phi_t], Z ~ N(mu_out, s_out^2)  (paper's 1-sided test)
  lira_offline_fixed_var  the same with the global s_out
  lira_offline_logpdf     mean_q -log N(phi_t; mu_out, s_out)  (the reference code's offline)

Global sigmas (fixed variance), a departure from the reference code on purpose. By default
(sigma="residual") s_in is the np.std of the residuals phi - mu_in over every (example, query,
IN shadow), s_out likewise over the OUT shadows: the typical spread of a shadow around ITS
example's median, which is what the per-example Gaussians use. The reference code
(tensorflow/privacy research/mi_lira_2021/plot.py, fix_variance=True) instead takes
std_in = np.std(dat_in) over every (example, shadow, query) value around the grand mean, so
its sigma also holds the spread of the medians between examples (easy and hard examples),
and it sets std_out = np.std(dat_in). sigma="total" gives the reference's form, np.std of
the group's phi values themselves, with s_out from the OUT values (the std_out bug is not
copied).

Examples without IN (or OUT) shadows: that example's missing mu is borrowed from the other
group plus the typical shift, mu_in = mu_out + median_i(mu_in - mu_out) over examples having
both (per query), and its sigma is the median sigma of that group. Unlike the reference code,
which truncates every example to the smallest shadow count, all shadows are used outside exact
designs.

Speed: with every other model as references, phi is sorted over the models once per data (IN
and OUT separately, other entries +inf); a target's leave-one-out median is read from those
sorted rows by index arithmetic (the target and the surplus shadow left out) and its std from
running sums, so each extra target costs O(N Q M) without a sort. Drawn references (K per
example) gather their K // 2 values per group and sort those, O(N Q K log K) per target.
"""

from typing import Sequence

import numpy as np
from scipy import special

from mia_jax.attacks import references
from mia_jax.attacks.base import AttackData, check_targets
from mia_jax.errors import ConfigError

_EPS = 1e-30
_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
SIGMAS = ("residual", "total")


def _group_table(values: np.ndarray, mask: np.ndarray) -> dict:
  """Sorted rows and centred sums of values [W, N, Q] over the rows w where mask [W, N]."""
  width = values.shape[0]
  k = mask.sum(axis=0)  # [N]
  masked = np.where(mask[:, :, None], values, np.inf)
  rows = np.ascontiguousarray(np.moveaxis(masked, 0, -1))  # [N, Q, W]
  del masked
  rows.sort(axis=-1)
  total = np.zeros(values.shape[1:], np.float64)
  for w in range(width):
    total += np.where(mask[w][:, None], values[w], 0.0)
  center = total / np.maximum(k, 1)[:, None]  # [N, Q], keeps the sums well conditioned
  s1 = np.zeros_like(center)
  s2 = np.zeros_like(center)
  for w in range(width):
    d = np.where(mask[w][:, None], values[w] - center, 0.0)
    s1 += d
    s2 += d * d
  return {"rows": rows, "k": k, "center": center, "s1": s1, "s2": s2}


def _tables(data: AttackData) -> dict:
  def compute():
    phi = data.signal("scaled_logit")
    keep = np.asarray(data.keep)
    return {"phi": phi, "in": _group_table(phi, keep), "out": _group_table(phi, ~keep)}
  return data.cached(("lira", "tables"), compute)


@np.errstate(invalid="ignore")
def _leave_out(table: dict, v: np.ndarray, drop: np.ndarray, v2: np.ndarray, drop2: np.ndarray
               ) -> dict:
  """Per-example stats of one group without up to two of its entries per example.

  Args:
    table: from _group_table.
    v, drop: float [N, Q] and bool [N]: the target's phi, and whether the target is in this
      group for the example (then it is left out).
    v2, drop2: the same for a second entry to leave out (a surplus shadow; see
      references.py), a different model of the group.

  Returns:
    {"k": int [N], "mu", "sigma": float64 [N, Q], "r1", "r2": float64 scalars (sum of
    residuals phi - mu and of their squares over all kept entries), "t1", "t2" (sum of the
    kept phi and of their squares), "count": total entries}.
  """
  rows = table["rows"]
  width = rows.shape[-1]
  k = table["k"] - drop - drop2  # [N]
  kq = np.broadcast_to(k[:, None], v.shape)
  if width == 0:  # no entry at all
    nan = np.full(v.shape, np.nan)
    return {"k": k, "mu": nan, "sigma": np.zeros(v.shape), "r1": 0.0, "r2": 0.0, "t1": 0.0,
            "t2": 0.0, "count": 0}
  # where each left-out entry sits in its sorted row (width: none); equal values: the second
  # takes the next slot of the run, which holds the same value
  p1 = np.where(drop[:, None], np.sum(rows < v[..., None], axis=-1), width)
  p2 = np.where(drop2[:, None], np.sum(rows < v2[..., None], axis=-1), width)
  p2 = np.where((p2 == p1) & (p1 < width), p2 + 1, p2)
  a, b = np.minimum(p1, p2), np.maximum(p1, p2)
  lo = np.maximum((kq - 1) // 2, 0)
  hi = kq // 2
  skip = lambda j: (lambda j1: j1 + (j1 >= b))(j + (j >= a))  # reduced -> original index
  lo = np.minimum(skip(lo), width - 1)
  hi = np.minimum(skip(hi), width - 1)
  pick = lambda j: np.take_along_axis(rows, j[..., None], axis=-1)[..., 0].astype(np.float64)
  mu = 0.5 * (pick(lo) + pick(hi))
  center = table["center"]
  d = np.where(drop[:, None], v - center, 0.0)
  d2 = np.where(drop2[:, None], v2 - center, 0.0)
  s1, s2 = table["s1"] - d - d2, table["s2"] - d * d - d2 * d2
  kf = np.maximum(kq, 1).astype(np.float64)
  var = np.maximum(s2 / kf - (s1 / kf) ** 2, 0.0)
  var = np.where(kq > 1, var, 0.0)
  e = mu - center
  valid = kq > 0
  r1 = np.sum(np.where(valid, s1 - kq * e, 0.0))
  r2 = np.sum(np.where(valid, s2 - 2.0 * e * s1 + kq * e * e, 0.0))
  t1 = np.sum(np.where(valid, s1 + kq * center, 0.0))
  t2 = np.sum(np.where(valid, s2 + 2.0 * center * s1 + kq * center * center, 0.0))
  mu = np.where(valid, mu, np.nan)
  return {"k": k, "mu": mu, "sigma": np.sqrt(var), "r1": r1, "r2": r2, "t1": t1, "t2": t2,
          "count": int(kq.sum())}


def _all_models_stats(data: AttackData, target: int, refs: references.References
                      ) -> tuple[dict, dict]:
  """Every other model as references: the sorted tables, the target and surplus left out."""
  tables = _tables(data)
  phi = tables["phi"]
  v = phi[target]
  keep_t = np.asarray(data.keep[target])
  rows = np.arange(phi.shape[1])
  out = []
  for name, member, j in (("in", keep_t, refs.dropped_in), ("out", ~keep_t, refs.dropped_out)):
    v2 = phi[np.maximum(j, 0), rows]
    out.append(_leave_out(tables[name], v, member, v2, j >= 0))
  return out[0], out[1]


def _drawn_stats(data: AttackData, target: int, refs: references.References
                 ) -> tuple[dict, dict]:
  """References drawn per example: each group's values gathered ([W, N, Q]) and sorted."""
  phi = data.signal("scaled_logit")
  v = phi[target]
  none = np.zeros(phi.shape[1], bool)
  out = []
  for inside in (True, False):
    idx, valid = refs.models(inside)
    values = phi[idx, np.arange(phi.shape[1])[None, :]]  # [W, N, Q]
    out.append(_leave_out(_group_table(values, valid), v, none, v, none))
  return out[0], out[1]


def _global_sigmas(stats: dict) -> tuple[float, float]:
  """(residual, total) global sigma of one group (the module docstring's two forms)."""
  n = max(stats["count"], 1)
  std = lambda s1, s2: float(np.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0)))
  return std(stats["r1"], stats["r2"]), std(stats["t1"], stats["t2"])


def _fill_missing(a: dict, b: dict) -> None:
  """Fills a's examples without shadows from b's: mu_a = mu_b + shift, sigma = median."""
  missing = a["k"] == 0
  if not missing.any() or missing.all():  # all missing: _need raises where it matters
    return
  both = ~missing & (b["k"] > 0)
  if both.any():
    shift = np.median(a["mu"][both] - b["mu"][both], axis=0)  # [Q]
  else:
    shift = np.median(a["mu"][~missing], axis=0) - np.median(b["mu"][b["k"] > 0], axis=0)
  a["mu"] = np.where(missing[:, None], b["mu"] + shift, a["mu"])
  a["sigma"] = np.where(missing[:, None], np.median(a["sigma"][~missing], axis=0), a["sigma"])


def shadow_stats(data: AttackData, target: int) -> tuple[np.ndarray, dict, dict]:
  """The target's phi [N, Q] and its IN and OUT shadow stats, cached per target.

  The shadows are references.for_target(data, target). Each stats dict holds "mu" and
  "sigma" [N, Q] (in phi's dtype, so the cache costs 4 * N * Q floats per target), "k" [N]
  (shadows per example), and the fixed-variance sigmas "global_sigma" (residual form) and
  "total_sigma" (the reference code's form). Examples without shadows in a group are filled
  as the module docstring says; if no example has any, that group's mu is NaN and the
  attacks needing it raise ConfigError.
  """
  def compute():
    refs = references.for_target(data, target)
    stats = _drawn_stats if refs.drawn else _all_models_stats
    st_in, st_out = stats(data, target, refs)
    _fill_missing(st_out, st_in)
    _fill_missing(st_in, st_out)
    v = data.signal("scaled_logit")[target]
    def compact(st):
      residual, total = _global_sigmas(st)
      return {"mu": st["mu"].astype(v.dtype), "sigma": st["sigma"].astype(v.dtype),
              "k": st["k"], "global_sigma": residual, "total_sigma": total}
    return v, compact(st_in), compact(st_out)
  return data.cached(("lira", "stats", int(target)), compute)


def _logpdf(x, mu, sigma):
  sigma = sigma + _EPS
  return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - _HALF_LOG_2PI


def _per_target(data, targets, fn) -> np.ndarray:
  """Stacks fn(phi_t, stats_in, stats_out) [N] over targets, all in float64: [T, N]."""
  targets = check_targets(data, targets)
  f64 = lambda st: {k: (x if k == "k" else np.asarray(x, np.float64)) for k, x in st.items()}
  rows = []
  for t in targets:
    v, st_in, st_out = shadow_stats(data, t)
    rows.append(fn(v.astype(np.float64), f64(st_in), f64(st_out)))
  return np.stack(rows)


def _need(st: dict, name: str) -> None:
  if np.isnan(st["mu"]).any():
    raise ConfigError(f"no example has an {name} shadow model for this target; the "
                      f"{'offline' if name == 'OUT' else 'online'} attack needs some")


def _check_sigma(sigma: str) -> str:
  if sigma not in SIGMAS:
    raise ConfigError(f"LiRA fixed-variance sigma={sigma!r}: choose one of {SIGMAS} "
                      "('total' is the reference code's np.std of all shadow values)")
  return "global_sigma" if sigma == "residual" else "total_sigma"


def _sigma(st: dict, other: dict, fixed: bool, key: str = "global_sigma") -> np.ndarray:
  """Per-example sigma [N, Q], or the group's global sigma where it cannot be estimated.

  A std over fewer than 2 shadows is 0, which would make the Gaussian a spike and the score
  meaningless (with 4 models, every member of a target has a single IN shadow); such examples
  take the group's global (residual) sigma, and a group whose global sigma is 0 too takes the
  other group's. fixed: every example takes the global sigma named by key.
  """
  glob = st[key] if st[key] > 0 else other[key]
  if fixed:
    return np.asarray(glob)
  k = np.asarray(st["k"])[:, None]
  return np.where(k >= 2, st["sigma"], glob)


def _online(v, st_in, st_out, fixed, key="global_sigma"):
  _need(st_in, "IN")
  _need(st_out, "OUT")
  s_in = _sigma(st_in, st_out, fixed, key)
  s_out = _sigma(st_out, st_in, fixed, key)
  return np.mean(_logpdf(v, st_in["mu"], s_in) - _logpdf(v, st_out["mu"], s_out), axis=-1)


def _offline(v, st_out, fixed, key="global_sigma"):
  _need(st_out, "OUT")
  s_out = _sigma(st_out, st_out, fixed, key) + _EPS
  return np.mean(special.log_ndtr((v - st_out["mu"]) / s_out), axis=-1)


def lira_online(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Online LiRA with per-example variances; scores [T, N]."""
  return _per_target(data, targets, lambda v, i, o: _online(v, i, o, fixed=False))


def lira_online_fixed_var(data: AttackData, targets: Sequence[int],
                          sigma: str = "residual") -> np.ndarray:
  """Online LiRA with one global sigma per group (IN, OUT); scores [T, N].

  sigma: "residual" (std of residuals around each example's median) or "total" (the
  reference code's np.std of all the group's shadow values); see the module docstring.
  """
  key = _check_sigma(sigma)
  return _per_target(data, targets, lambda v, i, o: _online(v, i, o, fixed=True, key=key))


def lira_offline(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Offline LiRA, the paper's one-sided test log Pr[Z <= phi_t]; scores [T, N]."""
  return _per_target(data, targets, lambda v, i, o: _offline(v, o, fixed=False))


def lira_offline_fixed_var(data: AttackData, targets: Sequence[int],
                           sigma: str = "residual") -> np.ndarray:
  """Offline LiRA with the global OUT sigma; scores [T, N]. sigma: as lira_online_fixed_var."""
  key = _check_sigma(sigma)
  return _per_target(data, targets, lambda v, i, o: _offline(v, o, fixed=True, key=key))


def lira_offline_logpdf(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """The reference code's offline score -log N(phi_t; mu_out, s_out); scores [T, N]."""
  def fn(v, st_in, st_out):
    del st_in
    _need(st_out, "OUT")
    return -np.mean(_logpdf(v, st_out["mu"], _sigma(st_out, st_out, fixed=False)), axis=-1)
  return _per_target(data, targets, fn)
