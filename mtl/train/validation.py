"""Evaluation on held-out data through the Predictor, the same path that labeling and serving use.

Scoring goes through counts (a confusion matrix per classification task, true positives, predicted
and gold spans per entity type per tagging task, the cosine and gold score of every pair of a
similarity task), because counts of disjoint shares of the data add up to the counts of the whole:
each training worker scores its share, the counts are summed, and the metrics come out exactly as
if one worker had scored everything.

The rows under ``EMBEDDING_METRICS`` (the config's ``embedding_eval``) are scored pairs that measure
the sentence embedding; their report is ``embedding``, apart from the tasks and from ``combined``.
"""

from __future__ import annotations

from statistics import mean

import numpy as np

from mtl.config import EMBEDDING_METRICS
from mtl.evaluation.outcomes import predict_outcomes, predicted_spans
from mtl.inference.predictor import Predictor
from mtl.metrics import (
    PRIMARY_METRIC,
    confusion_matrix,
    report_from_confusion,
    report_from_span_counts,
    similarity_report,
    span_counts,
)
from mtl.tasks import TaskSpec, bio_spans


def evaluate(predictor: Predictor, eval_rows: dict[str, list[dict]]) -> dict:
    """Per-task reports and ``combined``: the mean of each task's primary metric (accuracy for
    classification, entity span F1 for tagging, Spearman for similarity); ``embedding`` too when
    ``eval_rows`` has ``EMBEDDING_METRICS`` rows."""
    return reports_from_counts(evaluation_counts(predictor, eval_rows), predictor.task_specs)


def evaluation_counts(predictor: Predictor, eval_rows: dict[str, list[dict]]) -> dict[str, dict]:
    """Per task, the counts its metrics are made of, over ``eval_rows``."""
    counts = {}
    for task, rows in eval_rows.items():
        kind = "similarity" if task == EMBEDDING_METRICS else predictor.task_specs[task].kind
        outcomes = predict_outcomes(predictor, task, kind, rows)
        if kind == "similarity":
            counts[task] = {"pairs": [[outcome["cosine"], row["score"]] for row, outcome in zip(rows, outcomes)]}
        elif kind == "classification":
            matrix = confusion_matrix([row["label"] for row in rows], [outcome["predicted"] for outcome in outcomes],
                                      list(predictor.specs[task].labels))
            counts[task] = {"confusion": matrix.tolist()}
        else:
            counts[task] = {"spans": span_counts([bio_spans(row["tags"]) for row in rows],
                                                 [predicted_spans(outcome) for outcome in outcomes])}
    return counts


def add_counts(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """The counts of the union of disjoint shares of the eval data."""
    total: dict[str, dict] = {}
    for part in parts:
        for task, counts in part.items():
            if "pairs" in counts:
                total.setdefault(task, {"pairs": []})["pairs"].extend(counts["pairs"])
            elif "confusion" in counts:
                previous = total.get(task, {"confusion": np.zeros_like(counts["confusion"]).tolist()})["confusion"]
                total[task] = {"confusion": (np.asarray(previous) + np.asarray(counts["confusion"])).tolist()}
            else:
                spans = total.setdefault(task, {"spans": {}})["spans"]
                for kind, values in counts["spans"].items():
                    spans[kind] = [a + b for a, b in zip(spans.get(kind, [0, 0, 0]), values)]
    return total


def reports_from_counts(counts: dict[str, dict], specs: dict[str, TaskSpec]) -> dict:
    reports = {}
    for task, task_counts in counts.items():
        if "pairs" in task_counts:
            pairs = np.asarray(task_counts["pairs"], dtype=float).reshape(-1, 2)
            reports[task] = similarity_report(pairs[:, 0].tolist(), pairs[:, 1].tolist())
            kind = "similarity"
        elif "confusion" in task_counts:
            reports[task] = report_from_confusion(np.asarray(task_counts["confusion"]), list(specs[task].labels))
            kind = "classification"
        else:
            reports[task] = report_from_span_counts(task_counts["spans"])
            kind = "tagging"
        reports[task]["primary"] = reports[task][PRIMARY_METRIC[kind]]
    embedding = reports.pop(EMBEDDING_METRICS, None)
    results = {"tasks": reports, "combined": mean(report["primary"] for report in reports.values()) if reports else 0.0}
    return results if embedding is None else {**results, "embedding": embedding}
