"""Orbax checkpoints of an ensemble's training state, for resume-by-default.

The state pytree is saved as its flat list of leaves (a stable, structure-free layout) plus a
JSON record of the loop's progress; it is restored into the structure of a freshly initialised
state, so optax's empty states and models without BatchNorm need no special handling.
Orbax writes each checkpoint to a temporary folder and renames it when complete: a run killed
during a save resumes from the previous checkpoint (the next run removes the temporary folder).
When to save is the trainer's choice (mia_jax.training.ensemble: by seconds of training).
"""

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores (pytree, meta) pairs under `directory`, keyed by epoch."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self._mngr = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, tree: Any, meta: dict) -> None:
    leaves = {f"{i:06d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(tree))}
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(leaves),
                                                  meta=ocp.args.JsonSave(meta)), force=True)
    self._mngr.wait_until_finished()

  def restore(self, step: int, like: Any) -> tuple[Any, dict]:
    """Restores the checkpoint of `step` into the structure (and dtypes) of `like`."""
    leaves, treedef = jax.tree.flatten(like)
    target = {f"{i:06d}": np.asarray(x) for i, x in enumerate(leaves)}
    restored = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    values = [restored.state[f"{i:06d}"] for i in range(len(leaves))]
    values = [np.asarray(v).astype(np.asarray(l).dtype) for v, l in zip(values, leaves)]
    return jax.tree.unflatten(treedef, values), dict(restored.meta)

  def close(self) -> None:
    self._mngr.close()
