"""What training's Ray Data tasks run: the datasource of labeled rows and a rank's share of them.

Every read task imports this module in its own process, so it imports little (no torch, no
transformers): a task started for a pass costs a fraction of a second, not seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from mtl.data.readers import iter_rows
from mtl.labeling.corpus import ROW_BITS, ROW_ID
from mtl.task_config import DataSource

BLOCK_ROWS = 1024
ROW_MASK = (1 << ROW_BITS) - 1


class LabeledRows(FileBasedDatasource):
    """A task's data files as rows of the readers' schema (``mtl.data.readers``) plus ``row_id``."""

    def __init__(self, paths: list[str], *, source: DataSource, kind: str, file_numbers: dict[str, int],
                 names: dict[str, str], **options):
        super().__init__(paths, **options)
        self.source, self.kind, self.file_numbers, self.names = source, kind, file_numbers, names

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        first = self.file_numbers[path] << ROW_BITS
        chunk = []
        for number, row in enumerate(iter_rows(self.source, self.kind, f, name=self.names[path])):
            chunk.append({**row, ROW_ID: first + number})
            if len(chunk) == BLOCK_ROWS:
                yield pa.Table.from_pylist(chunk)
                chunk = []
        if chunk:
            yield pa.Table.from_pylist(chunk)

    def _open_input_source(self, filesystem, path, **open_args):
        return filesystem.open_input_file(path)  # seekable, as Parquet needs


def rank_share(batch: pa.Table, *, offsets: np.ndarray, keep: np.ndarray | None, capped_rows: int, rank: int,
               world_size: int, limit: int) -> pa.Table:
    """The rows of ``batch`` that belong to ``rank``: of the rows kept, positions ``rank``,
    ``rank + world_size``, ... below ``limit`` (the same count on every rank). ``keep`` samples the
    first ``capped_rows`` positions (the task's own source); every row after them is kept."""
    ids = batch[ROW_ID].to_numpy()
    positions = offsets[ids >> ROW_BITS] + (ids & ROW_MASK)
    kept = np.ones(len(ids), dtype=bool)
    if keep is not None:
        beyond = positions >= capped_rows
        index = np.minimum(np.searchsorted(keep, positions), len(keep) - 1)
        kept = (keep[index] == positions) | beyond
        positions = np.where(beyond, len(keep) + positions - capped_rows, index)
    return batch.filter(pa.array(kept & (positions % world_size == rank) & (positions < limit)))
