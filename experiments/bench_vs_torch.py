r"""mia_jax against a straightforward PyTorch loop and Opacus on this CPU (issue 18's benchmark).

  pip install -e '.[bench]'   # torch==2.13.0, opacus 1.6.0; where PyPI's torch is a CUDA build,
                              # first: pip install torch==2.13.0 --index-url \
                              #   https://download.pytorch.org/whl/cpu
  nice -n 5 python -m experiments.bench_vs_torch          # the full bench
  python -m experiments.bench_vs_torch --quick            # tiny sizes: a smoke run
  python -m experiments.bench_vs_torch --long             # + 16 MLPs x 20 epochs, once
  --tree DIR times another source tree (e.g. `git archive` of a commit: its mia_jax, configs
  and workers).
Writes experiments/results/bench_vs_torch.md and .json (every figure with its repeats).

Both sides: Fashion-MNIST split as mia_jax.data splits it, 16 models on random halves of a
10,000-image pool, batch 128, Adam lr 1e-3 (constant), 2 epochs; the MLP 784-512-256-10 and
mia_jax's Fashion-MNIST CNN (norm none). mia_jax through the CLI (`python -m mia_jax.main`:
results.json's stage and epoch seconds, and the wall time of the whole audit) and per step
through its public API (the library's step jitted alone); PyTorch and Opacus (DP-SGD per step
with hooks and ghost clipping, clip 1, noise multiplier 1, on the Purchase100 MLP and the CNN)
in experiments/bench_vs_torch_baseline.py, on 2 threads and on 1 (OpenMP waiting passively),
each ratio against the faster. Repeats interleaved, each run a fresh process; a figure is the
median [min, max] over repeats, a ratio that of the per-repeat ratios; the load average
recorded before every run; the summary and issue 18's goals in bench_vs_torch_report.py. The
DP-SGD model-step in the loop: the CLI's DP run (Poisson batches) against its plain run, per
model-step after the first epoch.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from experiments import bench_vs_torch_baseline as baseline
from experiments import bench_vs_torch_report as report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "experiments", "results")
TREE = ROOT      # the mia_jax source tree timed (--tree: e.g. a `git archive` of a commit)

# ===== mia_jax adapter: every use of mia_jax's Python API and CLI is in this section ==========
# CLI cases: (config file, overrides). Sizes {pool}, {models}, {epochs} are filled in per run.
MLP_SPLITS = {"data.val_size": 2000, "data.test_size": 10_000}   # PyTorch infers on the same
CLI_CASES = {
    "mlp": ("configs/fashion_mnist_mlp.py", MLP_SPLITS),
    "cnn": ("configs/fashion_mnist_cnn.py", {"data.val_size": 1000, "data.test_size": 2000,
                                             "train.chunk_size": 0}),
    "mlp_dp": ("configs/fashion_mnist_mlp.py", {**MLP_SPLITS, "dp.enabled": True,
                                                "dp.noise_multiplier": 1.0, "dp.clip_norm": 1.0}),
    "default": ("configs/default.py", None),      # None: the shipped default audit as it is
}
CLI_SIZED = {"data.pool_size": "{pool}", "membership.num_models": "{models}",
             "train.epochs": "{epochs}", "train.batch_size": 128, "train.schedule": "constant",
             "train.optimizer": "adam", "train.learning_rate": 1e-3}
CLI_QUICK = {"attack.num_targets": 0}   # --quick: every one of its 4 models a target


def cli_figures(results: dict) -> dict:
  """The figures of one CLI run's results.json: stage seconds, epoch seconds, steps/epoch."""
  history, steps = results["models"]["history"], (results.get("privacy") or {}).get("steps")
  return {"timing": {k: v for k, v in results["timing"].items() if k.endswith("_s")},
          "epoch_s": [h["seconds"] for h in history],
          "steps_per_epoch": steps // len(history) if steps else None,
          "num_models": results["num_models"], "pool_size": results["dataset"]["pool_size"],
          "test_size": results["dataset"]["test_size"], "strategy": results["models"]["strategy"]}


def jax_model(kind: str):
  """The flax module of a step case: 'mlp' (Fashion-MNIST), 'cnn', 'purchase'."""
  from mia_jax.models.cnn import CNN
  from mia_jax.models.mlp import MLP, PURCHASE_HIDDEN
  if kind == "mlp":
    return MLP(hidden=(512, 256), num_classes=10)
  if kind == "cnn":
    return CNN(channels=(32, 64), num_classes=10, dense=128, norm="none")
  return MLP(hidden=PURCHASE_HIDDEN, num_classes=100, activation="tanh")


