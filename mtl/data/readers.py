"""Read labeled data files into rows with one schema per task kind.

- classification rows: ``{"text": str, "label": str, "origin": "file:line"}``
- tagging rows: ``{"tokens": list[str], "tags": list[str] (IOB2), "origin": "file:line"}``
- similarity rows: ``{"text": str, "pair": str, "origin": "file:line"}`` plus ``"score": float`` (as
  the file has it) for scored pairs or ``"negative": str`` for triplets

``origin`` travels with each row so that a later problem (an unknown label in the eval set) can
still name the file and line it came from. Labels are kept as strings, exactly as the file spells
them (SST-2's ``0``/``1`` stay ``"0"``/``"1"``), because those strings are what users get back.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import BinaryIO

import pyarrow.parquet as pq

from mtl import storage
from mtl.errors import DataError
from mtl.formats import dialect
from mtl.task_config import DataSource
from mtl.tasks import TaskKind, iob1_to_iob2, is_bio_tag

DOCSTART = "-DOCSTART-"
# words of a text read with its entity spans: runs of letters and digits, and every other visible
# character alone, as BERT's pre-tokenizer splits (the words a tagging model's spans start and end on)
WORD = re.compile(r"[^\W_]+|\S")


def read_rows(source: DataSource, kind: TaskKind) -> list[dict]:
    """Read every row of ``source`` (a local path or a URI) for a task of ``kind``; raise DataError
    naming file and line."""
    if not storage.is_file(source.path):
        raise DataError(f"{source.path}: no such file")
    with storage.open_binary(source.path) as stream:
        rows = list(iter_rows(source, kind, stream))
    if not rows:
        raise DataError(f"{source.path}: the file holds no examples")
    return rows


def iter_rows(source: DataSource, kind: TaskKind, stream: BinaryIO, name: str | None = None) -> Iterator[dict]:
    """The rows of one open file of ``source``, one at a time; ``name`` (default: ``source.path``)
    is the file as messages and ``origin`` name it."""
    path = name or source.path
    fmt = source.format_of(path)
    if fmt == "conll":
        if kind != "tagging":
            raise DataError(f"{path}: CoNLL files hold tagging data, not {kind}")
        yield from _read_conll(stream, path, source)
        return
    records = {"csv": _table_records, "tsv": _table_records, "jsonl": _jsonl_records,
               "parquet": _parquet_records}[fmt](stream, path, source)
    to_row = {"classification": _classification_row, "tagging": _tagging_row, "similarity": _similarity_row}[kind]
    target = _target_column(source, kind)
    for record, origin in records:
        if source.skip_unlabeled and target is not None and record.get(target) is None:
            continue
        yield to_row(record, origin, source)


def _target_column(source: DataSource, kind: TaskKind) -> str | int | None:
    """The column holding a row's label (tags, spans) in a task of ``kind``; None for similarity."""
    if kind == "classification":
        return source.label_column
    if kind == "tagging":
        return source.spans_column or source.tags_column
    return None


def _read_conll(stream: BinaryIO, path: str, source: DataSource) -> Iterator[dict]:
    tokens, tags, start = [], [], 0
    for number, line in enumerate(_lines(stream, path, source.encoding), start=1):
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        if not fields or not "".join(fields).strip():
            if tokens:
                yield _tagging_rows_checked(tokens, tags, f"{path}:{start}", source)
            tokens, tags = [], []
            continue
        if fields[0] == DOCSTART:
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{number}: expected a token and a tag, got {line.strip()!r}")
        try:
            token, tag = fields[source.token_field], fields[source.tag_field].strip()
        except IndexError:
            raise DataError(
                f"{path}:{number}: no field {source.token_field} or {source.tag_field} in {line.strip()!r}"
            ) from None
        if not is_bio_tag(tag):
            raise DataError(f"{path}:{number}: tag {tag!r} is not BIO (O, B-TYPE or I-TYPE)")
        if not tokens:
            start = number
        tokens.append(token.strip())
        tags.append(tag)
    if tokens:
        yield _tagging_rows_checked(tokens, tags, f"{path}:{start}", source)


def _lines(stream: BinaryIO, path: str, encoding: str) -> Iterator[str]:
    try:
        yield from _text(stream, encoding)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not {encoding} text ({error.reason} at byte {error.start}); set encoding") from None


def _text(stream: BinaryIO, encoding: str) -> io.TextIOWrapper:
    """Text over a binary stream, line endings kept as they are (``newline=""``, as csv needs)."""
    return io.TextIOWrapper(stream, encoding=encoding, newline="")


