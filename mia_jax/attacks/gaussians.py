"""Per-example Gaussian statistics of a signal over reference models: LiRA's fitting layer.

LiRA fits, per example and query, a Gaussian to the signal of its IN references and one to
its OUT references: mu = the median (as the reference code), sigma = np.std (ddof 0). Both
come from one representation of a group (`group_table`): the group's values sorted along the
reference axis (entries outside the group +inf) and sums centred on each example's mean. A
median or std without up to two entries per example (the target, a surplus shadow) is then
index arithmetic on the sorted rows and a subtraction from the sums (`leave_out`), so the
attacks that use every other model as references sort once per data, not once per target.

`finish` turns the IN and OUT statistics into what the scores read: examples without
references in a group borrow the other group's mu plus the typical shift and the group's
median sigma, and each group gets its two global sigmas (residual and total; lira.py says
which is which and why).
"""

import numpy as np


def group_table(values: np.ndarray, mask: np.ndarray) -> dict:
  """Sorted rows and centred sums of values [W, N, Q] over the rows w where mask [W, N].

  Returns:
    {"rows": [N, Q, W] sorted (entries outside the group +inf), "k": int [N] (group size),
     "center": float64 [N, Q] (the group's mean, keeps the sums well conditioned),
     "s1", "s2": float64 [N, Q] (sums of the centred values and of their squares)}.
  """
  width = values.shape[0]
  k = mask.sum(axis=0)  # [N]
  masked = np.where(mask[:, :, None], values, np.inf)
  rows = np.ascontiguousarray(np.moveaxis(masked, 0, -1))  # [N, Q, W]
  del masked
  rows.sort(axis=-1)
  total = np.zeros(values.shape[1:], np.float64)
  for w in range(width):
    total += np.where(mask[w][:, None], values[w], 0.0)
  center = total / np.maximum(k, 1)[:, None]
  s1 = np.zeros_like(center)
  s2 = np.zeros_like(center)
  for w in range(width):
    d = np.where(mask[w][:, None], values[w] - center, 0.0)
    s1 += d
    s2 += d * d
  return {"rows": rows, "k": k, "center": center, "s1": s1, "s2": s2}


def _median_without(rows, kq, drop, v, drop2, v2) -> np.ndarray:
  """Median [N, Q] of sorted rows [N, Q, W] without the entries v (where drop [N]) and v2
  (where drop2), kq [N, Q] the entries kept."""
  width = rows.shape[-1]
  # where each left-out entry sits in its sorted row (width: none); equal values: the second
  # takes the next slot of the run, which holds the same value
  p1 = np.where(drop[:, None], np.sum(rows < v[..., None], axis=-1), width)
  p2 = np.where(drop2[:, None], np.sum(rows < v2[..., None], axis=-1), width)
  p2 = np.where((p2 == p1) & (p1 < width), p2 + 1, p2)
  a, b = np.minimum(p1, p2), np.maximum(p1, p2)
  skip = lambda j: (lambda j1: j1 + (j1 >= b))(j + (j >= a))  # reduced -> original index
  lo = np.minimum(skip(np.maximum((kq - 1) // 2, 0)), width - 1)
  hi = np.minimum(skip(kq // 2), width - 1)
  pick = lambda j: np.take_along_axis(rows, j[..., None], axis=-1)[..., 0].astype(np.float64)
  return 0.5 * (pick(lo) + pick(hi))


@np.errstate(invalid="ignore")
def leave_out(table: dict, v: np.ndarray, drop: np.ndarray, v2: np.ndarray, drop2: np.ndarray
              ) -> dict:
  """Per-example stats of one group without up to two of its entries per example.

  Args:
    table: from group_table.
    v, drop: float [N, Q] and bool [N]: the target's signal, and whether the target is in
      this group for the example (then it is left out).
    v2, drop2: the same for a second entry to leave out (a surplus shadow; references.py),
      a different model of the group.

  Returns:
    {"k": int [N], "mu", "sigma": float64 [N, Q] (mu NaN where k = 0), "r1", "r2": float64
    scalars (sum of residuals phi - mu and of their squares over all kept entries), "t1",
    "t2" (sum of the kept values and of their squares), "count": total entries}.
  """
  k = table["k"] - drop - drop2  # [N]
  kq = np.broadcast_to(k[:, None], v.shape)
  if table["rows"].shape[-1] == 0:  # no entry at all
    return {"k": k, "mu": np.full(v.shape, np.nan), "sigma": np.zeros(v.shape), "r1": 0.0,
            "r2": 0.0, "t1": 0.0, "t2": 0.0, "count": 0}
  mu = _median_without(table["rows"], kq, drop, v, drop2, v2)
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


def global_sigmas(stats: dict) -> tuple[float, float]:
  """(residual, total) global sigma of one group's leave_out stats: the np.std of the
  residuals around each example's median, and of the values themselves."""
  n = max(stats["count"], 1)
  std = lambda s1, s2: float(np.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0)))
  return std(stats["r1"], stats["r2"]), std(stats["t1"], stats["t2"])


def fill_missing(a: dict, b: dict) -> None:
  """Fills a's examples without entries from b's: mu_a = mu_b + shift, sigma = median.

  The shift is median_i(mu_a - mu_b) [Q] over examples having both groups; a group missing
  everywhere is left NaN (the scores that need it raise).
  """
  missing = a["k"] == 0
  if not missing.any() or missing.all():
    return
  both = ~missing & (b["k"] > 0)
  if both.any():
    shift = np.median(a["mu"][both] - b["mu"][both], axis=0)  # [Q]
  else:
    shift = np.median(a["mu"][~missing], axis=0) - np.median(b["mu"][b["k"] > 0], axis=0)
  a["mu"] = np.where(missing[:, None], b["mu"] + shift, a["mu"])
  a["sigma"] = np.where(missing[:, None], np.median(a["sigma"][~missing], axis=0), a["sigma"])


def finish(stats_in: dict, stats_out: dict, dtype) -> tuple[dict, dict]:
  """The fits the scores read from leave_out's IN and OUT stats (filled in place).

  Returns:
    (fit_in, fit_out), each {"mu", "sigma": [N, Q] in `dtype`, "k": int [N], "global_sigma"
    (residual form), "total_sigma": float}.
  """
  fill_missing(stats_out, stats_in)
  fill_missing(stats_in, stats_out)

  def compact(st):
    residual, total = global_sigmas(st)
    return {"mu": st["mu"].astype(dtype), "sigma": st["sigma"].astype(dtype), "k": st["k"],
            "global_sigma": residual, "total_sigma": total}

  return compact(stats_in), compact(stats_out)
