"""The rows of a task that fit in a worker's memory, kept after the first pass in compact arrays.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import numpy as np


class KeptRows:
    """A rank's share of a task, tokenized, kept in memory as it is first read: every feature
    column packed into flat integer arrays (a few bytes per token, not a Python object each).

    ``windows`` gives a later pass's rows in the order a read of the files in that order would
    (each file's rows in file order) and in windows of the same size, so later passes see exactly
    the rows that reading them again would give.
    """

    def __init__(self, window_rows: int):
        self.window_rows = window_rows
        self._chunks: list[PackedRows] = []
        self._file_numbers: list[np.ndarray] = []
        self._rows_of_file: dict[int, np.ndarray] = {}   # file number -> its kept rows, in file order
        self._ready = threading.Event()

    def fill(self, windows: Iterator[tuple[np.ndarray, list[dict]]]) -> Iterator[list[dict]]:
        """Pass ``windows`` through, keeping each."""
        for file_numbers, features in windows:
            self._chunks.append(PackedRows(features))
            self._file_numbers.append(file_numbers)
            yield features
        file_numbers = np.concatenate(self._file_numbers)
        order = np.argsort(file_numbers, kind="stable")  # each file's rows stay in file order
        numbers, starts = np.unique(file_numbers[order], return_index=True)
        self._rows_of_file = dict(zip(numbers.tolist(), np.split(order, starts[1:])))
        self._ready.set()

    def windows(self, file_order: np.ndarray) -> Iterator[list[dict]]:
        """The kept rows, the files' rows in ``file_order``; waits until the first pass is read."""
        self._ready.wait()
        none = np.empty(0, dtype=np.int64)  # a file none of whose rows are this rank's
        sequence = np.concatenate([self._rows_of_file.get(int(number), none) for number in file_order])
        for start in range(0, len(sequence), self.window_rows):
            yield [self._row(int(index)) for index in sequence[start:start + self.window_rows]]

    def _row(self, index: int) -> dict:
        chunk, offset = divmod(index, self.window_rows)  # every window but the last is full
        return self._chunks[chunk].row(offset)


class PackedRows:
    """Feature rows (numbers, or lists of them) as one flat array per feature, with row offsets.
    Lists of floats (reference embeddings) are kept in float16: a target to come near needs no more."""

    def __init__(self, rows: list[dict]):
        self.columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name in rows[0]:
            values = [row[name] for row in rows]
            if isinstance(values[0], list):
                offsets = np.cumsum([0, *map(len, values)])
                floats = bool(values[0]) and isinstance(values[0][0], float)
                flat = np.fromiter(itertools.chain.from_iterable(values), np.float16 if floats else np.int64,
                                   count=offsets[-1])
                self.columns[name] = (flat if floats else _compact(flat), offsets)
            else:
                self.columns[name] = (np.asarray(values), None)

    def row(self, index: int) -> dict:
        return {name: values[offsets[index]:offsets[index + 1]].tolist() if offsets is not None
                else values[index].item() for name, (values, offsets) in self.columns.items()}


def _compact(values: np.ndarray) -> np.ndarray:
    """int32 where the values fit (token ids, masks, label ids all do)."""
    fits = not len(values) or (values.min() >= np.iinfo(np.int32).min and values.max() <= np.iinfo(np.int32).max)
    return values.astype(np.int32) if fits else values
