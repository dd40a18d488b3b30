"""The Ray edge of bulk labeling: read a corpus with Ray Data, label it in an actor pool, write Parquet.

    read (Parquet | JSONL | CSV/TSV | text; file, folder or glob; local or any URI), each row numbered
      -> repartition into blocks of one batch (rows, and fewer when rows are wide)
      -> map_batches(BatchLabeler, compute=ActorPoolStrategy(min, max))   the model loads once per actor
      -> write_parquet(<output>/_mtl_staging/data), checkpointed by Ray Data by row id
      -> committed into <output>, then <output>/_SUCCESS        (mtl.labeling.output_folder)

Ray Data streams blocks through the pipeline, so memory stays bounded however large the corpus
(tests/labeling/test_label_ray.py labels a corpus four times the object store and checks what was spilled).
Ray Data's job checkpointing records the row ids of every block it writes; a job killed part-way
and run again with the same input and output reads the corpus again but labels only the rows that
were not written yet. The rerun first waits for the killed job to be gone from the cluster, since a
write task of it still running could otherwise commit a block that the rerun is discarding, and
holds the staged blocks to the checkpoint before and after it writes (``output_folder.reconcile``).
"""

from __future__ import annotations

import logging
import time

import pyarrow.parquet as pq
import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.data.checkpoint import CheckpointConfig

from mtl import storage
from mtl.errors import OutputInUseError
from mtl.labeling import output_folder
from mtl.labeling.actors import IO_CPUS, cluster_plan, labeler_arguments
from mtl.labeling.attempts import this_attempt, wait_for_attempt_to_end
from mtl.labeling.columns import PARQUET_OPTIONS, BatchLabeler, output_columns
from mtl.labeling.corpus import (
    estimate_row_bytes,
    estimate_rows,
    expand_input,
    id_column,
    input_format,
    read_corpus,
)
from mtl.labeling.options import (
    LabelOptions,
    LabelSummary,
    batch_rows,
    check_options,
    check_output_reachable,
    embedding_bytes,
)
from mtl.runtime.progress import Progress, RowCounter, progress_bar
from mtl.tasks import TaskSpec

# write passes before giving up on a staged output that keeps losing blocks it had committed
WRITE_PASSES = 3

logger = logging.getLogger(__name__)


def run_labeling(options: LabelOptions, *, progress: bool = False) -> LabelSummary:
    """Label the corpus into ``options.output``; a complete output is left alone unless ``overwrite``,
    an unfinished one (a killed run) is resumed. With ``progress``, draw the rows as a bar on stderr
    (its total estimated from the input's size, but for Parquet)."""
    specs = check_options(options)
    output = storage.absolute(options.output)
    check_output_reachable(output, shared=options.output_shared, nodes=sum(node["Alive"] for node in ray.nodes()))
    complete = output_folder.completed_files(output)
    if complete is not None and not options.overwrite:
        return LabelSummary(output=output, files=complete, rows=0, seconds=0.0, skipped=True)
    started = time.perf_counter()
    unfinished_commit = output_folder.pending_commit(output)
    if unfinished_commit is not None:  # killed while committing: finish the commit
        files = output_folder.commit(unfinished_commit)
        return LabelSummary(output=output, files=files, rows=_count_rows(files), seconds=0.0,
                            resumed_rows=_count_rows(files))
    files, filesystem = expand_input(options.input)
    fmt = input_format(files, options.input_format)
    _configure_streaming(options)
    total = estimate_rows(files, filesystem, fmt) if progress else None
    # a dataset keeps the context it was made in: turn checkpointing on before reading
    with _checkpointed(output, id_column(fmt)), progress_bar("labeling", "row", total=total, enabled=progress) as bar:
        labeled = _label(options, specs, files, filesystem, fmt, bar)  # checks the input before anything is written
        attempt = this_attempt()
        run = output_folder.begin_run(output, files, overwrite=options.overwrite, attempt=attempt)
        if run.resumed:
            wait_for_attempt_to_end(run.earlier_attempt)
            output_folder.take_over(run, attempt)
            output_folder.reconcile(run)
        already_written = set(storage.list_files(run.data))
        _write(labeled, run, options.rows_per_file)
    resumed_rows = _count_rows([path for path in storage.list_files(run.data) if path in already_written])
    written = output_folder.commit(run)
    return LabelSummary(output=output, files=written, rows=_count_rows(written),
                        seconds=time.perf_counter() - started, resumed_rows=resumed_rows)


