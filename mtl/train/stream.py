"""Training data on Ray Data, the worker's side: ``TaskStream`` is a worker's own share of a task (every
W-th row), read and picked out by Ray Data tasks on the cluster, tokenized and shuffled in windows
by a thread of the worker (seeded), pass after pass.

Everything a worker sees is a pure function of (seed, task, pass, rank, world size): files are read
in a seeded order per pass, rows are numbered as they are read (``row_id``, as in ``mtl.labeling.corpus``),
and a stream resumed at its ``draws``-th batch gives the very batches the first run would have.
Memory stays bounded: a worker holds a few windows of rows and one run of files' read-ahead
(``RUN_ROWS``) in the object store, the driver none.
"""

from __future__ import annotations

import functools
import itertools
import math
import queue
import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import ray.data

from mtl.data.augmentation import Augmenter
from mtl.data.features import Featurizer
from mtl.errors import DataError
from mtl.labeling.corpus import ROW_BITS, ROW_ID
from mtl.task_config import Augmentation, DataSource
from mtl.tasks import TaskSpec
from mtl.train.data_plan import DATA_CPUS, TaskData, read_task_rows
from mtl.train.kept_rows import KeptRows
from mtl.train.preservation import ReferenceEmbedder
from mtl.train.sources import rank_share

WINDOW_ROWS = 4096      # rows a worker shuffles at a time
# a pass reads its files in runs of at least this many rows, one Ray Data read per run, each started
# only once the run before it has been taken: a read runs ahead of training as far as the object
# store lets it, and the worker maps every store page it reads a block from, so one read of the
# whole pass would grow the worker's memory with the corpus. (Ray Data's own object-store limit
# bounds it too, but a backpressured read spins its scheduling loop on the worker's GIL and
# halves training speed: docs/benchmarks.md.)
RUN_ROWS = 65_536


