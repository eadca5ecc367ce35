"""The trainer's progress line and time left: what an epoch took, when to save, what remains."""

import dataclasses
import time

import numpy as np


def time_left(compute_s: list[float], save_s: list[float], epochs_left: int,
              every_s: float) -> tuple[float, bool]:
  """Seconds the remaining epochs will take, their checkpoints included, and whether that is
  only an upper bound.

  compute_s: the seconds of the epochs run so far in this process (the first includes the
  compilation); save_s: the seconds of its checkpoint saves. An epoch is taken to cost the median
  of the epochs after the first; with only the first measured, its time bounds the others from
  above. Saves: one every `every_s` seconds of training (every epoch when 0), and the last, each
  costing the mean save so far (before the first: the first epoch's time, compilation included,
  which is more than an orbax save of a small state).
  """
  if epochs_left <= 0:
    return 0.0, False
  bound = len(compute_s) < 2
  epoch = compute_s[0] if bound else float(np.median(compute_s[1:]))
  training = epochs_left * epoch
  saves = epochs_left if every_s <= 0 else min(epochs_left, int(training // every_s) + 1)
  save = float(np.mean(save_s)) if save_s else compute_s[0]   # no save yet: the first epoch's
  return training + saves * save, bound


@dataclasses.dataclass
class Timer:
  """This call's epochs [start, epochs), their measured seconds and saves."""
  epochs: int
  start: int
  chunks_after: int = 0          # chunks still to train after this one, each as long
  every_s: float = 0.0           # checkpoint interval (0: every epoch)
  checkpoints: bool = True       # False: no checkpoint is saved, none counted in the time left
  compute_s: list = dataclasses.field(default_factory=list)
  save_s: list = dataclasses.field(default_factory=list)
  last_save: float = dataclasses.field(default_factory=time.perf_counter)

  def computed(self, seconds: float) -> float:
    self.compute_s.append(seconds)
    return seconds

  def save_due(self, done: bool) -> bool:
    return done or time.perf_counter() - self.last_save >= self.every_s

  def saved(self, seconds: float) -> float:
    self.save_s.append(seconds)
    self.last_save = time.perf_counter()
    return seconds

  def left(self) -> tuple[float, bool]:
    """Seconds left (this chunk's epochs and the chunks after it) and whether a bound only."""
    done = self.start + len(self.compute_s)
    save_s = self.save_s if self.checkpoints else [0.0]
    left, bound = time_left(self.compute_s, save_s, self.epochs - done, self.every_s)
    if self.chunks_after:
      left += self.chunks_after * time_left(self.compute_s, save_s, self.epochs - self.start,
                                            self.every_s)[0]
    return left, bound


def epoch_line(record: dict, epoch: int, timer: Timer, examples: float, saved: str, done: bool,
               active: int, num_models: int) -> str:
  """The progress line of an epoch: loss, accuracy (if computed), validation, speed, time left."""
  line = f"epoch {epoch}/{timer.epochs}  loss {np.mean(record['loss']):.4f}  "
  if np.isfinite(np.mean(record["accuracy"])):   # DP-SGD's step computes no accuracy
    line += f"accuracy {np.mean(record['accuracy']):.4f}  "
  if "val_accuracy" in record:
    line += f"val {np.mean(record['val_accuracy']):.4f}  active {active}/{num_models}  "
  left, bound = timer.left()
  if done and not timer.chunks_after:
    eta = "time left 0s"
  elif bound:      # the first epoch of this process compiled the step: no honest estimate yet
    eta = "time left ? (this epoch compiled the step)"
  else:
    eta = f"time left {left:.0f}s"
  return (line + f"{examples / timer.compute_s[-1]:,.0f} examples/s  {record['seconds']:.1f}s"
          + saved + "  " + eta)