def jax_step(model, sample_x, dp: bool, batch_size: int):
  """(state, step): one model's state and its jitted train step(state, x, y, mask, key), the
  library's own step: training.train_step (softmax cross entropy, no augmentation), or
  dp.make_step's DP-SGD (fast clipping, clip 1, noise multiplier 1) chained before Adam."""
  import jax
  import optax
  from mia_jax import training
  from mia_jax.training import dp as dp_lib
  step, tx = training.train_step, optax.adam(1e-3)
  if dp:
    plan = dp_lib.DPPlan(noise_multiplier=1.0, expected_batch_size=float(batch_size),
                         max_batch=batch_size, steps_per_epoch=1, steps=1,
                         num_examples=batch_size, delta=1e-5, sampling="poisson",
                         accountant="pld", clip_norm=1.0, clipping="fast")
    step, tx = dp_lib.make_step(plan, training.softmax_cross_entropy, tx=tx)
  state = training.init_state(model, tx, jax.random.key(0), sample_x[:1])
  one = lambda st, x, y, mask, key: step(st, training.Batch(x, y, mask), key)
  return state, jax.jit(one, donate_argnums=0)
# ===== end of the adapter ======================================================================


def worker_jax_steps(a) -> dict:
  """Per-step seconds of mia_jax's plain and DP steps (jitted alone, one model)."""
  import jax
  import jax.numpy as jnp
  out = {}
  for kind, variants in (("mlp", ("plain",)), ("cnn", ("plain", "dp")),
                         ("purchase", ("plain", "dp"))):
    x, y = baseline.step_data(kind)
    x, y = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    mask = jnp.ones(len(y), jnp.float32)
    for variant in variants:
      state, jitted = jax_step(jax_model(kind), x, variant == "dp", len(y))
      box = {"state": state, "i": 0}

      def step():
        box["i"] += 1
        box["state"], metrics = jitted(box["state"], x, y, mask, jax.random.key(box["i"]))
        jax.block_until_ready((box["state"], metrics))
      out[f"{kind}/{variant}"] = baseline.time_calls(step, a.steps)
  return out


def run_process(argv: list[str], log_path: str) -> float:
  """Wall seconds of one process run in TREE, whose mia_jax it imports; its output to the log."""
  t0 = time.perf_counter()
  with open(log_path, "a") as log:
    if subprocess.call(argv, cwd=TREE, env={**os.environ, "PYTHONPATH": TREE}, stdout=log,
                       stderr=subprocess.STDOUT):
      raise RuntimeError(f"{' '.join(argv)} failed; see {log_path}")
  return time.perf_counter() - t0


def run_cli(case: str, sizes: dict, log_path: str) -> dict:
  config, extra = CLI_CASES[case]
  overrides = {} if extra is None else {**CLI_SIZED, **extra,
                                          **(CLI_QUICK if sizes["models"] < 8 else {})}
  with tempfile.TemporaryDirectory(prefix="bench_vs_torch_") as workdir:
    argv = [sys.executable, "-m", "mia_jax.main", f"--config={config}", f"--workdir={workdir}"]
    argv += [f"--config.{k}={str(v).format(**sizes)}" for k, v in overrides.items()]
    wall = run_process(argv, log_path)
    with open(os.path.join(workdir, "results.json")) as f:
      return {"wall_s": wall, **cli_figures(json.load(f))}


def run_worker(module: str, args: list[str], log_path: str) -> dict:
  """Runs a worker (this module's jax_steps, or bench_vs_torch_baseline's train / steps)."""
  fd, path = tempfile.mkstemp(suffix=".json")
  os.close(fd)
  wall = run_process([sys.executable, "-m", f"experiments.{module}"] + args
                     + ["--result", path], log_path)
  with open(path) as f:
    result = json.load(f)
  os.remove(path)
  return {"wall_s": wall, **result}


THIS, BASELINE = "bench_vs_torch", "bench_vs_torch_baseline"


def sizes_of(args) -> dict:
  return ({"pool": 1000, "models": 4, "epochs": 2} if args.quick else
          {"pool": 10_000, "models": 16, "epochs": 2})


