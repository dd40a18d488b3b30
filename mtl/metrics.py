"""Evaluation metrics: classification scores, confusion matrix, and exact-span entity F1.

Entity scoring follows conlleval and seqeval's default mode (see ``mtl.tasks.bio_spans``): an entity
counts only when its start, end and type all match.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from mtl.tasks import bio_spans


def _safe_div(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0


def _prf(true_positives: int, predicted: int, gold: int) -> dict[str, float]:
    precision, recall = _safe_div(true_positives, predicted), _safe_div(true_positives, gold)
    return {"precision": precision, "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall), "support": gold}


def confusion_matrix(gold: list[str], predicted: list[str], labels: list[str]) -> np.ndarray:
    """``(labels, labels)`` counts; row = gold label, column = predicted label."""
    index = {label: position for position, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for gold_label, predicted_label in zip(gold, predicted, strict=True):
        matrix[index[gold_label], index[predicted_label]] += 1
    return matrix


def classification_report(gold: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    Macro averages run over the classes that occur in gold or predictions, as scikit-learn does.
    """
    matrix = confusion_matrix(gold, predicted, labels)
    per_class = {
        label: _prf(int(matrix[i, i]), int(matrix[:, i].sum()), int(matrix[i, :].sum()))
        for i, label in enumerate(labels)
    }
    present = [label for i, label in enumerate(labels) if matrix[i, :].sum() or matrix[:, i].sum()]
    macro = {name: float(np.mean([per_class[label][name] for label in present])) if present else 0.0
             for name in ("precision", "recall", "f1")}
    return {
        "accuracy": _safe_div(int(np.trace(matrix)), len(gold)),
        "macro_precision": macro["precision"], "macro_recall": macro["recall"], "macro_f1": macro["f1"],
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": matrix.tolist(),
    }


def entity_report(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Micro precision/recall/F1 over exact entity spans of BIO tag sequences, and per entity type."""
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"a sentence has {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
    return span_report([bio_spans(tags) for tags in gold], [bio_spans(tags) for tags in predicted])


def span_report(gold: list[list[tuple[int, int, str]]], predicted: list[list[tuple[int, int, str]]]) -> dict:
    """Micro precision/recall/F1 over exact ``(start, end, type)`` spans, sentence by sentence."""
    true_positives, gold_counts, predicted_counts = Counter(), Counter(), Counter()
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        gold_spans, predicted_spans = set(gold_spans), set(predicted_spans)
        gold_counts.update(span[2] for span in gold_spans)
        predicted_counts.update(span[2] for span in predicted_spans)
        true_positives.update(span[2] for span in gold_spans & predicted_spans)
    overall = _prf(sum(true_positives.values()), sum(predicted_counts.values()), sum(gold_counts.values()))
    return {
        **overall,
        "per_type": {kind: _prf(true_positives[kind], predicted_counts[kind], gold_counts[kind])
                     for kind in sorted(gold_counts | predicted_counts)},
    }


PRIMARY_METRIC = {"classification": "accuracy", "tagging": "f1"}
