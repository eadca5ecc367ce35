"""Per-example analysis of who leaks: vulnerability, outlier scores and their relation,
embeddings (penultimate features, t-SNE), Grad-CAM saliency and the figures."""
