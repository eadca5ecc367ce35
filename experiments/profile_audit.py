r"""Where one audit's seconds go: wall, CPU and XLA compilations per stage, from one CLI run.

  python -m experiments.profile_audit --config=configs/default.py --workdir=/tmp/prof \
      [--profile_json=/tmp/prof.json] [--profile_cprofile=/tmp/prof.pstats] [--config.x=...]

Runs the command line (mia_jax.main.run_cli) in this process with its stages wrapped, and prints
one row per stage: wall seconds, CPU seconds (time.process_time: every thread of the process,
XLA's included, so a loaded machine inflates wall but hardly CPU) and the XLA backend compiles
it ran (count, seconds; persistent-cache hits beside). Stages nest (an attack lies inside
"attacks"); a row's figures include its children. "imports" is importing mia_jax.main (jax and
every module the CLI loads at start-up); interpreter start-up is outside it (compare
`/usr/bin/time -v` of the whole command). The options --profile_json (the rows as JSON) and
--profile_cprofile (a cProfile dump of the whole run) are this script's; every other option goes
to the CLI. The same script runs on an older tree (a git worktree) for before / after figures.
"""

import json
import sys
import time

_T0_WALL, _T0_CPU = time.perf_counter(), time.process_time()

from jax._src import dispatch  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax._src import monitoring  # pylint: disable=g-import-not-at-top,wrong-import-position

import mia_jax.main as mia_main  # pylint: disable=g-import-not-at-top,wrong-import-position

_IMPORT_WALL, _IMPORT_CPU = time.perf_counter() - _T0_WALL, time.process_time() - _T0_CPU

# pylint: disable=g-import-not-at-top,wrong-import-position
from mia_jax import attack_stage, attacks, figures, pipeline, report  # noqa: E402
from mia_jax.privacy import canary_audit  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position


class Recorder:
  """Rows of (depth, name, wall, cpu, compiles, compile seconds, cache hits) in call order."""

  def __init__(self):
    self.rows: list[dict] = []
    self._open: list[dict] = []

  def on_duration(self, event: str, seconds: float, **kwargs) -> None:
    if event == dispatch.BACKEND_COMPILE_EVENT:
      for row in self._open:
        row["compiles"] += 1
        row["compile_s"] += seconds
        row["programs"].append((kwargs.get("fun_name", "?"), round(seconds, 3)))

  def on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == "/jax/compilation_cache/cache_hits":
      for row in self._open:
        row["cache_hits"] += 1

  def wrap(self, module, attr: str, name: str | None = None) -> None:
    """Replaces module.attr by a timed call of it, recorded as `name` (attr by default)."""
    inner = getattr(module, attr)

    def timed(*args, **kwargs):
      label = name or attr
      if label == "attack":   # one row per attack, named by it
        label = f"attack {args[0]}"
      row = {"depth": len(self._open), "stage": label, "compiles": 0, "compile_s": 0.0,
             "cache_hits": 0, "programs": []}
      self.rows.append(row)
      self._open.append(row)
      w0, c0 = time.perf_counter(), time.process_time()
      try:
        return inner(*args, **kwargs)
      finally:
        row["wall_s"] = time.perf_counter() - w0
        row["cpu_s"] = time.process_time() - c0
        self._open.pop()

    setattr(module, attr, timed)


def install(recorder: Recorder) -> None:
  """The stages of a training run, wrapped where the pipeline looks them up."""
  for attr in ("load_inputs", "train_models", "query_models"):
    recorder.wrap(pipeline, attr)
  recorder.wrap(pipeline.report, "save_npz_atomic", "save logits.npz")
  recorder.wrap(attack_stage, "run_attacks", "attacks")
  recorder.wrap(attacks, "run", "attack")
  recorder.wrap(attack_stage.attack_eval, "evaluate_scores", "evaluate (intervals)")
  recorder.wrap(attack_stage.attack_eval, "slice_summary", "slices")
  recorder.wrap(canary_audit, "run", "canary audit")
  recorder.wrap(attack_stage, "_shadow_scaling", "shadow-scaling curve")
  recorder.wrap(attack_stage, "_figures", "figures")
  for attr in ("roc", "score_histograms", "shadow_scaling"):
    recorder.wrap(figures, attr, f"figure {attr}")
  recorder.wrap(report, "write", "report (json, md)")


def table(rows: list[dict], total_wall: float, total_cpu: float) -> str:
  """The rows as a fixed-width table, children indented under their parent."""
  lines = [f"{'stage':<40} {'wall s':>8} {'CPU s':>8} {'compiles':>9} {'compile s':>10}"
           f" {'cache hits':>10}"]
  lines.append(f"{'imports (jax, mia_jax)':<40} {_IMPORT_WALL:8.2f} {_IMPORT_CPU:8.2f}")
  for r in rows:
    name = "  " * r["depth"] + r["stage"]
    lines.append(f"{name:<40} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['compiles']:9d}"
                 f" {r['compile_s']:10.2f} {r['cache_hits']:10d}")
  lines.append(f"{'whole run (since this script started)':<40} {total_wall:8.2f}"
               f" {total_cpu:8.2f}")
  return "\n".join(lines)


def _own_option(argv: list[str], name: str) -> tuple[list[str], str]:
  """argv without --name=VALUE, and VALUE ('' when absent)."""
  value, rest = "", []
  for a in argv:
    if a.startswith(f"--{name}="):
      value = a.split("=", 1)[1]
    else:
      rest.append(a)
  return rest, value


def main() -> None:
  argv, json_path = _own_option(sys.argv, "profile_json")
  argv, cprofile_path = _own_option(argv, "profile_cprofile")
  sys.argv = argv
  recorder = Recorder()
  monitoring.register_event_duration_secs_listener(recorder.on_duration)
  monitoring.register_event_listener(recorder.on_event)
  install(recorder)
  profiler = None
  if cprofile_path:
    import cProfile  # pylint: disable=g-import-not-at-top
    profiler = cProfile.Profile()
    profiler.enable()
  status = 0
  try:
    mia_main.run_cli()
  except SystemExit as e:
    status = e.code or 0
  if profiler is not None:
    profiler.disable()
    profiler.dump_stats(cprofile_path)
  total_wall, total_cpu = time.perf_counter() - _T0_WALL, time.process_time() - _T0_CPU
  print(table(recorder.rows, total_wall, total_cpu))
  if json_path:
    with open(json_path, "w") as f:
      json.dump({"imports": {"wall_s": _IMPORT_WALL, "cpu_s": _IMPORT_CPU},
                 "rows": recorder.rows, "total": {"wall_s": total_wall, "cpu_s": total_cpu},
                 "argv": argv}, f, indent=1)
  sys.exit(status)


if __name__ == "__main__":
  main()