def _table_records(stream: BinaryIO, path: str, source: DataSource) -> Iterator[tuple[dict, str]]:
    """CSV/TSV records keyed by column name (with a header) or by index (without one), read by the
    rules of ``mtl.formats``."""
    rules = dialect(source.format_of(path))
    with _text(stream, source.encoding) as handle:
        reader = csv.reader(handle, delimiter=rules.delimiter,
                            quoting=csv.QUOTE_MINIMAL if rules.quoted else csv.QUOTE_NONE)
        header = None
        try:
            for fields in reader:
                if not fields:
                    continue
                if source.header and header is None:
                    header = [name.strip() for name in fields]
                    continue
                keys = header if header is not None else range(len(fields))
                if header is not None and len(fields) != len(header):
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(fields)} fields, the header has {len(header)}"
                    )
                yield dict(zip(keys, fields)), f"{path}:{reader.line_num}"
        except csv.Error as error:
            raise DataError(f"{path}:{reader.line_num}: {error}") from None
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not {source.encoding} text ({error.reason}); set encoding") from None


def _jsonl_records(stream: BinaryIO, path: str, source: DataSource) -> Iterator[tuple[dict, str]]:
    for number, line in enumerate(_lines(stream, path, source.encoding), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield record, f"{path}:{number}"


def _parquet_records(stream: BinaryIO, path: str, source: DataSource) -> Iterator[tuple[dict, str]]:
    number = 0
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield record, f"{path}:row {number}"


def _column(record: dict, column: str | int, origin: str, role: str):
    if column not in record:
        available = list(record) if not all(isinstance(key, int) for key in record) else f"0..{len(record) - 1}"
        raise DataError(f"{origin}: no {role} {column!r}; the columns are {available}")
    value = record[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{origin}: {role} {column!r} is empty")
    return value


def _classification_row(record: dict, origin: str, source: DataSource) -> dict:
    text = _text_field(record, source.text_column, origin, "text_column")
    label = _column(record, source.label_column, origin, "label_column")
    return {"text": text, "label": str(label).strip(), "origin": origin}


def _similarity_row(record: dict, origin: str, source: DataSource) -> dict:
    row = {"text": _text_field(record, source.text_column, origin, "text_column"),
           "pair": _text_field(record, source.pair_column, origin, "pair_column")}
    if source.score_column is not None:
        row["score"] = _score(_column(record, source.score_column, origin, "score_column"), origin, source)
    if source.negative_column is not None:
        row["negative"] = _text_field(record, source.negative_column, origin, "negative_column")
    return {**row, "origin": origin}


def _text_field(record: dict, column: str | int, origin: str, role: str) -> str:
    text = _column(record, column, origin, role)
    if not isinstance(text, str):
        raise DataError(f"{origin}: {role} {column!r} is {type(text).__name__}, not text")
    return text.strip()


def _score(value, origin: str, source: DataSource) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{origin}: score_column {source.score_column!r} is {value!r}, not a number") from None
    low, high = source.score_range
    if not low <= score <= high:
        raise DataError(f"{origin}: score {score:g} is outside score_range [{low:g}, {high:g}]")
    return score


def _tagging_row(record: dict, origin: str, source: DataSource) -> dict:
    if source.spans_column is not None:
        return _tagging_row_of_spans(record, origin, source)
    tokens = _as_list(_column(record, source.tokens_column, origin, "tokens_column"))
    tags = _as_list(_column(record, source.tags_column, origin, "tags_column"))
    for tag in tags:
        if not is_bio_tag(tag):
            raise DataError(f"{origin}: tag {tag!r} is not BIO (O, B-TYPE or I-TYPE)")
    return _tagging_rows_checked(tokens, tags, origin, source)


def _tagging_row_of_spans(record: dict, origin: str, source: DataSource) -> dict:
    """The text's words, each tagged B- or I- by the entity span it falls in (O outside any). The
    text is taken as it is, unstripped: the spans count its characters."""
    text = _column(record, source.text_column, origin, "text_column")
    if not isinstance(text, str):
        raise DataError(f"{origin}: text_column {source.text_column!r} is {type(text).__name__}, not text")
    spans = record.get(source.spans_column)
    if not isinstance(spans, list):
        raise DataError(f"{origin}: spans_column {source.spans_column!r} is {type(spans).__name__}, "
                        "not a list of {start, end, label}")
    words = list(WORD.finditer(text))
    tags = ["O"] * len(words)
    for span in spans:
        try:
            start, end, label = int(span["start"]), int(span["end"]), str(span["label"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{origin}: spans_column {source.spans_column!r}: {span!r} is not "
                            "{start, end, label}") from None
        inside = [index for index, word in enumerate(words) if word.start() < end and word.end() > start]
        for position, index in enumerate(inside):
            tags[index] = f"{'B' if position == 0 else 'I'}-{label}"
    return {"tokens": [word.group() for word in words], "tags": tags, "origin": origin}


def _as_list(value) -> list[str]:
    """Tokens and tags come as lists (JSONL, Parquet) or as whitespace-separated strings (CSV)."""
    return value.split() if isinstance(value, str) else [str(item) for item in value]


def _tagging_rows_checked(tokens: list[str], tags: list[str], origin: str, source: DataSource) -> dict:
    if len(tokens) != len(tags):
        raise DataError(f"{origin}: {len(tokens)} tokens but {len(tags)} tags")
    if source.scheme == "iob1":
        tags = iob1_to_iob2(tags)
    return {"tokens": tokens, "tags": tags, "origin": origin}
