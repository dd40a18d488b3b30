"""A task's metrics from its rows and outcomes, each number with its 95% bootstrap interval.

A metric ``m`` gets its interval as ``m_ci: [low, high]`` beside it, at every level of the report
(``accuracy_ci``, ``per_class.<label>.f1_ci``, ``per_type.<type>.f1_ci``, ``spearman_ci``).
"""

from __future__ import annotations

import numpy as np

from mtl.errors import DataError
from mtl.evaluation.intervals import bootstrap_cells, bootstrap_counts, bootstrap_rows
from mtl.evaluation.outcomes import predicted_spans
from mtl.metrics import PRIMARY_METRIC, report_from_confusion, report_from_span_counts, similarity_report, span_counts
from mtl.tasks import TaskSpec, bio_spans

_SCORES = ("precision", "recall", "f1")


def task_metrics(spec: TaskSpec, rows: list[dict], outcomes: list[dict], *, resamples: int, seed: int) -> dict:
    """The task's report (as training reports it) with ``kind``, ``examples``, ``primary`` and intervals."""
    scorer = {"classification": _classification, "tagging": _tagging, "similarity": _similarity}[spec.kind]
    report, intervals = scorer(spec, rows, outcomes, resamples, seed)
    primary = PRIMARY_METRIC[spec.kind]
    report.update(kind=spec.kind, examples=len(rows), primary=report[primary])
    if intervals:
        _attach(report, intervals)
        report["primary_ci"] = report[f"{primary}_ci"]
    return report


def _attach(report: dict, intervals: dict) -> None:
    for key, interval in intervals.items():
        if isinstance(interval, dict):
            _attach(report[key], interval)
        else:
            report[f"{key}_ci"] = interval


def _classification(spec: TaskSpec, rows: list[dict], outcomes: list[dict], resamples: int, seed: int):
    labels = list(spec.labels)
    size = len(labels)
    gold = np.array([spec.label_id(row["label"], row.get("origin", "")) for row in rows], dtype=np.int64)
    predicted = np.array([spec.label_ids[outcome["predicted"]] for outcome in outcomes], dtype=np.int64)
    cells = gold * size + predicted
    report = report_from_confusion(np.bincount(cells, minlength=size * size).reshape(size, size), labels)

    def scalars(counts: np.ndarray) -> dict:
        scored = report_from_confusion(counts.reshape(size, size), labels)
        return {**{name: scored[name] for name in ("accuracy", "macro_precision", "macro_recall", "macro_f1")},
                "per_class": {label: {name: scored["per_class"][label][name] for name in _SCORES}
                              for label in labels}}

    intervals = bootstrap_cells(cells, size * size, scalars, resamples=resamples, seed=seed) if resamples else {}
    return report, intervals


def _tagging(spec: TaskSpec, rows: list[dict], outcomes: list[dict], resamples: int, seed: int):
    gold = [bio_spans(row["tags"]) for row in rows]
    predicted = [predicted_spans(outcome) for outcome in outcomes]
    report = report_from_span_counts(span_counts(gold, predicted))
    types = sorted(report["per_type"])
    # per sentence and entity type: [true positives, predicted, gold]
    per_sentence = np.zeros((len(rows), len(types), 3), dtype=np.int64)
    for index, (gold_spans, predicted_spans_) in enumerate(zip(gold, predicted)):
        for kind, values in span_counts([gold_spans], [predicted_spans_]).items():
            per_sentence[index, types.index(kind)] = values

    def scalars(totals: np.ndarray) -> dict:
        scored = report_from_span_counts({kind: totals[position].tolist() for position, kind in enumerate(types)})
        return {**{name: scored[name] for name in _SCORES},
                "per_type": {kind: {name: scored["per_type"][kind][name] for name in _SCORES} for kind in types}}

    intervals = bootstrap_counts(per_sentence, scalars, resamples=resamples, seed=seed) if resamples else {}
    return report, intervals


def _similarity(spec: TaskSpec, rows: list[dict], outcomes: list[dict], resamples: int, seed: int):
    if any("score" not in row for row in rows):
        raise DataError(f"task '{spec.name}': similarity is scored on pairs with a score; set score_column")
    cosines = np.array([outcome["cosine"] for outcome in outcomes])
    scores = np.array([row["score"] for row in rows])
    report = similarity_report(cosines.tolist(), scores.tolist())

    def scalars(first: np.ndarray, second: np.ndarray) -> dict:
        scored = similarity_report(first.tolist(), second.tolist())
        return {name: 0.0 if np.isnan(scored[name]) else scored[name] for name in ("spearman", "pearson")}

    intervals = bootstrap_rows((cosines, scores), scalars, resamples=resamples, seed=seed) if resamples else {}
    return report, intervals
