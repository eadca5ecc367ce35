"""Per-example analysis of who leaks: vulnerability, outlier scores and their relation,
embeddings (penultimate features, t-SNE), Grad-CAM saliency, the figures, and the tests of
claims with their verdicts under Holm.

Modules:
  vulnerability   flags at a target's FPR threshold [T, N], their precision against chance,
                  per-example leakage IN vs OUT, permutation tests of covariates
  outliers        outlier scores [N] (class centroid, kNN, LOF, border; from reference models)
  leakage         `study`: the study's outlier claims tested over many targets (and its report,
                  leakage_report)
  stage           the pipeline's analysis stage (`analysis.enabled`; experiments/vulnerability.py)
  study           the analysis of one target (experiments/paper_table.py)
  significance    paired / Welch / sign-flip / TOST tests, the no-leak permutation null, Holm
  embeddings, gradcam, plots
"""

from mia_jax.analysis import (embeddings, gradcam, leakage, leakage_report, outliers, plots,
                              significance, stage, study, vulnerability)
from mia_jax.analysis.leakage import study as leakage_study
from mia_jax.analysis.significance import decide, leak_test
from mia_jax.analysis.vulnerability import example_leakage, flag_matrix, permutation_tests

__all__ = ["decide", "embeddings", "example_leakage", "flag_matrix", "gradcam", "leak_test",
           "leakage", "leakage_report", "leakage_study", "outliers", "permutation_tests",
           "plots", "significance", "stage", "study", "vulnerability"]
