"""experiments/bench_vs_torch's summary (no torch needed): ratios per repeat against PyTorch's
faster thread count, goals marked from the medians, failed runs kept; the baseline's keep
matrix and data split."""

import numpy as np

from experiments import bench_vs_torch_baseline as baseline
from experiments import bench_vs_torch_report as report


def _train_run(repeat, side, train_s):
  if side == "mia_jax":
    result = {"timing": {k: 1.0 for k in report.STAGES} | {"train_s": train_s},
              "epoch_s": [2.0 * train_s, train_s], "num_models": 4, "pool_size": 100}
  else:
    result = {"train_s": train_s, "inference_s": 1.0, "epoch_s": [[1.0, 0.5]] * 4}
  return {"repeat": repeat, "case": "train_mlp", "side": side, "load": 1.0,
          "result": {"wall_s": 3.0 * train_s, **result}}


def test_training_ratio_is_best_pytorch_over_mia_jax_per_repeat():
  times = {0: (10.0, 8.0, 12.0), 1: (20.0, 30.0, 25.0), 2: (5.0, 6.0, 4.0)}
  runs = [_train_run(r, side, t) for r, ts in times.items()
          for side, t in zip(("mia_jax", "torch", "torch1"), ts)]
  runs.append({"repeat": 3, "case": "steps", "side": "torch", "load": 1.0, "error": "boom"})
  s = report.summarise(runs)
  figure = s["train_mlp"]["training stage s"]
  expected = [min(t, t1) / j for j, t, t1 in times.values()]
  assert np.isclose(figure["ratio"]["median"], np.median(expected))
  assert np.isclose(figure["ratio"]["min"], min(expected))
  assert np.allclose(figure["ratio_2_threads"]["values"], [t / j for j, t, _ in times.values()])
  assert figure["mia_jax"]["median"] == 10.0 and figure["torch1"]["max"] == 25.0
  steady = s["train_mlp"]["model-epoch after the first epoch s"]["mia_jax"]
  assert np.isclose(steady["median"], 10.0 / 4)   # epoch 2 of the mia_jax run / models
  assert s["failed_runs"] == ["steps torch (repeat 3): boom"]
  status = {goal: (st, value) for goal, st, value in report.goals(s)}
  met, value = status["training 16 x 2 epochs, MLP: never slower than PyTorch"]
  assert met == ("met" if np.median(expected) >= 1 else "not met")
  assert value.startswith(f"{np.median(expected):.2f} [")
  assert status["training 16 x 2 epochs, CNN: never slower than PyTorch"][0] == "not measured"


def test_step_ratios_take_the_faster_thread_count_in_each_repeat():
  def steps(repeat, side, ms):
    return {"repeat": repeat, "case": "steps", "side": side, "load": 1.0,
            "result": {"wall_s": 1.0, "mlp/plain": [ms / 1e3] * 3}}
  runs = [steps(0, "mia_jax", 5.0), steps(0, "torch", 20.0), steps(0, "torch1", 10.0),
          steps(1, "mia_jax", 4.0), steps(1, "torch", 6.0), steps(1, "torch1", 12.0)]
  s = report.summarise(runs)
  ratio = s["step_ratios"]["Fashion-MNIST MLP: PyTorch plain / mia_jax plain"]
  assert np.allclose(sorted(ratio["values"]), sorted([10.0 / 5.0, 6.0 / 4.0]))
  assert np.isclose(s["fastest_step_ratios"]["Fashion-MNIST MLP: PyTorch plain / mia_jax plain"],
                    6.0 / 4.0)


def test_keep_matrix_puts_every_example_in_half_the_models():
  keep = baseline.keep_matrix(16, 500, seed=3)
  assert keep.shape == (16, 500) and keep.dtype == bool
  assert np.all(keep.sum(axis=0) == 8)
  assert not np.array_equal(keep, baseline.keep_matrix(16, 500, seed=4))
