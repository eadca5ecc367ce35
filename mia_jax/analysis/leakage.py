"""Which examples leak, measured over many targets, and which outlier claims that supports.

The study (Khalil et al. 2025) claims that the members a well-generalising model leaks are
mostly outliers of their class: noisy, hard to classify, far from the class centroid, on the
border of the class cluster. `study` tests each claim on the scores [T, N] of T targets (every
model of a keep-matrix design in turn the target), at each FPR alpha:

  1. Flagged vs chance. Each target's flagged members against what chance flags at its
     threshold (vulnerability.flag_precision): the mean precision over targets against the
     member base rate (what it is on average with no leak), an interval over targets, and a
     sign-flip test over targets of flagged members minus chance members.
  2. Per-example leakage: rate_in - rate_out over targets (vulnerability.example_leakage),
     and the examples whose leakage is significant after Holm's adjustment over examples.
  3. For each outlier score (computed where the example was never trained on: reference
     models, pixels), two effects on per-example leakage, each within every class and pooled
     over classes (vulnerability.permutation_tests; the unit is examples):
     - Spearman's rho of leakage with the score;
     - the mean leakage of the class's top decile by the score minus the rest's (the deciles
       are per class, so every class gives its tenth);
     and the share of the excess flags (IN flags beyond each example's own OUT rate) that land
     on the top deciles, with a percentile bootstrap over examples.
  4. Holm's adjustment in two families: the pooled tests (1 and the pooled effects of 3, which
     the verdicts read) and the per-class effects of 3.
  5. A verdict per claim: "supported" where one of its scores has both pooled effects positive
     and significant after Holm; "contradicted" where both are significantly negative; "not
     shown" otherwise. The strength is the pooled within-class rho; "mostly" needs the excess
     share of its top deciles above one half with the whole interval.

Targets share examples and shadows, so intervals over targets read the spread between targets
of this pool, not a population of pools.
"""

from typing import Mapping, Sequence

import numpy as np

from mia_jax import stats as mstats
from mia_jax.analysis import vulnerability as vul

CLAIMS = (
    ("noisy", "noisy: models that never saw them predict another class", ("ref_error",)),
    ("hard", "hard to classify: high loss in models that never saw them", ("ref_loss",)),
    ("far", "far from their class centroid", ("centroid_distance", "pixel_centroid_distance")),
    ("sparse", "in sparse regions of their class (kNN distance, LOF)", ("knn_distance", "lof")),
    ("border", "on the border of their class cluster (neighbours of other classes)",
     ("border",)),
)
TOP = 0.1            # the "outliers" of a class: its top decile of a score
SIGNIFICANCE = 0.05


