"""Post-hoc defenses: a registry of name -> fn(logits [M, N, Q, C], labels [N], keep [M, N],
**params) -> logits' [M, N, Q, C], applied to the models' outputs before any attack sees them.

Each model's defense may read only that model's own training data (keep[m]): the defender
knows what it trained on, never anything about the other models.
"""

from typing import Callable

from mia_jax.defenses import logit_reweighting
from mia_jax.errors import ConfigError

POST_HOC: dict[str, Callable] = {
    "logit_reweighting": logit_reweighting.defend,
}


def names() -> list[str]:
  return sorted(POST_HOC)


def get(name: str) -> Callable:
  if name not in POST_HOC:
    raise ConfigError(f"unknown post-hoc defense {name!r}; choose one of {names()}")
  return POST_HOC[name]


def register(name: str, fn: Callable) -> None:
  POST_HOC[name] = fn
