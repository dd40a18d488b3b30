"""95% bootstrap confidence intervals: the metrics recomputed on resamples of the examples.

Each resample draws as many examples as the data has, with replacement (the percentile bootstrap of
Efron & Tibshirani). Classification metrics depend only on each example's (gold, predicted) cell, so
a resample is a draw of cell counts; entity metrics are sums of per-sentence counts, so a resample
is a weighted sum; a rank correlation is recomputed on the resampled pairs. The generator is seeded:
the same data and seed give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

CONFIDENCE = 0.95


def _resamples(size: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of ``size`` examples is drawn, per resample: ``(size,)`` counts summing to ``size``."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, size, size), minlength=size)


def _percentiles(values: list[dict]) -> dict:
    """``[low, high]`` of every number in a list of equally shaped (nested) metric dicts."""
    first = values[0]
    if isinstance(first, dict):
        return {key: _percentiles([value[key] for value in values]) for key in first}
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_counts(statistics: np.ndarray, metrics: Callable[[np.ndarray], dict], *,
                     resamples: int, seed: int) -> dict:
    """Intervals of ``metrics(totals)`` where ``totals`` sums ``statistics`` (``(examples, ...)``,
    per-example counts) over a resample; the result mirrors ``metrics``' dict, each number as ``[low, high]``."""
    statistics = np.asarray(statistics)
    flat = statistics.reshape(len(statistics), -1)
    values = [metrics((weights @ flat).reshape(statistics.shape[1:]))
              for weights in _resamples(len(statistics), resamples, seed)]
    return _percentiles(values)


def bootstrap_cells(cells: np.ndarray, cell_count: int, metrics: Callable[[np.ndarray], dict], *,
                    resamples: int, seed: int) -> dict:
    """Intervals of ``metrics(counts)`` where ``counts`` (``(cell_count,)``) counts the resampled
    examples per cell (``cells``: each example's cell index). Resampling examples with replacement
    draws the cell counts from a multinomial with the data's cell shares, which is drawn directly."""
    observed = np.bincount(np.asarray(cells, dtype=np.int64), minlength=cell_count)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(int(observed.sum()), observed / max(int(observed.sum()), 1), size=resamples)
    return _percentiles([metrics(counts) for counts in draws])


def bootstrap_rows(columns: tuple[np.ndarray, ...], metrics: Callable[..., dict], *,
                   resamples: int, seed: int) -> dict:
    """Intervals of ``metrics(*(column[sample] for column in columns))`` over resampled positions
    (for metrics that are no sum, such as a rank correlation)."""
    rng = np.random.default_rng(seed)
    columns = tuple(np.asarray(column) for column in columns)
    values = []
    for _ in range(resamples):
        sample = rng.integers(0, len(columns[0]), len(columns[0]))
        values.append(metrics(*(column[sample] for column in columns)))
    return _percentiles(values)
