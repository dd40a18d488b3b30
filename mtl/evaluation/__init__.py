"""Scoring a model folder on labeled data: per-example outcomes, metrics with bootstrap intervals,
error analysis, robustness to perturbed input, comparison of two models, and the report files and
plots. k-fold cross-validation trains, so it lives in ``mtl.train.cross_validation``.

``outcomes`` is the one place that turns the Predictor's answers into what evaluation scores; the
evaluation during training (``mtl.train.validation``) sums the same outcomes into counts.
"""