def excess_share(leak: Mapping[str, np.ndarray], group: np.ndarray, strata: np.ndarray,
                 num: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
  """The share of the excess flags that fall on the group (bool [N]).

  An example's excess flags are its flags when IN beyond what its own OUT rate predicts:
  flagged_in - n_in * rate_out (`leak` from vulnerability.example_leakage). share = sum over
  the group / sum over all; the interval is the percentile bootstrap over examples,
  resampled within each stratum (nan where the total excess is not clearly positive: in more
  than (1 - confidence) / 2 of the resamples it is not).
  """
  ex = np.nan_to_num(leak["flagged_in"] - leak["n_in"] * leak["rate_out"])
  g = np.asarray(group, bool)
  total = ex.sum()
  share = float(ex[g].sum() / total) if total > 0 else float("nan")
  rng = np.random.default_rng(seed)
  num_s, den_s = np.zeros(num), np.zeros(num)
  for c in np.unique(strata):
    idx = np.flatnonzero(strata == c)
    pick = idx[rng.integers(0, len(idx), (num, len(idx)))]
    num_s += (ex[pick] * g[pick]).sum(1)
    den_s += ex[pick].sum(1)
  if total <= 0 or np.mean(den_s <= 0) > (1 - confidence) / 2:   # no clear excess to share
    return {"share": float("nan"), "interval": [float("nan")] * 2,
            "examples_share": float(np.mean(g)), "excess_flags": float(total)}
  boot = num_s / np.where(den_s > 0, den_s, np.nan)
  lo, hi = np.nanpercentile(boot, [50 * (1 - confidence), 50 * (1 + confidence)])
  return {"share": share, "interval": [float(lo), float(hi)],
          "examples_share": float(np.mean(g)), "excess_flags": float(total)}


def decile_profile(leak: Mapping[str, np.ndarray], score: np.ndarray, labels: np.ndarray
                   ) -> list[dict]:
  """Per within-class decile of score (0 = most typical): the mean over its examples of
  rate_in, rate_out and leakage, each with a t interval over the examples."""
  dec = vul.decile_within(score, labels)
  out = []
  for d in range(10):
    sel = dec == d
    out.append({k: _mean_ci(leak[k][sel]) for k in ("rate_in", "rate_out", "leakage")})
  return out


def _mean_ci(v):
  v = np.asarray(v, np.float64)
  v = v[np.isfinite(v)]
  lo, hi = mstats.t_interval(v)
  return {"mean": float(v.mean()) if v.size else float("nan"), "interval": [lo, hi],
          "n": int(v.size)}


def _precision(flags, keep, alpha, seed):
  per = vul.target_precisions(flags, keep, alpha)
  prec = np.array([p["precision"] for p in per])
  excess = np.array([p["flagged_members"] - p["chance_members"] for p in per])
  test = (mstats.one_sample_test(excess, 0.0, seed=seed) if len(per) >= 2
          else {"p_value": float("nan")})
  return {"precision": vul.mean_over_targets(prec),
          "base_rate": float(np.mean([p["base_rate"] for p in per])),
          "lift": vul.mean_over_targets([p["lift"] for p in per]),
          "flagged_members": vul.mean_over_targets([p["flagged_members"] for p in per]),
          "chance_members": float(np.mean([p["chance_members"] for p in per])),
          "targets_above_chance": int(sum(p["p_value"] <= SIGNIFICANCE for p in per)),
          "targets": len(per), "p_value": float(test["p_value"]),
          "per_target": prec.tolist()}


def _top_examples(leak, p_holm, labels, outliers, index, count=20):
  order = np.lexsort((-np.nan_to_num(leak["leakage"], nan=-9), p_holm))[:count]
  deciles = {name: vul.decile_within(s, labels) for name, s in outliers.items()}
  return [{"index": int(index[i]), "label": int(labels[i]), "n_in": int(leak["n_in"][i]),
           "n_out": int(leak["n_out"][i]), "rate_in": float(leak["rate_in"][i]),
           "rate_out": float(leak["rate_out"][i]), "leakage": float(leak["leakage"][i]),
           "interval": [float(leak["lo"][i]), float(leak["hi"][i])],
           "p_holm": float(p_holm[i]),
           "outlier_deciles": {n: int(d[i]) for n, d in deciles.items()}} for i in order]


def study(scores: Mapping[str, np.ndarray], keep: np.ndarray, labels: np.ndarray,
          outliers: Mapping[str, np.ndarray], alphas: Sequence[float] = (0.01, 0.001),
          include: np.ndarray | None = None, num_permutations: int = 10000, seed: int = 0
          ) -> tuple[dict, dict]:
  """Tests the study's outlier claims (module docstring).

  Args:
    scores: {attack name: scores [T, N]} of the T targets (higher = member).
    keep: bool [T, N], the targets' members.
    labels: int [N].
    outliers: {score name: [N]}, higher = more outlying, computed where the example was never
      trained on (nan where unavailable).
    alphas: the FPRs of the targets' thresholds.
    include: bool [N], the examples analysed (e.g. all but planted canaries); None: all. The
      targets' thresholds are set on the included non-members.
    num_permutations: of each permutation test (vulnerability.permutation_tests).
    seed: of the permutations, the sign-flip tests and the bootstraps.

  Returns:
    (summary, per_example): a JSON-ready summary, and {f"{attack}@{alpha}": leakage arrays
    [N'] over the included examples} with "index" [N'] into the N examples.
  """
  keep, labels = np.asarray(keep, bool), np.asarray(labels)
  inc = np.ones(len(labels), bool) if include is None else np.asarray(include, bool)
  keep_i, labels_i = keep[:, inc], labels[inc]
  outl = {k: np.asarray(v, np.float64)[inc] for k, v in outliers.items()}
  tops = {k: vul.top_within(v, labels_i, TOP) for k, v in outl.items()}
  any_top = np.logical_or.reduce(list(tops.values()))
  res = {"examples": int(inc.sum()), "excluded": int((~inc).sum()), "targets": int(len(keep)),
         "classes": sorted(int(c) for c in np.unique(labels_i)), "alphas": list(alphas),
         "outlier_scores": list(outl), "attacks": {}}
  per_example, pvals = {"index": np.flatnonzero(inc)}, []
  for attack, s in scores.items():
    res["attacks"][attack] = {}
    for alpha in alphas:
      s_i = np.asarray(s)[:, inc]
      leak = vul.example_leakage(vul.flag_matrix(s_i, keep_i, alpha, leave_one_out=True), keep_i)
      p_holm = mstats.holm(leak["p_value"])
      per_example[f"{attack}@{alpha:g}"] = {**leak, "p_holm": p_holm}
      r = {"precision": _precision(vul.flag_matrix(s_i, keep_i, alpha), keep_i, alpha, seed),
           "leakage": _leakage_summary(leak, p_holm, labels_i, res["classes"], outl,
                                       per_example["index"])}
      pvals.append(((attack, alpha, "precision"), r["precision"]["p_value"]))
      r["scores"] = _score_effects(leak, p_holm <= SIGNIFICANCE, outl, tops, labels_i,
                                   num_permutations, seed, (attack, alpha), pvals)
      r["any_top_excess_share"] = excess_share(leak, any_top, labels_i, seed=seed)
      res["attacks"][attack][f"{alpha:g}"] = r
  _adjust(res, pvals)
  res["verdicts"] = verdicts(res)
  return res, per_example


def _leakage_summary(leak, p_holm, labels, classes, outl, index) -> dict:
  """The mean leakage, the examples leaking after Holm over examples (per class), the top."""
  sig = p_holm <= SIGNIFICANCE
  return {"mean": float(np.nanmean(leak["leakage"])), "significant_examples": int(sig.sum()),
          "significant_per_class": {str(c): int(np.sum(sig & (labels == c))) for c in classes},
          "top_examples": _top_examples(leak, p_holm, labels, outl, index)}


def _score_effects(leak, sig, outl, tops, labels, num_permutations, seed, where, pvals) -> dict:
  """Each outlier score's effects on per-example leakage (pooled, per class), its excess
  share, the leaking examples in its top decile and its decile profile; appends the p-values
  to pvals under keys (attack, alpha, score, ...) for _adjust."""
  tests = vul.permutation_tests(leak["leakage"], outl, labels, TOP, num_permutations, seed)
  out = {}
  for name, v in outl.items():
    pooled, per_class = tests[name]["pooled"], tests[name]["per_stratum"]
    for c, e in per_class.items():
      pvals.append(((*where, name, "class", c, "rho_p_value"), e["rho_p_value"]))
      pvals.append(((*where, name, "class", c, "p_value"), e["p_value"]))
    out[name] = {
        **pooled, "excess_share": excess_share(leak, tops[name], labels, seed=seed),
        "significant_in_top": _in_top(sig, tops[name]),
        "deciles": decile_profile(leak, v, labels), "per_class": per_class}
    pvals.append(((*where, name, "rho_p_value"), pooled["rho_p_value"]))
    pvals.append(((*where, name, "p_value"), pooled["p_value"]))
  return out


def _in_top(sig, top):
  k = int(np.sum(sig & top))
  n = int(np.sum(sig))
  lo, hi = mstats.clopper_pearson(k, n) if n else (float("nan"), float("nan"))
  return {"count": k, "of": n, "fraction": k / n if n else float("nan"), "interval": [lo, hi],
          "chance": TOP}


def _adjust(res, pvals):
  """Holm within each family: "pooled" (flagged vs chance, and the pooled effects, which the
  verdicts read) and "within_class" (the per-class effects); writes p_holm / rho_p_holm beside
  each p-value (nan stays out)."""
  res["tests"] = {"method": "holm", "level": SIGNIFICANCE}
  for family in ("pooled", "within_class"):
    ok = [(k, p) for k, p in pvals if np.isfinite(p) and ("class" in k) == (family != "pooled")]
    adjusted = mstats.holm([p for _, p in ok]) if ok else []
    res["tests"][family] = len(ok)
    for (key, _), q in zip(ok, adjusted):
      attack, alpha, rest = key[0], key[1], key[2:]
      r = res["attacks"][attack][f"{alpha:g}"]
      if rest == ("precision",):
        r["precision"]["p_holm"] = float(q)
        continue
      entry = r["scores"][rest[0]]
      if rest[1] == "class":
        entry, rest = entry["per_class"][rest[2]], rest[2:]
      entry["rho_p_holm" if rest[-1] == "rho_p_value" else "p_holm"] = float(q)


def _strength(rho):
  return "weak" if abs(rho) < 0.1 else ("moderate" if abs(rho) < 0.3 else "strong")


def verdicts(res: dict) -> dict:
  """{attack: {alpha: {claim: {"verdict", "strength", "mostly", "evidence"}}}} (module
  docstring); scores absent from the study are skipped."""
  out = {}
  for attack, by_alpha in res["attacks"].items():
    out[attack] = {}
    for alpha, r in by_alpha.items():
      out[attack][alpha] = {}
      for claim, _, names in CLAIMS:
        names = [n for n in names if n in r["scores"]]
        if not names:
          continue
        best, verdict = None, "not shown"
        for n in names:
          s = r["scores"][n]
          d = s["difference"]
          pos = s["rho"] > 0 and d > 0
          sig = (s.get("rho_p_holm", 1) <= SIGNIFICANCE and s.get("p_holm", 1) <= SIGNIFICANCE)
          if sig and pos:
            verdict = "supported"
            if best is None or s["rho"] > r["scores"][best]["rho"]:
              best = n
          elif sig and s["rho"] < 0 and d < 0 and verdict == "not shown":
            verdict, best = "contradicted", n
        best = best or max(names, key=lambda n: r["scores"][n]["rho"])
        s = r["scores"][best]
        share = s["excess_share"]
        mostly = ("yes" if share["interval"][0] > 0.5 else
                  "no" if share["interval"][1] < 0.5 else "not shown")
        out[attack][alpha][claim] = {
            "verdict": verdict, "score": best,
            "strength": _strength(s["rho"]) if verdict != "not shown" else "",
            "mostly": mostly if verdict == "supported" else "no",
            "rho": s["rho"], "rho_interval": s["rho_interval"],
            "rho_p_holm": s.get("rho_p_holm", float("nan")),
            "top_decile_difference": s["difference"], "top_decile_interval": s["interval"],
            "top_decile_p_holm": s.get("p_holm", float("nan")), "excess_share": share}
  return out
