"""Curriculum learning: easy examples first (Bengio et al. 2009; pacing as in Hacohen &
Weinshall 2019 and Platanios et al. 2019).

  difficulty                per-example difficulty [N] from a reference model's logits [N, C]
  reference_difficulty      that, with the reference model trained here on held-out data
  pacing_schedule           the fraction of the easiest examples open at each epoch [E]
  schedule_for              the schedule of a config's train.curriculum block
  open_keep                 each model's easiest kept examples at an open fraction

As a training option: train.curriculum.enabled, and from_config.train_from_config(...,
difficulty=d) draws every epoch's batches with samplers.CurriculumSampler (difficulty from
from_config.reference_difficulty). The pipeline (and experiments/
paper_table.py) score difficulty with a reference model trained on the validation split, which
is held out from every model: the ordering then carries no membership of its own, and an
attacker who knows the defense (shadow models trained with it) can rebuild the same ordering.

Each model draws only from its own kept examples, and of those only the easiest
ceil(fraction * its count) (ties broken by pool index), so every model follows the same
curriculum over its own data. The number of steps S is that of the FULL keep matrix at every
epoch, so a jitted epoch compiles once; steps past a model's real batches are padding (mask 0,
which leaves a non-DP model's state untouched).
"""

import ml_collections
import numpy as np

from mia_jax.errors import ConfigError

DIFFICULTIES = ("loss", "confidence")
PACINGS = ("linear", "root", "step")


def difficulty(logits: np.ndarray, labels: np.ndarray, by: str = "loss") -> np.ndarray:
  """Difficulty float64 [N] of each example (higher = harder) from a reference model's logits
  [N, C] and labels [N]: its cross-entropy ('loss') or 1 - p_y ('confidence')."""
  z = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  if z.ndim != 2 or labels.shape != z.shape[:1]:
    raise ConfigError(f"difficulty needs logits [N, C] and labels [N], got {z.shape} and "
                      f"{labels.shape}; take one model and one query, e.g. logits[m, :, 0]")
  z = z - z.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  log_py = np.take_along_axis(log_p, labels[:, None].astype(np.int64), -1)[:, 0]
  if by == "loss":
    return -log_py
  if by == "confidence":
    return 1.0 - np.exp(log_py)
  raise ConfigError(f"unknown difficulty {by!r}; choose one of {list(DIFFICULTIES)}")


def pacing_schedule(kind: str, epochs: int, start: float = 0.2, num_steps: int = 4
                    ) -> np.ndarray:
  """Fraction float64 [E] of the easiest examples open at each epoch: `start` at epoch 0, 1 at
  the last, non-decreasing; with t = epoch / (E - 1):

    linear  start + (1 - start) t
    root    sqrt(start^2 + (1 - start^2) t)       (Platanios et al. 2019)
    step    start + (1 - start) floor(t num_steps) / num_steps   (num_steps + 1 levels)
  """
  if epochs < 1 or not 0.0 < start <= 1.0 or num_steps < 1:
    raise ConfigError(f"pacing needs epochs >= 1, 0 < start <= 1 and num_steps >= 1, got "
                      f"{epochs}, {start}, {num_steps}; e.g. start=0.2, num_steps=4")
  t = np.arange(epochs) / max(epochs - 1, 1)
  if epochs == 1:
    t = np.ones(1)
  if kind == "linear":
    frac = start + (1.0 - start) * t
  elif kind == "root":
    frac = np.sqrt(start ** 2 + (1.0 - start ** 2) * t)
  elif kind == "step":
    frac = start + (1.0 - start) * np.floor(t * num_steps + 1e-9) / num_steps
  else:
    raise ConfigError(f"unknown pacing {kind!r}; choose one of {list(PACINGS)}")
  return np.clip(frac, start, 1.0)


def schedule_for(cfg: ml_collections.ConfigDict, epochs: int) -> np.ndarray:
  """The open fraction [epochs] of a train.curriculum block: cfg.pacing from cfg.start over
  cfg.ramp_epochs epochs (0: train.epochs), then every example; cut to `epochs`."""
  ramp = int(cfg.get("ramp_epochs", 0))
  ramp = epochs if ramp <= 0 else ramp
  frac = pacing_schedule(str(cfg.pacing), ramp, float(cfg.start), int(cfg.get("num_steps", 4)))
  return np.concatenate([frac, np.ones(max(0, epochs - ramp))])[:epochs]


def validate(cfg: ml_collections.ConfigDict) -> None:
  """ConfigError unless a train.curriculum block is well formed."""
  if cfg.difficulty not in DIFFICULTIES:
    raise ConfigError(f"unknown train.curriculum.difficulty {cfg.difficulty!r}; choose one of "
                      f"{list(DIFFICULTIES)}")
  if cfg.pacing not in PACINGS:
    raise ConfigError(f"unknown train.curriculum.pacing {cfg.pacing!r}; choose one of "
                      f"{list(PACINGS)}")
  if not 0.0 < float(cfg.start) <= 1.0:
    raise ConfigError(f"train.curriculum.start={cfg.start} must lie in (0, 1]; e.g. 0.2")
  if int(cfg.get("reference_epochs", 1)) < 1:
    raise ConfigError("train.curriculum.reference_epochs must be >= 1")


def open_keep(keep: np.ndarray, difficulty_: np.ndarray, fraction: float) -> np.ndarray:
  """keep bool [M, N] restricted, per model, to its easiest ceil(fraction * count) kept
  examples (difficulty [N], ties by pool index); a model with any example keeps one or more."""
  keep = np.asarray(keep, bool)
  if difficulty_.shape != keep.shape[1:]:
    raise ConfigError(f"difficulty must be [N]=[{keep.shape[1]}], got {difficulty_.shape}")
  if not 0.0 < fraction <= 1.0:
    raise ConfigError(f"curriculum fraction {fraction} must lie in (0, 1]; check the pacing")
  order = np.argsort(difficulty_, kind="stable")              # easiest first
  out = np.zeros_like(keep)
  for m in range(keep.shape[0]):
    own = order[keep[m, order]]
    out[m, own[:int(np.ceil(fraction * len(own) - 1e-9))]] = True
  return out
