"""Training data on Ray Data, the driver's side: one Ray Data pass per task (per source of a task: its
own data, and a distillation's teacher-labeled corpus) that only counts (rows per file, the labels
seen): the label maps, and how many rows each rank gets. Only counts reach the driver; each worker
streams its own share (``mtl.train.stream``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc
import ray.data

from mtl import storage
from mtl.config import Config
from mtl.data.readers import read_rows
from mtl.errors import ConfigError, DataError
from mtl.labeling.corpus import ROW_BITS, ROW_ID, expand_input
from mtl.task_config import DataSource, TaskConfig
from mtl.tasks import TaskSpec
from mtl.train.sources import LabeledRows

# reading and tokenizing are light next to training, and a worker may hold every CPU of its node:
# they reserve none, and at most READERS files of a task are read at once
DATA_CPUS = 0
READERS = 2


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


def read_task_rows(source: DataSource, kind: str, files: list[str], names: list[str], *, first: int = 0,
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
        batches = read_task_rows(source, kind, files, names, first=first).select_columns(columns) \
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
