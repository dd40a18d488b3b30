"""Reading a corpus for bulk labeling with Ray Data: which files, which format, and a stable row id.

Every row gets ``row_id`` (int64): the input file's number in the sorted file list, shifted left by
40 bits, plus the row's number within the file. It is the same on every read of the same input, which
is what lets Ray Data's checkpointing skip the rows a killed run already labeled, and it lets a user
join an output row back to its input line. Parquet rows get Ray Data's own ``row_hash`` instead
(uint64, from the file and the row's position), which its Parquet reader computes.
"""

from __future__ import annotations

import fnmatch
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data

# Private, and on purpose: Ray Data's public read_csv and read_text cannot say which file a block
# came from in row order, and numbering the rows (row_id) needs exactly that. The datasources behind
# them are subclassed here, adding the number to every block they read; a Ray release that moves or
# changes them fails tests/labeling/test_private_ray_apis.py before it fails a label job.
from ray.data._internal.datasource.csv_datasource import CSVDatasource
from ray.data._internal.datasource.text_datasource import TextDatasource

from mtl import storage
from mtl.formats import CORPUS_SUFFIXES, dialect

ROW_ID = "row_id"
ROW_BITS = 40  # rows per file up to 10^12; files up to 2^23
SAMPLE_BYTES = 1024**2
SAMPLE_ROWS = 1000


def expand_input(pattern: str) -> tuple[list[str], pafs.FileSystem]:
    """A file, a folder (every file below it) or a glob, local or behind any filesystem URI.

    Returns the files sorted (their order numbers the rows) as paths inside the filesystem.
    """
    filesystem, path = storage.resolve(pattern)
    if not any(char in path for char in "*?["):
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"--input: no such file or folder '{pattern}'")
        if info.type == pafs.FileType.File:
            return [path], filesystem
        base, pattern_path = path, None
    else:
        base, pattern_path = path[: path.find(next(c for c in path if c in "*?["))].rsplit("/", 1)[0], path
    found = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    files = sorted(info.path for info in found if info.type == pafs.FileType.File
                   and not storage.is_hidden(info.path[len(base):])
                   and (pattern_path is None or _glob_match(info.path, pattern_path)))
    if not files:
        raise FileNotFoundError(f"--input: no files match '{pattern}'")
    return files, filesystem


def _glob_match(path: str, pattern: str) -> bool:
    """Shell-style matching where ``*`` stays within a folder and ``**`` crosses folders."""
    if "**" in pattern:
        return fnmatch.fnmatch(path, pattern)
    parts, pattern_parts = path.split("/"), pattern.split("/")
    return len(parts) == len(pattern_parts) and all(map(fnmatch.fnmatch, parts, pattern_parts))


def input_format(files: list[str], declared: str | None) -> str:
    if declared:
        return declared
    suffixes = {PurePosixPath(name).suffix.lower() for name in files}
    formats = {CORPUS_SUFFIXES.get(suffix) for suffix in suffixes}
    if len(formats) != 1 or None in formats:
        raise ValueError(f"--input: cannot tell one format from the suffixes {sorted(suffixes)}; pass --format")
    return formats.pop()


class _NumberedRows:
    """Adds ``row_id`` to every block a file-based datasource reads (mixed in before the datasource)."""

    def __init__(self, paths: list[str], *, file_numbers: dict[str, int], **options):
        super().__init__(paths, **options)
        self._file_numbers = file_numbers

    def _read_stream(self, f, path: str):
        next_row = self._file_numbers[path] << ROW_BITS
        for block in super()._read_stream(f, path):
            ids = np.arange(next_row, next_row + block.num_rows, dtype=np.int64)
            next_row += block.num_rows
            yield block.append_column(ROW_ID, pa.array(ids))


class NumberedText(_NumberedRows, TextDatasource):
    """One row per line (column ``text``)."""


class NumberedCSV(_NumberedRows, CSVDatasource):
    """One row per CSV/TSV record."""


def id_column(fmt: str) -> str:
    """The column that numbers the rows of a corpus in ``fmt``: ``row_hash`` for Parquet, which Ray
    Data's own reader computes from the file and the row's position, else ``row_id``."""
    return "row_hash" if fmt == "parquet" else ROW_ID


def read_corpus(files: list[str], filesystem: pafs.FileSystem, fmt: str, text_column: str,
                io_cpus: float, readers: int) -> ray.data.Dataset:
    """One dataset row per input row (per line for text files, empty lines included), with ``row_id``.

    At most ``readers`` files are read at once: reading outpaces labeling by far, and more read
    tasks in flight only fill the object store (and spill to disk) ahead of the labelers."""
    numbers = {path: number for number, path in enumerate(files)}
    options = {"file_numbers": numbers, "filesystem": filesystem}
    if fmt == "parquet":
        # Ray Data's first Parquet reader: split by row groups, it keeps far less in flight than a
        # task per file (the newer reader packs up to 128 MiB of row groups into one task)
        ray.data.DataContext.get_current().use_datasource_v2 = False
        return ray.data.read_parquet(files, filesystem=filesystem, num_cpus=io_cpus, include_row_hash=True)
    if fmt in ("csv", "tsv"):
        rules = dialect(fmt)
        parse = pacsv.ParseOptions(delimiter=rules.delimiter, quote_char='"' if rules.quoted else False,
                                   newlines_in_values=rules.quoted)
        convert = pacsv.ConvertOptions(column_types={text_column: pa.string()})
        source = NumberedCSV(files, arrow_csv_args={"parse_options": parse, "convert_options": convert}, **options)
    elif fmt == "jsonl":  # raw lines, parsed by the labeler: one bad line is one bad row
        source = NumberedText(files, drop_empty_lines=True, **options)
    elif fmt == "text":
        source = NumberedText(files, drop_empty_lines=False, **options)
    else:
        raise ValueError(f"--format: unknown format {fmt!r}; use parquet, jsonl, csv, tsv or text")
    return ray.data.read_datasource(source, num_cpus=io_cpus, concurrency=readers)


def estimate_row_bytes(path: str, filesystem: pafs.FileSystem, fmt: str) -> int:
    """Bytes per input row in memory: from the first rows of a Parquet file (its footer gives sizes
    after encoding, which for repetitive columns are far smaller), or the first MiB of a text file."""
    if fmt == "parquet":
        first = next(pq.ParquetFile(path, filesystem=filesystem).iter_batches(batch_size=SAMPLE_ROWS), None)
        return max(1, first.nbytes // max(1, first.num_rows)) if first is not None else 1
    with filesystem.open_input_stream(path) as stream:
        head = stream.read(SAMPLE_BYTES)
    return max(1, len(head) // max(1, head.count(b"\n")))


def estimate_rows(files: list[str], filesystem: pafs.FileSystem, fmt: str) -> int:
    """Rows in the corpus, for a progress bar: exact for Parquet (its footers), else the bytes of the
    files over the bytes per line of the first MiB of the first file."""
    if fmt == "parquet":
        return sum(pq.ParquetFile(path, filesystem=filesystem).metadata.num_rows for path in files)
    with filesystem.open_input_stream(files[0]) as stream:
        head = stream.read(SAMPLE_BYTES)
    sizes = sum(info.size for info in filesystem.get_file_info(files))
    return max(1, round(sizes * max(1, head.count(b"\n")) / max(1, len(head))))
