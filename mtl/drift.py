"""Drift: what an endpoint serves, against what its model saw when it was trained. Free of Ray.

Training stores *reference statistics* in the model folder (``reference.json``): the length of the
texts, the labels the model predicts for each task, and the mean and spread of the embedding, all
measured on a sample of the held-out texts as the trained model answers them. So the reference is
what the model *says* of familiar text, and a served window is compared like with like.

An endpoint keeps a sliding window of what it serves (``DriftWindow``) and scores it against the
reference:

- ``length`` and each task's labels: the population stability index (PSI), the usual score of a
  shifted distribution: ``sum((served - reference) * ln(served / reference))`` over the bins (for
  lengths, the reference's deciles). Under 0.1 is commonly read as stable and over 0.25 as a shift.
- ``embedding``: how far the window's mean embedding lies from the reference mean, in units of the
  reference *spread* (the root mean square distance of a reference embedding from its mean).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mtl import storage

REFERENCE_FILE = "reference.json"
LENGTH_BINS = 10
# a bin the reference never filled still gets this share, so that PSI stays finite
SHARE_FLOOR = 1e-4
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
    from mtl.predict import Predictor

    reference = reference_statistics(texts, Predictor.from_folder(folder, device="cpu").predict(texts))
    write_reference(folder, reference)
    return reference


def read_reference(folder: str | Path) -> Reference | None:
    """The folder's reference statistics, or None for a folder trained before they were stored."""
    path = storage.join(folder, REFERENCE_FILE)
    if not storage.exists(path):
        return None
    return Reference.from_dict(json.loads(storage.read_text(path)))


def population_stability_index(reference: Sequence[float], served: Sequence[float]) -> float:
    """PSI of two distributions over the same bins, each given as shares."""
    expected = np.maximum(np.asarray(reference, dtype=float), SHARE_FLOOR)
    actual = np.maximum(np.asarray(served, dtype=float), SHARE_FLOOR)
    return float(((actual - expected) * np.log(actual / expected)).sum())


@dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.25          # length and every task's labels
    embedding: float = 0.25    # distance of the mean embedding, in reference spreads


@dataclass
class DriftReport:
    """Scores of a window: ``length``, ``embedding`` and ``labels/<task>``; empty below ``min_window``."""

    window: int
    scores: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)   # the scores past their threshold


class _SlidingCounts:
    """How often each key occurs in the last ``size`` items (an item is a list of keys), kept up to
    date as items come and go, so that scoring a window costs the same however large it is."""

    def __init__(self, size: int):
        self.items: deque[list] = deque()
        self.size = size
        self.counts: Counter = Counter()

    def add(self, keys: list) -> None:
        if len(self.items) == self.size:
            self.counts.subtract(self.items.popleft())
        self.items.append(keys)
        self.counts.update(keys)

    def __len__(self) -> int:
        return len(self.items)

    def shares(self, keys: list) -> list[float]:
        total = sum(self.counts.values())
        return [self.counts[key] / total for key in keys]


class DriftWindow:
    """The last ``size`` texts an endpoint served (and, per task, the labels of the last ``size``
    texts it answered for that task), scored against a reference once it holds ``min_window``."""

    def __init__(self, reference: Reference, *, size: int = 1000, min_window: int = 200,
                 thresholds: DriftThresholds | None = None):
        self.reference = reference
        self.size, self.min_window = size, min_window
        self.thresholds = thresholds or DriftThresholds()
        self._length_bins = _SlidingCounts(size)
        self._labels = {task: _SlidingCounts(size) for task in reference.labels}
        self._embeddings: deque[np.ndarray] = deque(maxlen=size)
        self._embedding_sum = np.zeros(len(reference.embedding_mean))
        self._mean = np.asarray(reference.embedding_mean)

    def add(self, text: str, prediction) -> None:
        """One served text and its answer (a ``Prediction`` without error)."""
        self._length_bins.add([bisect.bisect_right(self.reference.length_edges, len(text))])
        if prediction.embedding is not None:
            if len(self._embeddings) == self.size:
                self._embedding_sum -= self._embeddings[0]
            vector = np.asarray(prediction.embedding, dtype=np.float64)
            self._embeddings.append(vector)
            self._embedding_sum += vector
        for task, labels in predicted_labels(prediction).items():
            if task in self._labels:
                self._labels[task].add(labels)

    def report(self) -> DriftReport:
        report = DriftReport(window=len(self._length_bins))
        if report.window < self.min_window:
            return report
        bins = list(range(len(self.reference.length_shares)))
        report.scores["length"] = population_stability_index(self.reference.length_shares,
                                                             self._length_bins.shares(bins))
        if len(self._embeddings) >= self.min_window:
            distance = np.linalg.norm(self._embedding_sum / len(self._embeddings) - self._mean)
            report.scores["embedding"] = float(distance / max(self.reference.embedding_spread, 1e-12))
        for task, labels in self._labels.items():
            if len(labels) >= self.min_window:
                reference = self.reference.labels[task]
                names = sorted(set(reference) | {name for name, count in labels.counts.items() if count})
                report.scores[f"labels/{task}"] = population_stability_index(
                    [reference.get(name, 0.0) for name in names], labels.shares(names))
        report.drifted = [name for name, score in report.scores.items() if score > self.threshold(name)]
        return report

    def threshold(self, score: str) -> float:
        return self.thresholds.embedding if score == "embedding" else self.thresholds.psi
