"""A model folder's reference statistics (``reference.json``): what the trained model answers on a
sample of held-out texts (the length of the texts, the labels it predicts for each task, the mean
and spread of the embedding). Training stores them; an endpoint's drift scores
(``mtl.serving.drift``) compare what it serves against them, like with like.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mtl import storage

REFERENCE_FILE = "reference.json"
LENGTH_BINS = 10
NO_ENTITY = "(none)"   # a tagged text with no entity: counted, so that losing every entity shows as drift


@dataclass(frozen=True)
class Reference:
    """What the model answered on a sample of familiar (held-out) texts."""

    texts: int
    length_edges: list[float]              # inner edges of the length bins, in characters
    length_shares: list[float]             # share of the reference texts in each bin
    labels: dict[str, dict[str, float]]    # task -> label (an entity type, for tagging) -> share
    embedding_mean: list[float]
    embedding_spread: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Reference:
        return cls(**data)


def predicted_labels(prediction) -> dict[str, list[str]]:
    """The labels of one ``Prediction`` per task: its class, or the types of its entities."""
    labels = {task: [label.label] for task, label in prediction.labels.items()}
    for task, spans in prediction.entities.items():
        labels[task] = [span.label for span in spans] or [NO_ENTITY]
    return labels


def reference_statistics(texts: Sequence[str], predictions: Sequence) -> Reference:
    """The reference of ``texts`` as ``predictions`` (``Predictor.predict`` of them) answer them."""
    answered = [(text, prediction) for text, prediction in zip(texts, predictions) if prediction.error is None]
    if not answered:
        raise ValueError("reference statistics need at least one text the model could answer")
    lengths = np.array([len(text) for text, _ in answered], dtype=float)
    edges = sorted(set(np.quantile(lengths, np.linspace(0, 1, LENGTH_BINS + 1)[1:-1]).round(1).tolist()))
    counts: dict[str, dict[str, int]] = {}
    for _, prediction in answered:
        for task, labels in predicted_labels(prediction).items():
            for label in labels:
                counts.setdefault(task, {}).setdefault(label, 0)
                counts[task][label] += 1
    embeddings = np.stack([prediction.embedding for _, prediction in answered]).astype(np.float64)
    mean = embeddings.mean(axis=0)
    spread = float(np.sqrt(((embeddings - mean) ** 2).sum(axis=1).mean()))
    return Reference(texts=len(answered), length_edges=edges,
                     length_shares=_shares(np.bincount(np.searchsorted(edges, lengths, side="right"),
                                                       minlength=len(edges) + 1)),
                     labels={task: _label_shares(task_counts) for task, task_counts in counts.items()},
                     embedding_mean=mean.tolist(), embedding_spread=spread)


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * len(counts)


def _label_shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {label: count / total for label, count in sorted(counts.items())}


def reference_texts(config, limit: int, seed: int = 0) -> list[str]:
    """Up to ``limit`` held-out texts of ``config``'s tasks, the same share from each task's eval
    data (its training data when it has none; tagging tokens joined by spaces, both sentences of a
    pair), drawn with ``seed``."""
    from mtl.data.readers import read_rows

    pools = []
    for task in config.tasks:
        rows = read_rows(task.eval or task.train, task.kind)
        pools.append([" ".join(row["tokens"]) if "tokens" in row else row["text"] for row in rows]
                     + [row["pair"] for row in rows if row.get("pair")])
    rng = np.random.default_rng(seed)
    texts = []
    for index, pool in enumerate(pools):
        share = (limit - len(texts)) // (len(pools) - index)
        texts += [pool[position] for position in sorted(rng.permutation(len(pool))[:share])]
    return texts


def write_reference(folder: str | Path, reference: Reference) -> None:
    storage.write_text(storage.join(folder, REFERENCE_FILE), json.dumps(reference.to_dict(), indent=1))


def store_reference(folder: str | Path, texts: Sequence[str]) -> Reference:
    """Answer ``texts`` with the model in ``folder`` and store the reference statistics there."""
    from mtl.inference.predictor import Predictor

    reference = reference_statistics(texts, Predictor.from_folder(folder, device="cpu").predict(texts))
    write_reference(folder, reference)
    return reference


def read_reference(folder: str | Path) -> Reference | None:
    """The folder's reference statistics, or None for a folder trained before they were stored."""
    path = storage.join(folder, REFERENCE_FILE)
    if not storage.exists(path):
        return None
    return Reference.from_dict(json.loads(storage.read_text(path)))
