"""Training data on Ray Data: read on the cluster, counted on the driver, streamed to each worker.

    driver   plan_training_data: one Ray Data pass per task (per source of a task: its own data,
             and a distillation's teacher-labeled corpus) that only counts (rows per file, the
             labels seen): the label maps, and how many rows each rank gets. Only counts reach it.
    worker   TaskStream: its own share of a task (every W-th row), read and picked out by Ray Data
             tasks on the cluster, tokenized and shuffled in windows by a thread of the worker
             (seeded), pass after pass.

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
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from mtl import storage
from mtl.config import Augmentation, Config, DataSource, TaskConfig
from mtl.data.augmentation import Augmenter
from mtl.data.features import Featurizer
from mtl.data.readers import read_rows
from mtl.errors import ConfigError, DataError
from mtl.labeling.corpus import ROW_BITS, ROW_ID, expand_input
from mtl.tasks import TaskSpec
from mtl.train.preservation import ReferenceEmbedder
from mtl.train.sources import LabeledRows, rank_share

WINDOW_ROWS = 4096      # rows a worker shuffles at a time
# reading and tokenizing are light next to training, and a worker may hold every CPU of its node:
# they reserve none, and at most READERS files of a task are read at once
DATA_CPUS = 0
READERS = 2
# a pass reads its files in runs of at least this many rows, one Ray Data read per run, each started
# only once the run before it has been taken: a read runs ahead of training as far as the object
# store lets it, and the worker maps every store page it reads a block from, so one read of the
# whole pass would grow the worker's memory with the corpus. (Ray Data's own object-store limit
# bounds it too, but a backpressured read spins its scheduling loop on the worker's GIL and
# halves training speed: docs/benchmarks.md.)
RUN_ROWS = 65_536


@dataclass(frozen=True)
class TaskData:
    """Where one task's training rows are and how they split into ranks (no rows, only counts)."""

    name: str
    kind: str
    sources: list[dict]          # the DataSources, as dicts: the task's own, then a distillation's corpus
    file_sources: list[int]      # per file, the index of its source (each source's files consecutive)
    files: list[str]             # in the filesystem's own form, sorted per source: their order numbers the rows
    names: list[str]             # the same files as the user wrote them, for messages
    file_rows: list[int]
    keep: list[int] | None = None   # with max_examples_per_task: the positions of the own source kept, sorted
    rows: int = field(default=0)    # rows after the cap
    capped_rows: int = 0            # rows of the task's own source, which the cap samples; the rest are all kept

    def rows_per_rank(self, world_size: int) -> int:
        return self.rows // world_size

    def source_files(self, source: int) -> tuple[int, list[str], list[str]]:
        """The number of the first file of source ``source``, its files and their names."""
        numbers = [number for number, owner in enumerate(self.file_sources) if owner == source]
        return numbers[0], self.files[numbers[0]:numbers[-1] + 1], self.names[numbers[0]:numbers[-1] + 1]


def plan_training_data(config: Config, extra_sources: dict[str, dict[str, DataSource]] | None = None
                       ) -> tuple[list[TaskSpec], dict[str, TaskData]]:
    """Label maps and row counts of every task, from one counting pass per source; eval data checked.
    ``extra_sources``: per task, more training rows (a distillation's teacher-labeled corpus), each
    source under the config field that messages name it by; ``max_examples_per_task`` caps only
    the task's own rows."""
    specs, plans = [], {}
    for index, task in enumerate(config.tasks):
        sources = {f"tasks.{index}.train": task.train, **(extra_sources or {}).get(task.name, {})}
        files, names, file_sources, file_rows, seen = [], [], [], [], set()
        for number, (where, source) in enumerate(sources.items()):
            source_files, source_names = _files(source, where)
            rows, labels = _count(task.kind, source, source_files, source_names, where, first=len(files))
            files, names, file_rows = files + source_files, names + source_names, file_rows + rows
            file_sources += [number] * len(source_files)
            seen |= labels
        spec = TaskSpec.from_labels(task.name, task.kind, seen)
        own_rows = sum(rows for rows, source in zip(file_rows, file_sources) if source == 0)
        keep = kept_positions(own_rows, config.train.max_examples_per_task, config.train.seed)
        plans[task.name] = TaskData(name=task.name, kind=task.kind,
                                    sources=[source.model_dump() for source in sources.values()],
                                    file_sources=file_sources, files=files, names=names, file_rows=file_rows,
                                    keep=keep, capped_rows=own_rows,
                                    rows=sum(file_rows) - own_rows + (own_rows if keep is None else len(keep)))
        if task.eval is not None:
            _check_eval_labels(task, spec, f"tasks.{index}.eval")
        specs.append(spec)
    if config.embedding_eval is not None:
        try:
            read_rows(config.embedding_eval, "similarity")
        except (DataError, ConfigError) as error:
            raise DataError(f"config error: embedding_eval: {error}") from None
    return specs, plans


