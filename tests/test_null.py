"""The null test: every registered attack, on a target whose outputs carry no membership, scores
at chance, with every other model as shadows and at every size of the shadow-scaling curve.

The attacks are read from the registry when the tests are collected, so an attack added to
the registry is tested here without anyone listing it, and cannot land without passing.

Data (mia_jax.attacks.synthetic.null_data, built once per (M, seed) and shared by every test):
M models in LiRA's exact design, N = 20,000 pool examples, one query, C = 10 classes, float32;
the shadows memorise strongly (IN outputs well above OUT), 2,000 population examples (RMIA's
z) are OUT for every model, and the null target's outputs are drawn independently of its keep
row. Pool and population carry features that predict each example's difficulty, never its
membership (quantile_regression regresses on them). The positive control is the same data with a target that memorises its own members.

The figure tested is the AUC against the target's keep row, averaged over two such data sets
(seeds, each with its own target): one target of 20,000 examples has a standard error of about
0.004 at chance, the two together about 0.003, so the +-0.015 band is five of them wide.
"""

import functools

import numpy as np
import pytest

from mia_jax import attacks, metrics
from mia_jax.attacks import rmia, scaling, synthetic

MODELS = (4, 8, 16, 64)
SEEDS = (0, 1)
N, P, C = 20_000, 2_000, 10
TOL = 0.015

# Non-default forms that a user can ask for by parameter, tested as well.
VARIANTS = {"lira_online_fixed_var": [{"sigma": "total"}],
            "lira_offline_fixed_var": [{"sigma": "total"}]}
CASES = [(name, {}) for name in attacks.names()] + [
    (name, params) for name, forms in VARIANTS.items() for params in forms]


def _case_id(case):
  name, params = case
  return name + "".join(f"[{k}={v}]" for k, v in sorted(params.items()))


@functools.lru_cache(maxsize=None)
def _data(m: int, seed: int, null: bool) -> tuple[attacks.AttackData, int]:
  return synthetic.null_data(m, seed, null=null, num_examples=N, num_population=P,
                             num_classes=C)


@functools.lru_cache(maxsize=None)
def _view(m: int, seed: int, null: bool, size: int) -> attacks.AttackData:
  """_data at `size` references per example, as the scaling curve attacks it; one object per
  size, so the attacks share its caches (signals, LiRA's per-target stats)."""
  data, _ = _data(m, seed, null)
  return scaling.view(data, size, seed)


def _auc(scores, member) -> float:
  fpr, tpr, _ = metrics.roc_curve(scores, member)
  return metrics.auc(fpr, tpr)


def _mean_auc(score_fn, m: int, size: int, null: bool) -> float:
  """AUC of score_fn(data at `size` references, target) -> [N], averaged over SEEDS."""
  aucs = []
  for seed in SEEDS:
    data, target = _data(m, seed, null)
    aucs.append(_auc(score_fn(_view(m, seed, null, size), target), data.keep[target]))
  return float(np.mean(aucs))


def _attack(name, params):
  return lambda data, target: attacks.run(name, data, [target], **params)[0]


@pytest.mark.parametrize("m", MODELS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_no_membership_signal_scores_at_chance(case, m):
  name, params = case
  got = {size: _mean_auc(_attack(name, params), m, size, null=True)
         for size in scaling.scaling_sizes(m)}
  bad = {k: round(v, 4) for k, v in got.items() if abs(v - 0.5) > TOL}
  assert not bad, f"{_case_id(case)} at M={m}: AUC outside 0.5 +- {TOL} at sizes {bad}"


@pytest.mark.parametrize("m", MODELS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_positive_control_a_memorising_target_is_found(case, m):
  """The same data with a target that memorises: every attack scores well above chance (so
  the null test above can fail: the data carry a signal that a biased attack would use)."""
  name, params = case
  sizes = scaling.scaling_sizes(m)
  got = {size: _mean_auc(_attack(name, params), m, size, null=False)
         for size in (sizes[0], sizes[-1])}
  low = {k: round(v, 4) for k, v in got.items() if v < 0.65}
  assert not low, f"{_case_id(case)} at M={m}: AUC below 0.65 at sizes {low}"


def _plain_mean_rmia(data, target):
  """rmia_online's former prior: the plain mean of Pr(x | theta) over every other model."""
  p, pp = rmia._probs(data, False), rmia._probs(data, True)
  prior = lambda q: (q.sum(0, dtype=np.float64) - q[target]) / (q.shape[0] - 1)
  log_rx = np.log(p[target]) - np.log(prior(p))
  log_rz = np.log(pp[target]) - np.log(prior(pp))
  return rmia._score(log_rx, log_rz, 2.0)


def _random_subset_lira(size):
  """The scaling curve's former points: lira_online on a random subset of `size` models."""
  def fn(data, target):
    rng = np.random.default_rng([0, target, size])
    shadows = rng.choice(attacks.others(data.num_models, target), size, replace=False)
    sub, row = scaling.shadow_subset(data, target, shadows)
    return attacks.run("lira_online", sub, [row])[0]
  return fn


def test_the_null_test_fails_the_former_count_biased_attacks():
  """Both former defects of issue 14 fall outside the band on these data: RMIA online's plain
  mean prior (a member of the target has one IN reference fewer) and LiRA on a random subset
  of an exact design (the subset's IN counts depend on the target's membership)."""
  assert _mean_auc(_plain_mean_rmia, 4, 3, null=True) > 0.5 + TOL
  assert _mean_auc(_plain_mean_rmia, 16, 15, null=True) > 0.5 + TOL
  assert _mean_auc(_random_subset_lira(8), 16, 15, null=True) < 0.5 - TOL
