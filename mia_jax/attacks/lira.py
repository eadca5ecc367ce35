"""LiRA (Carlini et al., S&P 2022) on the scaled logit phi, online and offline.

Two layers. The array-level functions take a target's signal and its references' signals:

  score(target_signal [N, Q], shadow_signal [K, N, Q], shadow_in [K, N], variant=...) -> [N]
  fit(shadow_signal, shadow_in) -> (fit_in, fit_out);  score_fit(target_signal, fit_in,
  fit_out, variant) -> [N]

(../shared/REFERENCE.md has the paper's formulas). The registry's attacks (lira_online, ...:
AttackData and targets) loop over the targets: references.for_target chooses each one's
references, the shadow statistics come from once-sorted tables (gaussians.py) or from the
gathered references (as `fit` computes them), and score_fit scores them.

For target model t and pool example i, the registry's shadows are the other models that
references.py picks for i: IN shadows trained on i, OUT shadows did not, in counts that do
not depend on the target's membership (for the full set, count truncation in exact designs;
for K references, K // 2 of each drawn per example). Per example and query, as the reference code:
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

from typing import Optional, Sequence

import numpy as np
from scipy import special

from mia_jax.attacks import gaussians, references
from mia_jax.attacks.base import AttackData, check_targets
from mia_jax.errors import ConfigError

_EPS = 1e-30
_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
SIGMAS = ("residual", "total")
VARIANTS = ("online", "online_fixed_var", "offline", "offline_fixed_var", "offline_logpdf")


def _check_arrays(target_signal, shadow_signal, shadow_in, mask):
  target = np.asarray(target_signal)
  shadows = np.asarray(shadow_signal)
  if target.ndim != 2 or shadows.ndim != 3 or shadows.shape[1:] != target.shape:
    raise ConfigError(f"LiRA needs target_signal [N, Q] and shadow_signal [K, N, Q], got "
                      f"{target.shape} and {shadows.shape}; add a query axis with x[..., None]")
  flags = [np.asarray(shadow_in), np.ones(shadows.shape[:2], bool) if mask is None
           else np.asarray(mask)]
  for name, flag in zip(("shadow_in", "mask"), flags):
    if flag.shape != shadows.shape[:2] or flag.dtype != np.bool_:
      raise ConfigError(f"LiRA {name} must be bool [K, N]={list(shadows.shape[:2])}, got "
                        f"{flag.dtype} {flag.shape}")
  return target, shadows, flags[0], flags[1]


def fit(shadow_signal: np.ndarray, shadow_in: np.ndarray, mask: Optional[np.ndarray] = None
        ) -> tuple[dict, dict]:
  """Per-example Gaussians of the IN and OUT shadows' signal (module docstring).

  Args:
    shadow_signal: float [K, N, Q], shadow k's signal (scaled logit) on example i, query q.
    shadow_in: bool [K, N], shadow k trained on example i.
    mask: bool [K, N], whether shadow k is a reference of example i (default: all).

  Returns:
    (fit_in, fit_out), each {"mu", "sigma": [N, Q] (the signal's dtype, float32 at least),
    "k": int [N] references of the group, "global_sigma", "total_sigma": float}.
  """
  shadows = np.asarray(shadow_signal)
  if shadows.ndim != 3 or shadows.shape[0] == 0:
    raise ConfigError(f"LiRA needs shadow_signal [K, N, Q] with K >= 1 shadows, got "
                      f"{shadows.shape}")
  _, shadows, inside, mask = _check_arrays(shadows[0], shadows, shadow_in, mask)
  none = np.zeros(shadows.shape[1], bool)
  anchor = shadows[0]      # read only where an entry is left out: never here
  stats = [gaussians.leave_out(gaussians.group_table(shadows, group & mask), anchor, none,
                               anchor, none) for group in (inside, ~inside)]
  return gaussians.finish(*stats, np.result_type(shadows.dtype, np.float32))


def score_fit(target_signal: np.ndarray, fit_in: dict, fit_out: dict, *,
              variant: str = "online", sigma: str = "residual") -> np.ndarray:
  """LiRA scores [N] (float64, higher = member) of a target's signal [N, Q] from `fit`'s
  Gaussians; variant: one of VARIANTS, sigma: the fixed-variance form (SIGMAS)."""
  key = _check_sigma(sigma)
  if variant not in VARIANTS:
    raise ConfigError(f"LiRA variant={variant!r}: choose one of {VARIANTS}")
  v = np.asarray(target_signal, np.float64)
  f64 = lambda st: {k: (x if k == "k" else np.asarray(x, np.float64)) for k, x in st.items()}
  st_in, st_out = f64(fit_in), f64(fit_out)
  fixed = variant.endswith("fixed_var")
  if variant.startswith("online"):
    return _online(v, st_in, st_out, fixed, key)
  if variant == "offline_logpdf":
    _need(st_out, "OUT")
    return -np.mean(_logpdf(v, st_out["mu"], _sigma(st_out, st_out, fixed=False)), axis=-1)
  return _offline(v, st_out, fixed, key)


def score(target_signal: np.ndarray, shadow_signal: np.ndarray, shadow_in: np.ndarray, *,
          variant: str = "online", sigma: str = "residual",
          mask: Optional[np.ndarray] = None) -> np.ndarray:
  """LiRA on arrays: scores [N] of one target from its shadows (higher = member).

  Args:
    target_signal: float [N, Q], the target's scaled logit (signals.scaled_logit) per query.
    shadow_signal: float [K, N, Q], the same for K shadow models.
    shadow_in: bool [K, N], shadow k trained on example i.
    variant: "online" (IN and OUT Gaussians), "offline" (OUT only, one-sided), their
      "_fixed_var" forms (one global sigma per group), or "offline_logpdf" (the reference
      code's offline score); the module docstring has each formula.
    sigma: the fixed-variance sigma, "residual" or "total" (SIGMAS).
    mask: bool [K, N], which shadows score example i (default: all).

  Returns:
    float64 [N].

  Example:
    >>> rng = np.random.default_rng(0)
    >>> shadow_in = rng.random((8, 100)) < 0.5                      # [K, N]
    >>> shadows = rng.normal(size=(8, 100, 1)) + shadow_in[..., None]  # IN shift up by 1
    >>> target = rng.normal(size=(100, 1)) + 1.0                      # a member everywhere
    >>> score(target, shadows, shadow_in).shape
    (100,)
  """
  target, shadows, inside, mask = _check_arrays(target_signal, shadow_signal, shadow_in, mask)
  return score_fit(target, *fit(shadows, inside, mask), variant=variant, sigma=sigma)


def _tables(data: AttackData) -> dict:
  def compute():
    phi = data.signal("scaled_logit")
    keep = np.asarray(data.keep)
    return {"phi": phi, "in": gaussians.group_table(phi, keep),
            "out": gaussians.group_table(phi, ~keep)}
  return data.cached(("lira", "tables"), compute)


def _all_models_stats(data: AttackData, target: int, refs: references.References
                      ) -> tuple[dict, dict]:
  """Every other model as references: the sorted tables, the target and surplus left out."""
  tables = _tables(data)
  phi = tables["phi"]
  v = phi[target]
  target_keep = np.asarray(data.keep[target])
  rows = np.arange(phi.shape[1])
  out = []
  for name, member, dropped in (("in", target_keep, refs.dropped_in),
                                ("out", ~target_keep, refs.dropped_out)):
    v2 = phi[np.maximum(dropped, 0), rows]
    out.append(gaussians.leave_out(tables[name], v, member, v2, dropped >= 0))
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
    out.append(gaussians.leave_out(gaussians.group_table(values, valid), v, none, v, none))
  return out[0], out[1]


def shadow_stats(data: AttackData, target: int) -> tuple[np.ndarray, dict, dict]:
  """The target's phi [N, Q] and `fit`'s IN and OUT Gaussians of its references, cached.

  The references are references.for_target(data, target); the Gaussians are in phi's dtype
  (the cache costs 4 * N * Q floats per target). If no example has a reference in a group,
  that group's mu is NaN and the scores needing it raise ConfigError.
  """
  def compute():
    refs = references.for_target(data, target)
    stats = _drawn_stats if refs.drawn else _all_models_stats
    v = data.signal("scaled_logit")[target]
    return (v, *gaussians.finish(*stats(data, target, refs), v.dtype))
  return data.cached(("lira", "stats", int(target)), compute)


def _logpdf(x, mu, sigma):
  sigma = sigma + _EPS
  return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - _HALF_LOG_2PI


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


def _run(data: AttackData, targets: Sequence[int], variant: str, sigma: str = "residual"
         ) -> np.ndarray:
  """score_fit over the targets, each with its references' Gaussians: float64 [T, N]."""
  _check_sigma(sigma)
  targets = check_targets(data, targets)
  return np.stack([score_fit(*shadow_stats(data, t), variant=variant, sigma=sigma)
                   for t in targets])


def lira_online(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Online LiRA with per-example variances; scores [T, N]."""
  return _run(data, targets, "online")


def lira_online_fixed_var(data: AttackData, targets: Sequence[int],
                          sigma: str = "residual") -> np.ndarray:
  """Online LiRA with one global sigma per group (IN, OUT); scores [T, N].

  sigma: "residual" (std of residuals around each example's median) or "total" (the
  reference code's np.std of all the group's shadow values); see the module docstring.
  """
  return _run(data, targets, "online_fixed_var", sigma)


def lira_offline(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """Offline LiRA, the paper's one-sided test log Pr[Z <= phi_t]; scores [T, N]."""
  return _run(data, targets, "offline")


def lira_offline_fixed_var(data: AttackData, targets: Sequence[int],
                           sigma: str = "residual") -> np.ndarray:
  """Offline LiRA with the global OUT sigma; scores [T, N]. sigma: as lira_online_fixed_var."""
  return _run(data, targets, "offline_fixed_var", sigma)


def lira_offline_logpdf(data: AttackData, targets: Sequence[int]) -> np.ndarray:
  """The reference code's offline score -log N(phi_t; mu_out, s_out); scores [T, N]."""
  return _run(data, targets, "offline_logpdf")
