"""Error analysis: where a task goes wrong, with the examples to look at.

- classification: the most confident mistakes, and the class pairs confused most often;
- tagging: each entity error put in one bin: ``type`` (right words, wrong type), ``boundary``
  (right type, overlapping but different words), ``boundary_and_type`` (overlapping, both wrong),
  ``missed`` (no prediction touches a gold entity) and ``spurious`` (a prediction touching no
  gold entity, or a second one on an entity already answered);
- similarity: the pairs whose cosine ranks farthest from their gold score's rank.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from mtl.evaluation.outcomes import predicted_spans
from mtl.tasks import bio_spans

ENTITY_ERRORS = ("type", "boundary", "boundary_and_type", "missed", "spurious")


def error_analysis(kind: str, report: dict, rows: list[dict], outcomes: list[dict], *, shown: int) -> dict:
    """The error analysis of one task: counts and up to ``shown`` examples per list."""
    if kind == "classification":
        return {"confident_mistakes": confident_mistakes(rows, outcomes, shown),
                "confused_pairs": confused_pairs(report["confusion_matrix"], report["labels"], shown)}
    if kind == "tagging":
        return entity_errors(rows, outcomes, shown)
    return {"largest_disagreements": largest_disagreements(rows, outcomes, shown)}


def confident_mistakes(rows: list[dict], outcomes: list[dict], shown: int) -> list[dict]:
    """Wrong answers, most confident first."""
    wrong = [(outcome["confidence"], row, outcome) for row, outcome in zip(rows, outcomes)
             if outcome["predicted"] != row["label"]]
    wrong.sort(key=lambda item: -item[0])
    return [{"text": row["text"], "gold": row["label"], "predicted": outcome["predicted"],
             "confidence": confidence, "origin": row.get("origin")} for confidence, row, outcome in wrong[:shown]]


def confused_pairs(matrix: list[list[int]], labels: list[str], shown: int) -> list[dict]:
    """``(gold, predicted)`` pairs of different labels by how often they happened, most first."""
    pairs = [{"gold": labels[row], "predicted": labels[column], "count": int(count)}
             for row, counts in enumerate(matrix) for column, count in enumerate(counts)
             if row != column and count]
    return sorted(pairs, key=lambda pair: -pair["count"])[:shown]


def _overlaps(first: tuple, second: tuple) -> bool:
    return first[0] < second[1] and second[0] < first[1]


def classify_entity_errors(gold: list[tuple[int, int, str]],
                           predicted: list[tuple[int, int, str]]) -> list[tuple[str, tuple | None, tuple | None]]:
    """One sentence's errors as ``(bin, gold span, predicted span)``; exact matches are not errors.

    Each gold entity takes at most one predicted span, preferring the same words, then the same type.
    """
    unmatched_gold = [span for span in gold if span not in predicted]
    unmatched = [span for span in predicted if span not in gold]
    errors = []
    for span in unmatched_gold:
        touching = [other for other in unmatched if _overlaps(span, other)]
        same_words = [other for other in touching if other[:2] == span[:2]]
        same_type = [other for other in touching if other[2] == span[2]]
        if same_words:
            errors.append(("type", span, same_words[0]))
        elif same_type:
            errors.append(("boundary", span, same_type[0]))
        elif touching:
            errors.append(("boundary_and_type", span, touching[0]))
        else:
            errors.append(("missed", span, None))
            continue
        unmatched.remove(errors[-1][2])
    errors += [("spurious", None, span) for span in unmatched]
    return errors


def entity_errors(rows: list[dict], outcomes: list[dict], shown: int) -> dict:
    """Counts per bin, and per bin the first ``shown`` errors with their sentence (most confident
    prediction first where there is one)."""
    counts = dict.fromkeys(ENTITY_ERRORS, 0)
    examples: dict[str, list] = {name: [] for name in ENTITY_ERRORS}
    for row, outcome in zip(rows, outcomes):
        scores = {tuple(entity[:3]): entity[3] for entity in outcome["predicted"]}
        for name, gold, predicted in classify_entity_errors(bio_spans(row["tags"]), predicted_spans(outcome)):
            counts[name] += 1
            tokens = row["tokens"]
            examples[name].append({"sentence": " ".join(tokens), "origin": row.get("origin"),
                                   "gold": _describe(tokens, gold), "predicted": _describe(tokens, predicted),
                                   "score": scores.get(predicted) if predicted else None})
    for name in ENTITY_ERRORS:
        examples[name].sort(key=lambda example: -(example["score"] or 0.0))
        examples[name] = examples[name][:shown]
    return {"entity_errors": counts, "entity_error_examples": examples}


def _describe(tokens: list[str], span: tuple | None) -> str | None:
    return None if span is None else f"{' '.join(tokens[span[0]:span[1]])} ({span[2]})"


def largest_disagreements(rows: list[dict], outcomes: list[dict], shown: int) -> list[dict]:
    """Pairs whose cosine's rank (as a share of the pairs) is farthest from their gold score's."""
    if len(rows) < 2:
        return []
    cosine_rank = stats.rankdata([outcome["cosine"] for outcome in outcomes]) / len(rows)
    score_rank = stats.rankdata([row["score"] for row in rows]) / len(rows)
    order = np.argsort(-np.abs(cosine_rank - score_rank), kind="stable")[:shown]
    return [{"text": rows[i]["text"], "pair": rows[i]["pair"], "score": rows[i]["score"],
             "cosine": outcomes[i]["cosine"], "origin": rows[i].get("origin")} for i in order]