def plan(args) -> list[tuple]:
  """(repeat, case, side, thunk) in the interleaved order; each side's order alternates."""
  sizes = sizes_of(args)
  log = args.log
  steps = 3 if args.quick else args.steps
  step_args = ["--steps", str(steps), "--few", str(max(2, steps // 4))]   # few: Opacus hooks

  def train_pair(kind, epochs):
    s = {**sizes, "epochs": epochs}
    val, test = (CLI_CASES[kind][1][f"data.{k}_size"] for k in ("val", "test"))
    torch_args = ["train", "--model", kind, "--epochs", str(epochs), "--models", str(s["models"]),
                  "--pool", str(s["pool"]), "--val", str(val), "--test", str(test)]
    one_thread = kind != "cnn" or args.cnn_one_thread
    return [("mia_jax", lambda: run_cli(kind, s, log)),
            ("torch", lambda: run_worker(BASELINE, torch_args, log))] + ([
                ("torch1", lambda: run_worker(BASELINE, torch_args + ["--threads", "1"], log))]
                if one_thread else [])
  runs = []
  for r in range(args.repeats):
    cases = [("train_mlp", train_pair("mlp", sizes["epochs"])), ("steps", [
        ("mia_jax", lambda: run_worker(THIS, ["--worker", "jax_steps"] + step_args, log)),
        ("torch", lambda: run_worker(BASELINE, ["steps"] + step_args, log)),
        ("torch1", lambda: run_worker(BASELINE, ["steps", "--threads", "1"] + step_args, log))])]
    cases.append(("dp_loop_mlp", [("mia_jax", lambda: run_cli("mlp_dp", sizes, log))]))
    cases.append(("default_audit", [("mia_jax", lambda: run_cli("default", sizes, log))]))
    if r < args.cnn_repeats:   # the costliest case last in a repeat
      cases.append(("train_cnn", train_pair("cnn", sizes["epochs"])))
    if args.long and r == 0:
      cases.append(("train_mlp_20", train_pair("mlp", 20)))
    for case, sides in cases:
      if args.cases and case not in args.cases.split(","):
        continue
      for side, thunk in (sides if r % 2 == 0 else sides[::-1]):
        runs.append((r, case, side, thunk))
  return runs


def versions() -> dict:
  """Package versions, and the commit of the tree timed (its .commit file, or git's)."""
  from importlib import metadata
  marker = os.path.join(TREE, ".commit")
  commit = (open(marker).read().strip() if os.path.exists(marker) else subprocess.run(
      ["git", "-C", TREE, "describe", "--always", "--dirty"], capture_output=True, text=True,
      check=False).stdout.strip())
  return {**{k: metadata.version(k) for k in ("torch", "opacus", "jax")}, "commit": commit}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
  p.add_argument("--long", action="store_true", help="also 20 epochs of the MLP (once)")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--cnn-repeats", type=int, default=1)
  p.add_argument("--log", default="/tmp/bench_vs_torch.log", help="the runs' output")
  p.add_argument("--out", default=OUT)
  p.add_argument("--tree", default=ROOT, help="the mia_jax source tree to time")
  p.add_argument("--cases", default="", help="only these cases, e.g. train_mlp_20 (with --long)")
  p.add_argument("--worker", default="", help="jax_steps: this script's worker process")
  p.add_argument("--result", default="")
  p.add_argument("--steps", type=int, default=10, help="timed steps per step case")
  p.add_argument("--cnn-one-thread", action="store_true",
                 help="also train the CNNs with PyTorch on 1 thread (slow under load)")
  args, _ = p.parse_known_args()
  if args.worker == "jax_steps":
    with open(args.result, "w") as f:
      json.dump(worker_jax_steps(args), f)
    return
  global TREE
  TREE = os.path.abspath(args.tree)
  t0, runs, todo = time.perf_counter(), [], plan(args)
  stem = os.path.join(args.out, "bench_vs_torch_quick" if args.quick else "bench_vs_torch")
  for i, (repeat, case, side, thunk) in enumerate(todo):
    load = os.getloadavg()[0]
    print(f"[{i + 1}/{len(todo)}] repeat {repeat} {case} {side} (load {load:.1f})", flush=True)
    run = {"repeat": repeat, "case": case, "side": side, "load": load}
    try:
      run["result"] = thunk()
    except RuntimeError as e:   # a failed run is recorded (its log named) and the bench goes on
      run["error"] = str(e)
      print(f"  failed: {e}", flush=True)
    runs.append(run)
    meta = {**versions(), "command": " ".join(["python", "-m", "experiments.bench_vs_torch"]
                                              + sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "bench_s": time.perf_counter() - t0, "load": report.spread(r["load"] for r in runs),
            "runs_done": len(runs), "runs_planned": len(todo), "sizes": sizes_of(args)}
    summary = report.summarise(runs)
    with open(stem + ".json", "w") as f:
      json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=1)
    report.write_markdown(stem + ".md", meta, summary)
  print(f"done in {time.perf_counter() - t0:.0f} s: {stem}.md")


if __name__ == "__main__":
  main()
