"""Scripts that reproduce the tables and figures, and the benchmarks; run each from the
repository root as `python -m experiments.NAME --flags` (they import one another as
`experiments.NAME`, without editing sys.path)."""
