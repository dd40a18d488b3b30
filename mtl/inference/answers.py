"""THE way from model outputs to answers: a sentence's label with its probabilities, BIO tags
decoded to entity spans in characters (or tokens, for word input), and the ``Prediction`` that
holds them with the embedding. Labeling's columns and the endpoint's JSON are made from these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mtl.data.features import Encoded, first_subword_positions, word_character_spans
from mtl.tasks import TaskSpec, bio_spans


@dataclass
class Entity:
    """A predicted entity: characters ``[start, end)`` of the text, or token indices for word input."""

    start: int
    end: int
    label: str
    text: str
    score: float


@dataclass
class Label:
    """A sentence label with its probability and the probability of every class."""

    label: str
    score: float
    probabilities: dict[str, float]


@dataclass
class Prediction:
    """Everything predicted for one input; on ``error`` all else is empty."""

    embedding: np.ndarray | None = None
    labels: dict[str, Label] = field(default_factory=dict)
    entities: dict[str, list[Entity]] = field(default_factory=dict)
    truncated: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready: the embedding as a list of floats."""
        data = asdict(self)
        data["embedding"] = None if self.embedding is None else self.embedding.tolist()
        return data


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def sentence_label(spec: TaskSpec, probabilities: np.ndarray) -> Label:
    best = int(probabilities.argmax())
    return Label(label=spec.labels[best], score=float(probabilities[best]),
                 probabilities={label: float(p) for label, p in zip(spec.labels, probabilities)})


def entity_spans(spec: TaskSpec, probabilities: np.ndarray, encoded: Encoded, row: int,
              item, pre_split: bool) -> list[Entity]:
    """Tag each word by its first subword, decode BIO spans, map them to characters (or tokens).

    probabilities: ``(seq, labels)`` for one item. A span's score is the mean tag probability of its words.
    """
    word_ids = encoded.word_ids[row]
    word_probabilities = probabilities[first_subword_positions(word_ids)]
    best = word_probabilities.argmax(axis=-1)
    tags = [spec.labels[index] for index in best]
    confidence = word_probabilities[np.arange(len(best)), best]
    if not pre_split:
        characters = word_character_spans(word_ids, encoded.offsets[row])
    entities = []
    for start, end, kind in bio_spans(tags):
        score = float(confidence[start:end].mean())
        if pre_split:
            entities.append(Entity(start, end, kind, " ".join(item[start:end]), score))
        else:
            first, last = characters[start][0], characters[end - 1][1]
            entities.append(Entity(first, last, kind, item[first:last], score))
    return entities
