"""Bulk labeling: turn Predictor answers into Arrow columns.

The Ray Data pipeline itself lives in ``mtl.labeling.pipeline``; this module knows nothing of Ray, so its
pieces are unit-tested on plain Arrow tables.

Output columns, after every input column and ``row_id`` (see ``mtl.labeling.corpus``):

- ``embedding``: list of float32 (or float16), the same length in every row;
- per classification task ``<task>`` (label string) and ``<task>_score`` (probability);
- per tagging task ``<task>``: list of ``{start, end, label, text, score}`` (characters, or token
  indices for pre-split input; ``end`` exclusive);
- ``truncated``: the text was longer than the model's max length and was cut;
- ``error``: null, or why the row could not be labeled (then every column above is null).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from mtl.inference.answers import Prediction
from mtl.inference.predictor import Predictor
from mtl.tasks import TaskSpec

ENTITY_TYPE = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("label", pa.string()),
                         ("text", pa.string()), ("score", pa.float32())])
EMBEDDING_TYPES = {"float32": pa.float32(), "float16": pa.float16()}


def output_columns(specs: list[TaskSpec], embedding: bool) -> list[str]:
    """The names this job adds to every row, in order."""
    names = ["embedding"] if embedding else []
    for spec in specs:
        names += [spec.name, f"{spec.name}_score"] if spec.kind == "classification" else [spec.name]
    return names + ["truncated", "error"]


# How the labeled rows are written to Parquet: no dictionary encoding, since embeddings and texts
# are almost all distinct, and pyarrow fills a dictionary page before falling back to plain values
# (6x the time to write a batch with embeddings, and the file 38% larger).
PARQUET_OPTIONS = {"use_dictionary": False}


def predictions_to_columns(predictions: list[Prediction], specs: list[TaskSpec], *, embedding_size: int | None,
                           embedding_dtype: str = "float32") -> dict[str, pa.Array]:
    """Arrow columns for a batch of predictions; rows with an error get nulls."""
    columns: dict[str, pa.Array] = {}
    if embedding_size is not None:
        columns["embedding"] = _embedding_column(predictions, embedding_size, EMBEDDING_TYPES[embedding_dtype])
    failed = [prediction.error is not None for prediction in predictions]
    for spec in specs:
        if spec.kind == "classification":
            labels = [None if bad else p.labels[spec.name] for p, bad in zip(predictions, failed)]
            columns[spec.name] = pa.array([None if label is None else label.label for label in labels], pa.string())
            columns[f"{spec.name}_score"] = pa.array(
                [None if label is None else label.score for label in labels], pa.float32())
        else:
            columns[spec.name] = pa.array(
                [None if bad else [vars(entity) for entity in p.entities[spec.name]]
                 for p, bad in zip(predictions, failed)], pa.list_(ENTITY_TYPE))
    columns["truncated"] = pa.array([None if p.error else p.truncated for p in predictions], pa.bool_())
    columns["error"] = pa.array([p.error for p in predictions], pa.string())
    return columns


def _embedding_column(predictions: list[Prediction], size: int, value_type: pa.DataType) -> pa.Array:
    """A list column of ``size`` values per row, built from one flat buffer; failed rows are null.

    A variable-size list rather than a fixed-size one: pyarrow 25 (what MLflow 3.17 requires)
    cannot read a fixed-size list column with nulls back from Parquet.
    """
    valid = np.array([p.embedding is not None for p in predictions], dtype=bool)
    values = np.zeros((int(valid.sum()), size), dtype=value_type.to_pandas_dtype())
    for row, prediction in enumerate(p for p in predictions if p.embedding is not None):
        values[row] = prediction.embedding
    offsets = pa.array(np.concatenate([[0], np.cumsum(valid * size)]), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=value_type), mask=pa.array(~valid))


class BatchLabeler:
    """Labels Arrow batches: the model loads once, when the (actor's) labeler is built.

    json_lines: the batch holds raw JSONL lines (column ``text``), parsed here line by line so
    that a line that is not JSON, or a text of the wrong type, is one bad row and not a failed
    file (Arrow's JSON reader gives up on a whole file when a column changes type).
    """

    def __init__(self, *, model: str, text_column: str | None, tokens_column: str | None,
                 tasks: list[str] | None, embedding: bool = True, embedding_dtype: str = "float32",
                 model_batch_size: int | None = None, max_length: int | None = None, threads: int | None = None,
                 backend: str = "torch", precision: str = "float32", json_lines: bool = False,
                 on_rows: Callable[[int], None] | None = None):
        if threads and backend == "torch":
            import torch

            torch.set_num_threads(threads)
        self.predictor = Predictor.from_folder(model, batch_size=model_batch_size, backend=backend,
                                               precision=precision, threads=threads)
        if max_length:
            self.predictor.featurizer.max_length = max_length
        self.column = text_column or tokens_column
        self.pre_split = tokens_column is not None
        self.tasks = list(self.predictor.specs) if tasks is None else tasks
        self.specs = [self.predictor.specs[task] for task in self.tasks]
        self.embedding = embedding
        self.embedding_dtype = embedding_dtype
        self.json_lines = json_lines
        self.on_rows = on_rows   # told how many rows each batch held (the job's progress bar)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.json_lines:
            records = [_parse_json_line(line) for line in batch.column("text").to_pylist()]
            items = [record.get(self.column, _MISSING) for record in records]
            batch = _with_columns_of(_table_of_mixed_rows(records), batch, skip="text")
        elif self.column in batch.column_names:
            items = batch.column(self.column).to_pylist()
        else:
            items = [_MISSING] * len(batch)
        missing = [item is _MISSING for item in items]
        items = [None if gone else item for item, gone in zip(items, missing)]
        if self.pre_split:
            predictions = self.predictor.predict(words=items, tasks=self.tasks, embeddings=self.embedding)
        else:
            predictions = self.predictor.predict(items, tasks=self.tasks, embeddings=self.embedding)
        for prediction, gone in zip(predictions, missing):
            if gone:
                prediction.error = f"no column {self.column!r} in this row"
        size = self.predictor.embedding_size if self.embedding else None
        columns = predictions_to_columns(predictions, self.specs, embedding_size=size,
                                         embedding_dtype=self.embedding_dtype)
        for name, column in columns.items():
            batch = batch.append_column(name, column)
        if self.on_rows is not None:
            self.on_rows(len(batch))
        return batch


_MISSING = object()


def _parse_json_line(line: str | None) -> dict:
    """One JSONL line as a dict; anything else keeps its raw text in ``_raw_line``."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, TypeError):
        record = None
    return record if isinstance(record, dict) else {"_raw_line": line}


def _with_columns_of(table: pa.Table, source: pa.Table, *, skip: str) -> pa.Table:
    """``table`` with every column of ``source`` but ``skip`` appended (the row id beside JSON lines)."""
    for name in source.column_names:
        if name != skip:
            table = table.append_column(name, source.column(name))
    return table


def _table_of_mixed_rows(rows: list[dict]) -> pa.Table:
    """A table from dicts whose values may change type between rows: such a column is stored as
    text (strings as they are, other values as JSON), so nothing of the input is lost."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([value if value is None or isinstance(value, str) else json.dumps(value)
                                      for value in values], pa.string())
    return pa.table(columns) if columns else pa.table({"_raw_line": pa.array([None] * len(rows), pa.string())})
