"""Defenses: post-hoc ones applied to the models' outputs before any attack sees them (a
registry of name -> fn(logits [M, N, Q, C], labels [N], keep [M, N], **params) -> logits'
[M, N, Q, C]; the pipeline's `defense.post_hoc` stage), and model-level ones (ensembles of
disjoint or bagged sub-models, SISA unlearning) that experiments/paper_defenses.py trains.

Each model's post-hoc defense may read only that model's own training data (keep[m]): the
defender knows what it trained on, never anything about the other models.
"""

from mia_jax.defenses import ensemble_defense, logit_reweighting, post_hoc, unlearning
from mia_jax.defenses.post_hoc import POST_HOC, get, names, register

__all__ = ["POST_HOC", "ensemble_defense", "get", "logit_reweighting", "names", "post_hoc",
           "register", "unlearning"]