def _write(labeled: ray.data.Dataset, run: output_folder.Run, rows_per_file: int) -> None:
    """Write the labeled rows into the run's staging folder, again for any block the checkpoint
    recorded but whose file is gone (a late write of a killed attempt, discarded while resuming)."""
    for _ in range(WRITE_PASSES):
        labeled.write_parquet(run.data, max_rows_per_file=rows_per_file, ray_remote_args={"num_cpus": IO_CPUS},
                              **PARQUET_OPTIONS)
        lost = output_folder.reconcile(run)
        if not lost:
            return
        logger.warning("%d labeled block(s) in %s were recorded as written but are missing; labeling them again",
                       lost, run.data)
    raise OutputInUseError(f"--output: {run.output} kept losing labeled blocks after {WRITE_PASSES} passes; "
                           "is another job writing into it?")


def _label(options: LabelOptions, specs: list[TaskSpec], files: list[str], filesystem, fmt: str,
           progress: Progress | None = None) -> ray.data.Dataset:
    """The corpus read, cut into batches and labeled by the actor pool (lazily: nothing runs yet)."""
    plan = cluster_plan(options)
    dataset = read_corpus(files, filesystem, fmt, options.text_column, IO_CPUS, readers=max(1, plan.max_actors // 4))
    rows_per_batch = batch_rows(options, estimate_row_bytes(files[0], filesystem, fmt),
                                embedding_bytes=embedding_bytes(options))
    if fmt != "jsonl":
        _check_no_clash([name for name in dataset.schema().names if name != id_column(fmt)],
                        [id_column(fmt), *output_columns(specs, options.embedding)])
    # blocks of one batch each, so that every actor gets work however the input is split into files
    return dataset.repartition(target_num_rows_per_block=rows_per_batch).map_batches(
        BatchLabeler,
        fn_constructor_kwargs={**labeler_arguments(options, fmt, plan.threads),
                               "on_rows": RowCounter(progress.name) if progress is not None else None},
        batch_size=rows_per_batch,
        batch_format="pyarrow",
        # Ray Data's default keeps a second batch queued at each actor, which busies the actor while
        # the executor takes up to 0.2 s to see a batch end and hand it the next
        compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
    )


class _checkpointed:
    """Ray Data's job checkpointing, on for the write of one run and off after it."""

    def __init__(self, output: str, row_ids: str):
        # the staging folder goes as a whole once the output is committed
        self.config = CheckpointConfig(id_column=row_ids, checkpoint_path=output_folder.checkpoint_path(output),
                                       delete_checkpoint_on_success=False)

    def __enter__(self) -> None:
        ray.data.DataContext.get_current().checkpoint_config = self.config

    def __exit__(self, *_exception) -> None:
        ray.data.DataContext.get_current().checkpoint_config = None


def _count_rows(files: list[str]) -> int:
    total = 0
    for path in files:
        with storage.open_binary(path) as stream:
            total += pq.ParquetFile(stream).metadata.num_rows
    return total


def _configure_streaming(options: LabelOptions) -> None:
    """Keep the data in flight within a modest object store, however large the corpus: small blocks
    let many be in flight at once without filling the store (Ray's default store is 30% of memory)."""
    ray.data.DataContext.get_current().target_max_block_size = options.block_bytes


def _check_no_clash(input_columns: list[str], added: list[str]) -> None:
    clash = sorted(set(input_columns) & set(added))
    if clash:
        raise ValueError(f"--input: the corpus already has column(s) {clash}, which labeling adds; rename them")
