"""Drift: what an endpoint serves, against what its model saw when it was trained. Free of Ray.

Training stores *reference statistics* in the model folder (``mtl.inference.reference``): what the
model *says* of familiar text, so a served window is compared like with like.

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
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mtl.inference.reference import Reference, predicted_labels

# a bin the reference never filled still gets this share, so that PSI stays finite
SHARE_FLOOR = 1e-4


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
