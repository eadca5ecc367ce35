"""report.md and the figures: the n/a rule, intervals that hold their estimates, what is drawn."""

import csv
import re
import time

import numpy as np
import pytest

from mia_jax import attack_stage, attacks, figures, metrics, report
from mia_jax.attacks import evaluate as attack_eval

_CELL = re.compile(r"(-?\d+\.\d+)(?: ± \d+\.\d+)? \[(-?\d+\.\d+), (-?\d+\.\d+)\]")


def _scores(rng, keep, strength):
  """Synthetic scores [T, N] of T targets: members shifted by `strength`, with ties."""
  return np.round(rng.normal(size=keep.shape) + strength * keep, 2)


def _results(num_targets=4, n=1000, seed=0, names=("loss", "lira_online", "rmia_offline")):
  """A results dict as pipeline.attack_and_report builds it, from synthetic scores."""
  rng = np.random.default_rng(seed)
  keep = np.argsort(rng.random((2 * num_targets, n)), axis=0) < num_targets   # exact design
  targets = list(range(num_targets))
  labels = rng.integers(0, 3, n)
  preds = np.where(rng.random((num_targets, n)) < 0.8, labels, (labels + 1) % 3)
  attacks, curves = {}, {}
  for i, name in enumerate(names):
    scores = _scores(rng, keep[targets], 0.3 * (i + 1))
    attacks[name], curves[name] = attack_eval.evaluate_scores(name, scores, keep, targets)
    attacks[name]["slices"] = attack_eval.slice_summary(scores, keep[targets], labels, preds)
  results = {
      "source": {"mode": "train"}, "num_models": 2 * num_targets, "targets": targets,
      "dataset": {"name": "synthetic", "pool_size": n, "test_size": 0, "num_classes": 3},
      "models": {"train_accuracy": [0.9, 0.92, 0.91], "test_accuracy": [0.8, 0.82, 0.85],
                 "epochs_run": 1},
      "attacks": attacks, "shadow_scaling": {}, "timing": {"attack_s": 1.0, "total_s": 2.0},
      "config": {"model": {"name": "mlp"}},
  }
  return results, curves, keep


def _row(md, name):
  return next(line for line in md.splitlines() if line.startswith(f"| {name} |"))


def test_unresolved_fprs_read_na_with_the_count_and_resolved_ones_a_number():
  results, _, keep = _results(n=1000)                      # about 500 non-members per target
  md = report.markdown(results)
  cells = _row(md, "lira_online").split(" | ")
  tpr1, tpr01, tpr001 = cells[-3], cells[-2], cells[-1].rstrip(" |")
  assert _CELL.search(tpr1)                                 # 1% FPR: about 5 false positives
  n_non = np.mean((~keep[:4]).sum(1))
  assert tpr01 == tpr001 == f"n/a ({n_non:.0f} non-members)"   # 0.5, 0.05 of a non-member
  assert results["attacks"]["lira_online"]["tpr_at_fpr_resolved"] == {
      "0.01": True, "0.001": False, "0.0001": False, "0.0": False}
  # with 5000 non-members the 0.1% column resolves (5 false positives), 0.01% still not
  results, _, keep = _results(num_targets=2, n=10000)
  cells = _row(report.markdown(results), "lira_online").split(" | ")
  n_non = np.mean((~keep[:2]).sum(1))
  assert _CELL.search(cells[-2]) and cells[-1].rstrip(" |") == f"n/a ({n_non:.0f} non-members)"


def test_slice_table_applies_the_na_rule_per_slice():
  results, _, _ = _results(n=1000)
  md = report.markdown(results)
  name = report.strongest(results["attacks"])
  sl = results["attacks"][name]["slices"]
  for label, v in [(f"class {c}", v) for c, v in sl["class"].items()] + [
      ("correctly classified", sl["correct"]), ("misclassified", sl["incorrect"])]:
    cells = _row(md, label).split(" | ")
    tpr1, tpr01 = cells[-2], cells[-1].rstrip(" |")
    assert tpr01 == f"n/a ({v['num_nonmembers']:.0f} non-members)"
    if v["tpr_at_fpr_resolved"]["0.01"]:
      assert _CELL.search(tpr1)
    else:
      assert tpr1 == f"n/a ({v['num_nonmembers']:.0f} non-members)"
  # the misclassified slice holds about 100 non-members per target: 1% rests on 1 or 0 of them
  assert sl["incorrect"]["num_nonmembers"] < 150