class TaskStream:
    """One task's training batches for one rank, pass after pass; ``draws`` batches already taken.

    Each pass reads the task's files in a seeded order on Ray Data, whose tasks keep this rank's
    rows (positions ``rank, rank + W, ...``, the same number on every rank). A thread of this
    process tokenizes them a window at a time and shuffles each window, a window or two ahead of
    training and a pass ahead: the tokenizer is loaded once per worker, not once per Ray task
    process, and starting a pass never stalls a training step. A share of at most
    ``keep_in_memory_rows`` rows is read once and kept, tokenized; later passes take the same rows
    in the same order from memory, so the batches are the same either way. An augmented task
    (``augment``) is read again every pass, since each pass augments its rows anew.
    """

    def __init__(self, data: TaskData, spec: TaskSpec, *, featurizer: Featurizer, batch_size: int, seed: int,
                 task_index: int, rank: int, world_size: int, draws: int = 0, keep_in_memory_rows: int = 0,
                 reference: ReferenceEmbedder | None = None, augment: Augmentation | None = None):
        self.data, self.spec, self.featurizer, self.batch_size = data, spec, featurizer, batch_size
        # embedding preservation: each row's embedding by the pretrained encoder, made as it is tokenized
        self.reference = reference if spec.kind != "similarity" else None
        # read once, not per window; only the task's own source can be scored pairs
        self._score_range = DataSource.model_validate(data.sources[0]).score_range
        self.seed, self.task_index, self.rank, self.world_size = seed, task_index, rank, world_size
        self.rows_per_rank = data.rows_per_rank(world_size)
        if self.rows_per_rank < 1:
            raise DataError(f"task '{data.name}': {data.rows} training rows cannot be shared by {world_size} workers")
        self.batches_per_pass = math.ceil(self.rows_per_rank / batch_size)
        self.window_rows = batch_size * max(1, WINDOW_ROWS // batch_size)
        self._first_pass, skip = divmod(draws, self.batches_per_pass)
        self._augmenter = Augmenter(augment, spec.kind) if augment else None
        kept = self.rows_per_rank <= keep_in_memory_rows and self._augmenter is None
        self._kept = KeptRows(self.window_rows) if kept else None
        # the reading starts now, so that it overlaps whatever the worker does before training
        self._batches = self._every_batch(Ahead(window for data_pass in itertools.count(self._first_pass)
                                                for window in self._windows(data_pass)))
        for _ in range(skip):  # a resumed run: the batches the first run had already trained on
            next(self._batches)

    @property
    def in_memory(self) -> bool:
        return self._kept is not None

    def next_batch(self) -> list[dict]:
        """The next batch of tokenized rows (``input_ids``..., ``labels``)."""
        return next(self._batches)

    def _every_batch(self, windows: Ahead) -> Iterator[list[dict]]:
        """Batches of pass after pass, from ``windows`` (one thread reads the passes in turn, so the
        next pass's reading starts only as this one's ends). Every window but a pass's last is a
        whole number of batches, so batches never straddle passes."""
        for rows in windows:
            for start in range(0, len(rows), self.batch_size):
                yield rows[start:start + self.batch_size]

    def _windows(self, data_pass: int) -> Iterator[list[dict]]:
        """The pass's rows for this rank, tokenized and shuffled, a window at a time."""
        if self._kept is None:
            windows = (features for _, features in self._read_windows(data_pass))
        elif data_pass == self._first_pass:
            windows = self._kept.fill(self._read_windows(data_pass))
        else:
            windows = self._kept.windows(self._file_order(data_pass))
        for index, features in enumerate(windows):
            generator = np.random.default_rng([self.seed, self.task_index, data_pass, self.rank, index])
            yield [features[position] for position in generator.permutation(len(features))]

    def _read_windows(self, data_pass: int) -> Iterator[tuple[np.ndarray, list[dict]]]:
        """The pass's rows for this rank in reading order, tokenized, with the file number of each."""
        taken = 0
        for index, window in enumerate(_rebatched(self._read_runs(data_pass), self.window_rows)):
            window = window.slice(0, self.rows_per_rank - taken)
            taken += window.num_rows
            rows = window.to_pylist()
            if self._augmenter is not None:
                generator = np.random.default_rng([self.seed, self.task_index, data_pass, self.rank, index])
                rows = self._augmenter.augment(rows, generator)
            features = self._features(rows)
            if self.reference is not None:
                self.reference.add_embeddings(features)
            yield window[ROW_ID].to_numpy() >> ROW_BITS, features
            if taken >= self.rows_per_rank:
                return

    def _features(self, rows: list[dict]) -> list[dict]:
        if self.spec.kind == "similarity":
            return self.featurizer.similarity_features(rows, self.spec, self._score_range)
        make = (self.featurizer.classification_features if self.spec.kind == "classification"
                else self.featurizer.tagging_features)
        return make(rows, self.spec)

    def _file_order(self, data_pass: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.task_index, data_pass]).permutation(len(self.data.files))

    def _read_runs(self, data_pass: int) -> Iterator[pa.Table]:
        """This rank's rows of the pass's files, in their seeded order, a run of files at a time."""
        for run in file_runs(self._file_order(data_pass), self.data.file_rows, RUN_ROWS):
            for source, files in itertools.groupby(run, key=self.data.file_sources.__getitem__):
                yield from self._run_dataset(source, list(files)).iter_batches(batch_size=None,
                                                                                batch_format="pyarrow")

    def _run_dataset(self, source_number: int, file_numbers: list[int]) -> ray.data.Dataset:
        share = functools.partial(rank_share, offsets=np.cumsum([0, *self.data.file_rows[:-1]]),
                                  keep=None if self.data.keep is None else np.asarray(self.data.keep),
                                  capped_rows=self.data.capped_rows,
                                  rank=self.rank, world_size=self.world_size,
                                  limit=self.rows_per_rank * self.world_size)
        source = DataSource.model_validate(self.data.sources[source_number])
        first, files, names = self.data.source_files(source_number)
        order = [self.data.files[number] for number in file_numbers]
        dataset = read_task_rows(source, self.data.kind, files, names, first=first, order=order) \
            .map_batches(share, batch_format="pyarrow", batch_size=None, num_cpus=DATA_CPUS)
        context = dataset.context  # this dataset's own copy: the process's default stays as it was
        # one order of blocks on every run, so that a resumed stream gives the same batches
        context.execution_options.preserve_order = True
        # a read is short and frequent: progress bars, redrawn in every worker and relayed to the
        # driver, cost more CPU than the training steps beside them
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        return dataset


def file_runs(order: np.ndarray, file_rows: list[int], run_rows: int) -> Iterator[list[int]]:
    """The file numbers of ``order`` in consecutive runs, each ending at the file that brings it
    to ``run_rows`` rows or more (the last run may hold fewer)."""
    run, rows = [], 0
    for number in order.tolist():
        run.append(number)
        rows += file_rows[number]
        if rows >= run_rows:
            yield run
            run, rows = [], 0
    if run:
        yield run


def _rebatched(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The rows of ``tables``, in order, in tables of ``rows`` rows (the last may hold fewer)."""
    pending, count = [], 0
    for table in tables:
        while table.num_rows:
            taken = table.slice(0, rows - count)
            pending.append(taken)
            count += taken.num_rows
            table = table.slice(taken.num_rows)
            if count == rows:
                yield pa.concat_tables(pending, promote_options="default")
                pending, count = [], 0
    if pending:
        yield pa.concat_tables(pending, promote_options="default")


class Ahead:
    """An iterator run by a thread of its own, up to ``ahead`` items before its consumer."""

    _END = object()

    def __init__(self, items: Iterator, ahead: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        threading.Thread(target=self._fill, args=(items,), daemon=True).start()

    def _fill(self, items: Iterator) -> None:
        try:
            for item in items:
                self._queue.put(item)
            self._queue.put(self._END)
        except BaseException as error:  # handed to the consumer, which raises it
            self._queue.put(error)

    def __iter__(self) -> Ahead:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item