def _files(source: DataSource, where: str) -> tuple[list[str], list[str]]:
    try:
        files, _ = expand_input(source.path)
    except FileNotFoundError:
        raise DataError(f"config error: {where}: {source.path}: no such file") from None
    if storage.is_uri(source.path):
        scheme = source.path.split("://", 1)[0]
        return files, [f"{scheme}://{path}" for path in files]
    return files, files


def _read(source: DataSource, kind: str, files: list[str], names: list[str], *, first: int = 0,
          order: list[str] | None = None) -> ray.data.Dataset:
    """The rows of ``files`` (read in ``order`` when given), numbered by their place in ``files``
    after the ``first`` files of the task's sources before this one."""
    numbers = {path: first + number for number, path in enumerate(files)}
    filesystem, _ = storage.resolve(source.path)
    datasource = LabeledRows(order or files, source=source, kind=kind, file_numbers=numbers,
                             names=dict(zip(files, names)), filesystem=filesystem)
    return ray.data.read_datasource(datasource, num_cpus=DATA_CPUS, concurrency=READERS)


def _count(kind: str, source: DataSource, files: list[str], names: list[str], where: str, *, first: int
           ) -> tuple[list[int], set[str]]:
    """Rows per file and the labels (or tags) seen, streamed through the driver a column at a time."""
    label_column = {"classification": "label", "tagging": "tags"}.get(kind)  # similarity: none
    file_rows, seen = [0] * len(files), set()
    try:
        columns = [ROW_ID, label_column] if label_column else [ROW_ID]
        batches = _read(source, kind, files, names, first=first).select_columns(columns) \
            .iter_batches(batch_format="pyarrow", batch_size=None)
        for batch in batches:
            ids = batch[ROW_ID].to_numpy()
            for file_number, count in zip(*np.unique(ids >> ROW_BITS, return_counts=True)):
                file_rows[int(file_number) - first] += int(count)
            if label_column is None:
                continue
            labels = batch[label_column]
            if kind == "tagging":
                labels = pc.list_flatten(labels)
            seen.update(pc.unique(labels).to_pylist())
    except Exception as error:  # a DataError raised in a Ray task arrives wrapped
        raise _data_error(error, where) from None
    if not sum(file_rows):
        raise DataError(f"config error: {where}: {source.path}: the file holds no examples")
    return file_rows, seen


def _data_error(error: BaseException, where: str) -> Exception:
    """The DataError (file and line) inside Ray's wrapping of a failed read, named by its field."""
    current, seen = error, set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # Ray's task errors are instances of their cause too
        if isinstance(current, (DataError, ConfigError)) and not isinstance(cause, BaseException):
            return DataError(f"config error: {where}: {current}")
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return error


def kept_positions(total: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded random sample of ``limit`` row positions (not the first ones: files are often sorted)."""
    if limit is None or total <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False)).tolist()


def _check_eval_labels(task: TaskConfig, spec: TaskSpec, where: str) -> None:
    """Every eval row readable, and every label one the training data has."""
    try:
        for row in read_rows(task.eval, task.kind):
            for label in {"classification": [row.get("label")], "tagging": row.get("tags")}.get(spec.kind, []):
                spec.label_id(label, row["origin"])
    except (DataError, ConfigError) as error:
        raise DataError(f"config error: {where}: {error}") from None


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
        dataset = _read(source, self.data.kind, files, names, first=first, order=order) \
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