@pytest.mark.parametrize("seed", range(4))
def test_every_interval_in_the_report_holds_its_estimate(seed):
  results, _, _ = _results(num_targets=[1, 2, 3, 6][seed], n=[200, 1000, 3000, 600][seed],
                           seed=seed)
  md = report.markdown(results)
  found = _CELL.findall(md)
  assert len(found) > 10
  for est, lo, hi in found:
    assert float(lo) <= float(est) <= float(hi), (est, lo, hi)


def test_interval_text_rounds_outward():
  # 0.87449% shown as 0.87 must not sit outside a shown [0.88, ...]
  assert report.interval_text([0.0087451, 0.0200001]) == " [0.87, 2.01]"
  assert report.interval_text([0.5, 0.5]) == " [50.00, 50.00]"


class _Capture:
  def __init__(self, monkeypatch):
    self.figs = []
    save = figures._save                                   # pylint: disable=protected-access

    def keep(fig, path):
      self.figs.append(fig)
      save(fig, path)

    monkeypatch.setattr(figures, "_save", keep)


def test_roc_is_drawn_only_above_the_floor_with_auc_in_the_legend(tmp_path, monkeypatch):
  results, curves, _ = _results(n=1000)
  cap = _Capture(monkeypatch)
  labels = figures.roc(str(tmp_path / "roc.png"), curves, results["attacks"])
  assert (tmp_path / "roc.png").stat().st_size > 20000
  ax = cap.figs[0].axes[0]
  floor = max(1 / r["num_nonmembers"] for r in results["attacks"]["loss"]["per_target"])
  for line in ax.get_lines():
    assert np.min(line.get_xdata()) >= floor * (1 - 1e-9)
  for name, label in zip(curves, labels):
    s = results["attacks"][name]
    assert label.startswith(f"{name}  AUC {100 * s['auc']['mean']:.1f}%")
    lo, hi = (float(x) for x in re.findall(r"\[(\S+), (\S+)\]", label)[0])
    assert lo <= round(100 * s["auc"]["mean"], 1) <= hi
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == labels
  assert any(f"1/{round(1 / floor)}" in t.get_text() for t in ax.texts)  # the floor, marked


def test_styles_distinct_per_attack_and_shared_within_a_family():
  names = ["loss", "confidence", "entropy", "modified_entropy", "shokri", "lira_online",
           "lira_online_fixed_var", "lira_offline", "lira_offline_fixed_var",
           "lira_offline_logpdf", "rmia_online", "rmia_offline", "new_attack"]
  look = figures.styles(names)
  assert len({(v["color"]) for v in look.values()}) == len(names)
  by_family = {}
  for name in names:
    by_family.setdefault(figures.family(name), set()).add(str(look[name]["ls"]))
  assert all(len(v) == 1 for v in by_family.values())
  assert len({next(iter(v)) for v in by_family.values()}) == len(by_family) == 6


def test_score_histograms_label_what_the_score_is(tmp_path, monkeypatch):
  rng = np.random.default_rng(3)
  member = rng.random(400) < 0.5
  scores = {"loss": rng.normal(size=400) - member,
            "lira_online": rng.standard_cauchy(400) * 1e3 + member,   # heavy tails
            "custom": rng.normal(size=400)}
  cap = _Capture(monkeypatch)
  xlabels = figures.score_histograms(str(tmp_path / "h.png"), scores, member, 0)
  assert xlabels[0] == figures.SCORE_LABELS["loss"]
  assert xlabels[1] == (figures.SCORE_LABELS["lira_online"]
                        + "\n(drawn as sign(s) log(1 + |s|))")
  assert xlabels[2] == "attack score (higher = member)"
  axes = cap.figs[0].axes
  assert [a.get_xlabel() for a in axes[:3]] == xlabels
  assert axes[0].get_ylabel() == "density"
  for ax in axes[:3]:        # members and non-members, each a density over the drawn bins
    steps = [p.get_data() for p in ax.patches]
    assert len(steps) == 2
    for values, edges, _ in steps:
      np.testing.assert_allclose(np.sum(values * np.diff(edges)), 1.0, rtol=1e-9)
  values, edges, _ = axes[0].patches[1].get_data()       # members of the loss panel
  expect, _ = np.histogram(np.clip(scores["loss"][member], edges[0], edges[-1]), edges,
                           density=True)
  np.testing.assert_allclose(values, expect)


