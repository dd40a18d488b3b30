"""Is a candidate model worse than the one in production? A paired bootstrap on the same rows.

For each task, both models' outcomes on the same eval rows are resampled together, and the
difference of their primary metrics (candidate minus production) is computed on every resample.
The candidate is worse on a task when the whole 95% interval of that difference lies below zero;
an interval that holds zero is a tie, which does not block a promotion.
"""

from __future__ import annotations

import numpy as np

from mtl.evaluation.intervals import bootstrap_counts, bootstrap_rows
from mtl.evaluation.outcomes import predicted_spans
from mtl.evaluation.run import EvalSet, Scorer
from mtl.metrics import report_from_span_counts, similarity_report, span_counts
from mtl.tasks import bio_spans


def _statistics(kind: str, rows: list[dict], outcomes: list[dict]) -> np.ndarray:
    """Per row, the sums its primary metric is made of: ``[right]`` or ``[tp, predicted, gold]``."""
    if kind == "classification":
        return np.array([[outcome["predicted"] == row["label"]] for row, outcome in zip(rows, outcomes)], dtype=float)
    totals = []
    for row, outcome in zip(rows, outcomes):
        counts = span_counts([bio_spans(row["tags"])], [predicted_spans(outcome)])
        totals.append([sum(values[column] for values in counts.values()) for column in range(3)])
    return np.array(totals, dtype=float).reshape(len(rows), 3)


def _primary(kind: str, totals: np.ndarray, rows: int) -> float:
    if kind == "classification":
        return float(totals[0]) / rows
    return report_from_span_counts({"all": [int(round(value)) for value in totals]})["f1"]


def compare(sets: dict[str, EvalSet], candidate: Scorer, production: Scorer, *, resamples: int = 1000,
            seed: int = 0) -> dict:
    """Per eval set: both primary metrics, their difference with its interval, and ``worse``."""
    requests = [(name, eval_set.spec.kind, eval_set.rows) for name, eval_set in sets.items()]
    results = {}
    for (name, kind, rows), new, old in zip(requests, candidate(requests), production(requests)):
        compared = _similarity if kind == "similarity" else _summed
        scores, interval = compared(kind, rows, new, old, resamples, seed)
        difference = scores["candidate"] - scores["production"]
        results[name] = {**scores, "difference": difference, "difference_ci": interval, "worse": interval[1] < 0}
    return results


def _summed(kind: str, rows: list[dict], new: list[dict], old: list[dict], resamples: int, seed: int):
    paired = np.stack([_statistics(kind, rows, new), _statistics(kind, rows, old)], axis=1)   # (rows, 2, sums)
    size = len(rows)

    def difference(totals: np.ndarray) -> dict:
        return {"difference": _primary(kind, totals[0], size) - _primary(kind, totals[1], size)}

    totals = paired.sum(axis=0)
    scores = {"candidate": _primary(kind, totals[0], size), "production": _primary(kind, totals[1], size)}
    return scores, bootstrap_counts(paired, difference, resamples=resamples, seed=seed)["difference"]


def _similarity(kind: str, rows: list[dict], new: list[dict], old: list[dict], resamples: int, seed: int):
    gold = np.array([row["score"] for row in rows])
    new_cosines, old_cosines = (np.array([outcome["cosine"] for outcome in outcomes]) for outcomes in (new, old))

    def spearman(cosines: np.ndarray, scores: np.ndarray) -> float:
        value = similarity_report(cosines.tolist(), scores.tolist())["spearman"]
        return 0.0 if np.isnan(value) else value

    def difference(first: np.ndarray, second: np.ndarray, scores: np.ndarray) -> dict:
        return {"difference": spearman(first, scores) - spearman(second, scores)}

    scores = {"candidate": spearman(new_cosines, gold), "production": spearman(old_cosines, gold)}
    interval = bootstrap_rows((new_cosines, old_cosines, gold), difference, resamples=resamples, seed=seed)
    return scores, interval["difference"]
