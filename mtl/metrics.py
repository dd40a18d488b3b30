"""Evaluation metrics: classification scores, confusion matrix, exact-span entity F1, and the
rank correlation of embedding cosines with human similarity scores (STS).

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
    return report_from_confusion(confusion_matrix(gold, predicted, labels), labels)


def report_from_confusion(matrix: np.ndarray, labels: list[str]) -> dict:
    """``classification_report`` from a confusion matrix: confusion matrices of disjoint parts of the
    data add up to the whole's, so workers that each score a share combine exactly."""
    matrix = np.asarray(matrix)
    per_class = {
        label: _prf(int(matrix[i, i]), int(matrix[:, i].sum()), int(matrix[i, :].sum()))
        for i, label in enumerate(labels)
    }
    present = [label for i, label in enumerate(labels) if matrix[i, :].sum() or matrix[:, i].sum()]
    macro = {name: float(np.mean([per_class[label][name] for label in present])) if present else 0.0
             for name in ("precision", "recall", "f1")}
    return {
        "accuracy": _safe_div(int(np.trace(matrix)), int(matrix.sum())),
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
    return report_from_span_counts(span_counts(gold, predicted))


def span_counts(gold: list[list[tuple[int, int, str]]],
                predicted: list[list[tuple[int, int, str]]]) -> dict[str, list[int]]:
    """Per entity type: ``[true positives, predicted, gold]``; counts of disjoint parts add up."""
    counts: dict[str, list[int]] = {}
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        gold_spans, predicted_spans = set(gold_spans), set(predicted_spans)
        for column, spans in enumerate((gold_spans & predicted_spans, predicted_spans, gold_spans)):
            for span in spans:
                counts.setdefault(span[2], [0, 0, 0])[column] += 1
    return counts


def report_from_span_counts(counts: dict[str, list[int]]) -> dict:
    """``span_report`` from per-type ``[true positives, predicted, gold]`` counts."""
    true_positives = Counter({kind: value[0] for kind, value in counts.items()})
    predicted_counts = Counter({kind: value[1] for kind, value in counts.items()})
    gold_counts = Counter({kind: value[2] for kind, value in counts.items()})
    overall = _prf(sum(true_positives.values()), sum(predicted_counts.values()), sum(gold_counts.values()))
    return {
        **overall,
        "per_type": {kind: _prf(true_positives[kind], predicted_counts[kind], gold_counts[kind])
                     for kind in sorted(gold_counts | predicted_counts)},
    }


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine between each row of ``a`` and the same row of ``b``: how far one backend's,
    precision's or device's embeddings are from another's for the same texts."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def similarity_report(cosines: list[float], gold: list[float]) -> dict:
    """Spearman (the STS benchmarks' measure) and Pearson correlation of cosines with gold scores."""
    if len(cosines) < 2:
        return {"spearman": 0.0, "pearson": 0.0, "pairs": len(cosines)}
    # imported here, not above: scipy.stats takes 1.2 s to import, and every training worker and
    # job driver imports this module whether or not a run has a similarity task
    from scipy import stats

    return {"spearman": float(stats.spearmanr(cosines, gold).statistic),
            "pearson": float(stats.pearsonr(cosines, gold).statistic), "pairs": len(cosines)}


def evaluation_reports(evaluation: dict) -> dict[str, dict]:
    """An evaluation's task reports, and the embedding's (``embedding_eval``) under ``embedding``."""
    embedding = {"embedding": evaluation["embedding"]} if "embedding" in evaluation else {}
    return {**evaluation.get("tasks", {}), **embedding}


PRIMARY_METRIC = {"classification": "accuracy", "tagging": "f1", "similarity": "spearman"}
# what a report or model card shows of each kind's metrics, the primary one first
HEADLINE_METRICS = {"classification": ("accuracy", "macro_f1"), "tagging": ("f1", "precision", "recall"),
                    "similarity": ("spearman", "pearson")}
