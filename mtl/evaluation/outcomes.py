"""What the model answered for each labeled example, in a form every metric is computed from.

- classification: ``{"predicted": label, "confidence": its probability}``
- tagging: ``{"predicted": [[start, end, type, score], ...]}``: entity spans over the row's words
- similarity: ``{"cosine": cosine of the two sentences' embeddings}``

Outcomes are plain JSON-ready values, so that they travel from Ray Data actors to the driver as
they are; the gold answer stays in the row.
"""

from __future__ import annotations

import numpy as np

from mtl.errors import DataError
from mtl.inference.predictor import Predictor
from mtl.tasks import TaskKind


def predict_outcomes(predictor: Predictor, task: str, kind: TaskKind, rows: list[dict]) -> list[dict]:
    """One outcome per row, in order. ``task`` names the head (unused for similarity, which scores
    the embedding). An example the model cannot take (empty text) is a DataError naming its origin:
    a metric silently computed over fewer examples would not be the metric of the data."""
    if kind == "similarity":
        return [{"cosine": cosine} for cosine in _pair_cosines(predictor, rows)]
    if kind == "classification":
        predictions = predictor.predict([row["text"] for row in rows], tasks=[task], embeddings=False)
    else:
        predictions = predictor.predict(words=[row["tokens"] for row in rows], tasks=[task], embeddings=False)
    for row, prediction in zip(rows, predictions):
        if prediction.error:
            raise DataError(f"{row.get('origin', '?')}: task '{task}': cannot evaluate: {prediction.error}")
    if kind == "classification":
        return [{"predicted": p.labels[task].label, "confidence": p.labels[task].score} for p in predictions]
    return [{"predicted": [[e.start, e.end, e.label, e.score] for e in p.entities[task]]} for p in predictions]


def predicted_spans(outcome: dict) -> list[tuple[int, int, str]]:
    """A tagging outcome's entities as ``(start, end, type)`` word spans."""
    return [(start, end, kind) for start, end, kind, _ in outcome["predicted"]]


def _pair_cosines(predictor: Predictor, rows: list[dict]) -> list[float]:
    """The cosine of every pair's two embeddings (each distinct sentence embedded once), rounded to
    6 places, about float32's precision, so that pairs of equal cosine tie in a ranking whatever
    order the sums ran in."""
    sentences = list(dict.fromkeys(text for row in rows for text in (row["text"], row["pair"])))
    vectors = {}
    for text, prediction in zip(sentences, predictor.embed(sentences)):
        if prediction.error:
            raise DataError(f"cannot embed {text[:40]!r}: {prediction.error}")
        vector = prediction.embedding.astype(np.float64)
        vectors[text] = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return [round(float(vectors[row["text"]] @ vectors[row["pair"]]), 6) for row in rows]
