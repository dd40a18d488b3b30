"""Scoring a model folder on labeled data: per-example outcomes, metrics with bootstrap intervals,
error analysis, robustness to perturbed input, k-fold cross-validation, and the report files.

``outcomes`` is the one place that turns the Predictor's answers into what evaluation scores; the
evaluation during training (``mtl.train.validation``) sums the same outcomes into counts.
"""