def test_shadow_scaling_in_percent_with_the_legend_off_the_axes(tmp_path, monkeypatch):
  rng = np.random.default_rng(4)
  keep = np.argsort(rng.random((5, 3000)), axis=0) < 2
  points = []
  for k in (2, 4):
    items = [metrics.evaluate(rng.normal(size=3000) + 0.3 * keep[t], keep[t]) for t in (0, 1)]
    points.append({"num_shadows": k, **attack_eval.combine(items, True)})
  scaling = {"sizes": [2, 4], "targets": [0, 1], "attacks": {"lira_online": points}}
  cap = _Capture(monkeypatch)
  key = figures.shadow_scaling(str(tmp_path / "s.png"), scaling)
  assert key == "0.001"                                   # 1000+ non-members resolve 0.1%
  fig = cap.figs[0]
  ax_tpr, ax_auc = fig.axes
  line = ax_auc.get_lines()[0]
  np.testing.assert_allclose(line.get_ydata(), [100 * p["auc"]["mean"] for p in points])
  assert ax_tpr.get_ylabel() == "TPR at 0.1% FPR (%)"
  dots = np.asarray(ax_auc.collections[0].get_offsets())           # each target's AUC, per K
  expect = [(p["num_shadows"], 100 * v) for p in points for v in p["auc"]["per_target"]]
  np.testing.assert_allclose(dots, expect)
  fig.canvas.draw()
  legend = fig.legends[0].get_window_extent()
  assert legend.x0 >= max(ax.get_window_extent().x1 for ax in fig.axes)


def _busy(seconds: float) -> None:
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass


def test_stage_clock_laps_add_up_to_the_total_and_cpu_counts_work_not_waiting():
  clock = report.StageClock()
  _busy(0.05)
  clock.lap("work")
  time.sleep(0.1)
  clock.lap("wait")
  _busy(0.05)
  clock.lap("work")                                      # a second lap of the same stage
  t = clock.timing()
  assert [k for k in t if k.endswith("_s")] == ["work_s", "wait_s", "total_s"]
  assert t["work_s"] + t["wait_s"] <= t["total_s"] < t["work_s"] + t["wait_s"] + 0.05
  assert t["cpu"]["work_s"] >= 0.1 - 1e-3                # both laps of busy work
  assert t["cpu"]["wait_s"] < 0.5 * t["wait_s"] and t["wait_s"] >= 0.1
  assert t["cpu"]["startup_s"] > 0                      # this process' CPU before the clock
  text = report.timing_text(t)
  assert text.startswith(f"work {t['work_s']:.1f}s (CPU {t['cpu']['work_s']:.1f}s), wait ")
  assert "before the run" in text


def test_per_example_risk_is_at_chance_without_signal_and_ranks_the_memorised_first(tmp_path):
  rng = np.random.default_rng(0)
  m, n, c = 16, 2000, 5
  keep = np.argsort(rng.random((m, n)), axis=0) < m // 2          # exact design: 8 IN, 8 OUT
  labels = rng.integers(0, c, n)
  logits = rng.normal(size=(m, n, 1, c)).astype(np.float32)
  memorised = np.arange(20)                       # the only examples whose membership shows
  logits[:, memorised, 0, labels[memorised]] += 6.0 * keep[:, memorised]
  data = attacks.AttackData(logits=logits, labels=labels, keep=keep)
  r = attack_stage.per_example_risk(data, list(range(m)), str(tmp_path))
  assert r["examples"] == n and r["targets"] == m
  assert {row["index"] for row in r["top"]} <= set(memorised.tolist())
  # The 1,980 examples without signal: about 2.5% on each side of 0.5 by chance.
  false_flags = (r["above_chance"] - len(memorised)) + r["below_chance"]
  assert r["above_chance"] >= len(memorised) and false_flags / (n - len(memorised)) < 0.10
  expected = attacks.risk.per_example(data.target_signal("scaled_logit", range(m)).mean(-1),
                                      keep)
  with open(tmp_path / "risk.csv") as f:
    rows = list(csv.DictReader(f))
  np.testing.assert_allclose([float(x["risk"]) for x in rows], expected["risk"], rtol=1e-5)
  text = "\n".join(report._risk_lines({"risk": r}))
  assert "Which examples are at risk" in text and f"| 1 | {r['top'][0]['index']} |" in text
  assert attack_stage.per_example_risk(data, [0, 1, 2], str(tmp_path)) is None
