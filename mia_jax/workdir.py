"""A workdir belongs to one run: the record of the config that trained its models.

`claim(workdir, config)` creates the folder and writes run_config.json, or checks that the run
it already holds was trained with the same config blocks (TRAINING_BLOCKS), so that resuming
never mixes checkpoints of two configs.
"""

import json
import os

import ml_collections

from mia_jax import report
from mia_jax.errors import ConfigError

# Config blocks that decide the trained models; a workdir's checkpoints belong to these values.
TRAINING_BLOCKS = ("seed", "data", "model", "membership", "train", "dp")


def training_record(config: ml_collections.ConfigDict) -> dict:
  d = config.to_dict()
  record = {k: d[k] for k in TRAINING_BLOCKS}
  record["audit"] = {"num_canaries": d["audit"]["num_canaries"]}   # canaries change the data
  return json.loads(json.dumps(record, default=str))


def claim(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates the workdir, or checks that the run it holds was trained with this config."""
  path = os.path.join(workdir, "run_config.json")
  record = training_record(config)
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
    if old != record:
      diff = _first_difference(old, record)
      raise ConfigError(f"workdir {workdir} holds a run trained with another config ({diff}); "
                        "use a new --workdir, or delete that folder to start over")
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file; give a folder")
  os.makedirs(workdir, exist_ok=True)
  report.write_json_atomic(path, record)


def _first_difference(old, new, prefix="") -> str:
  if isinstance(old, dict) and isinstance(new, dict):
    for k in sorted(set(old) | set(new)):
      if old.get(k) != new.get(k):
        return _first_difference(old.get(k), new.get(k), f"{prefix}{k}.")
  return f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"
