"""Evaluation on held-out data through the Predictor, the same path that labeling and serving use."""

from __future__ import annotations

from statistics import mean

from mtl.errors import DataError
from mtl.metrics import PRIMARY_METRIC, classification_report, span_report
from mtl.predict import Predictor
from mtl.tasks import bio_spans


def evaluate(predictor: Predictor, eval_rows: dict[str, list[dict]]) -> dict:
    """Per-task reports and ``combined``: the mean of each task's primary metric
    (accuracy for classification, entity span F1 for tagging)."""
    reports = {}
    for task, rows in eval_rows.items():
        spec = predictor.specs[task]
        if spec.kind == "classification":
            predictions = predictor.predict([row["text"] for row in rows], tasks=[task], embeddings=False)
        else:
            predictions = predictor.predict(words=[row["tokens"] for row in rows], tasks=[task], embeddings=False)
        for row, prediction in zip(rows, predictions):
            if prediction.error:
                raise DataError(f"{row.get('origin', '?')}: task '{task}': cannot evaluate: {prediction.error}")
        if spec.kind == "classification":
            reports[task] = classification_report([row["label"] for row in rows],
                                                  [p.labels[task].label for p in predictions], list(spec.labels))
        else:
            reports[task] = span_report([bio_spans(row["tags"]) for row in rows],
                                        [[(e.start, e.end, e.label) for e in p.entities[task]] for p in predictions])
        reports[task]["primary"] = reports[task][PRIMARY_METRIC[spec.kind]]
    return {"tasks": reports, "combined": mean(report["primary"] for report in reports.values()) if reports else 0.0}
