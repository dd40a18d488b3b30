"""The Ray edge of bulk labeling: read a corpus with Ray Data, label it in an actor pool, write Parquet.

    read (Parquet | JSONL | CSV/TSV | text; file, folder or glob; local or any URI), each row numbered
      -> repartition into blocks of one batch (rows, and fewer when rows are wide)
      -> map_batches(BatchLabeler, compute=ActorPoolStrategy(min, max))   the model loads once per actor
      -> write_parquet(<output>/_mtl_staging/data), checkpointed by Ray Data by row id
      -> committed into <output>, then <output>/_SUCCESS        (mtl.labeling.output_folder)

Ray Data streams blocks through the pipeline, so memory stays bounded however large the corpus
(tests/test_label_ray.py labels a corpus four times the object store and checks what was spilled).
Ray Data's job checkpointing records the row ids of every block it writes; a job killed part-way
and run again with the same input and output reads the corpus again but labels only the rows that
were not written yet. The rerun first waits for the killed job to be gone from the cluster, since a
write task of it still running could otherwise commit a block that the rerun is discarding, and
holds the staged blocks to the checkpoint before and after it writes (``output_folder.reconcile``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow.parquet as pq
import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.data.checkpoint import CheckpointConfig

from mtl import storage
from mtl.errors import OutputInUseError
from mtl.inference.model_folder import embedding_dimension, read_model_description
from mtl.inference.predictor import check_backend
from mtl.labeling import output_folder
from mtl.labeling.columns import PARQUET_OPTIONS, BatchLabeler, output_columns
from mtl.labeling.corpus import (
    estimate_row_bytes,
    estimate_rows,
    expand_input,
    id_column,
    input_format,
    read_corpus,
)
from mtl.runtime.progress import Progress, RowCounter, progress_bar
from mtl.tasks import TaskSpec

# reading and writing Parquet is light next to the model: a quarter CPU each leaves the labeler
# actors the cores without starving the readers that feed them
IO_CPUS = 0.25
# Ray Data's streaming repartition runs tasks that each ask for a whole CPU
REPARTITION_CPUS = 1.0
# how long a rerun waits for the attempt it resumes to end: the job of a killed driver ends within
# seconds, one whose node was lost when the cluster gives the node up
EARLIER_ATTEMPT_SECONDS = 120.0
# write passes before giving up on a staged output that keeps losing blocks it had committed
WRITE_PASSES = 3

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelOptions:
    """What ``python -m jobs.label`` takes; see its --help."""

    model: str
    input: str
    output: str
    text_column: str = "text"
    tokens_column: str | None = None
    input_format: str | None = None
    tasks: tuple[str, ...] | None = None
    embedding: bool = True
    embedding_dtype: str = "float32"
    backend: str = "torch"         # or onnx: the model folder's ONNX export (python -m jobs.export)
    precision: str = "float32"     # torch: float32 or bfloat16; onnx: float32 or int8
    actor_batch_rows: int = 1024   # rows handed to a labeler actor at once (sorted by length there)
    model_batch_size: int | None = None   # texts per model call in an actor (None: the backend's own)
    min_actors: int | None = None
    max_actors: int | None = None
    cpus_per_actor: float | None = None
    threads_per_actor: int | None = None
    use_gpu: bool | None = None
    max_length: int | None = None
    rows_per_file: int = 200_000
    overwrite: bool = False
    output_shared: bool = False
    block_bytes: int = 8 * 1024**2


@dataclass
class LabelSummary:
    output: str
    files: list[str]
    rows: int               # rows in the output
    seconds: float
    skipped: bool = False   # the output was already complete
    resumed_rows: int = 0   # rows an earlier, killed attempt had labeled; this run labeled the rest


def check_options(options: LabelOptions) -> list[TaskSpec]:
    """Fail before any work on a bad model folder, an unknown task or an unknown embedding dtype."""
    description = read_model_description(options.model)
    specs = {task["name"]: TaskSpec.from_dict(task) for task in description["tasks"]}
    unknown = [task for task in options.tasks or () if task not in specs]
    if unknown:
        raise ValueError(f"--tasks: unknown task(s) {unknown}; the model has {list(specs)}")
    if options.embedding_dtype not in ("float32", "float16"):
        raise ValueError("--embedding-dtype: float32 or float16")
    check_backend(options.backend, options.precision, options.model)
    return [specs[task] for task in (options.tasks or specs)]


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


def this_attempt() -> dict:
    """Who is labeling: the Ray job of this driver, with its start time since job ids restart at
    each new cluster."""
    job_id = ray.get_runtime_context().get_job_id()
    return {"job_id": job_id, "started": _jobs()[job_id]["StartTime"]}


def wait_for_attempt_to_end(attempt: dict | None, seconds: float = EARLIER_ATTEMPT_SECONDS) -> None:
    """Wait until the Ray job of ``attempt`` has ended: two attempts writing into one output at
    once could commit blocks that the other discards. A job this cluster does not know has ended."""
    # an earlier call in this driver has no write tasks left: a failed write stops its own
    if attempt is None or attempt["job_id"] == ray.get_runtime_context().get_job_id() or not _is_running(attempt):
        return
    logger.warning("waiting for Ray job %s, the earlier attempt at this output, to end", attempt["job_id"])
    deadline = time.monotonic() + seconds
    while _is_running(attempt):
        if time.monotonic() > deadline:
            raise OutputInUseError(f"--output: Ray job {attempt['job_id']} is still labeling into it after "
                                   f"{seconds:.0f}s; stop that job (ray job stop, or end its driver) "
                                   "or label into another folder")
        time.sleep(0.5)


def _is_running(attempt: dict) -> bool:
    job = _jobs().get(attempt["job_id"])
    return job is not None and job["StartTime"] == attempt["started"] and not job["IsDead"]


def _jobs() -> dict[str, dict]:
    # the cluster's job table as the GCS keeps it: Ray's public job APIs need the dashboard
    return {job["JobID"]: job for job in ray._private.state.jobs()}


def _label(options: LabelOptions, specs: list[TaskSpec], files: list[str], filesystem, fmt: str,
           progress: Progress | None = None) -> ray.data.Dataset:
    """The corpus read, cut into batches and labeled by the actor pool (lazily: nothing runs yet)."""
    plan = cluster_plan(options)
    dataset = read_corpus(files, filesystem, fmt, options.text_column, IO_CPUS, readers=max(1, plan.max_actors // 4))
    rows_per_batch = batch_rows(options, estimate_row_bytes(files[0], filesystem, fmt),
                                embedding_bytes=_embedding_bytes(options))
    if fmt != "jsonl":
        _check_no_clash([name for name in dataset.schema().names if name != id_column(fmt)],
                        [id_column(fmt), *output_columns(specs, options.embedding)])
    # blocks of one batch each, so that every actor gets work however the input is split into files
    return dataset.repartition(target_num_rows_per_block=rows_per_batch).map_batches(
        BatchLabeler,
        fn_constructor_kwargs={**_labeler_arguments(options, fmt, plan.threads),
                               "on_rows": RowCounter(progress.name) if progress is not None else None},
        batch_size=rows_per_batch,
        batch_format="pyarrow",
        # Ray Data's default keeps a second batch queued at each actor, which busies the actor while
        # the executor takes up to 0.2 s to see a batch end and hand it the next
        compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
    )


def check_output_reachable(output: str, *, shared: bool, nodes: int) -> None:
    """Refuse a local output on a cluster of several nodes: each node would write its blocks to its
    own disk and the output seen from here would silently miss rows."""
    if nodes > 1 and storage.is_local(output) and not shared:
        raise ValueError(f"--output: '{output}' is a local path, and this cluster has {nodes} nodes, each "
                         "with its own disk; write to shared storage (s3://, gs://, ...), or pass "
                         "--output-shared if every node mounts this path")


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


def batch_rows(options: LabelOptions, row_bytes: int, *, embedding_bytes: int) -> int:
    """Rows per actor batch: ``actor_batch_rows``, fewer when rows are wide enough to make a batch
    bigger than a block (input columns are carried through, so a corpus of documents or images
    beside the text would otherwise make batches of hundreds of MiB)."""
    return max(1, min(options.actor_batch_rows, options.block_bytes // (row_bytes + embedding_bytes)))


def _embedding_bytes(options: LabelOptions) -> int:
    if not options.embedding:
        return 0
    hidden = embedding_dimension(options.model)
    return hidden * (4 if options.embedding_dtype == "float32" else 2)


def _labeler_arguments(options: LabelOptions, fmt: str, threads: int | None) -> dict:
    return {"model": storage.absolute(options.model),
            "text_column": None if options.tokens_column else options.text_column,
            "tokens_column": options.tokens_column, "tasks": list(options.tasks) if options.tasks else None,
            "embedding": options.embedding, "embedding_dtype": options.embedding_dtype,
            "model_batch_size": options.model_batch_size, "max_length": options.max_length,
            "backend": options.backend, "precision": options.precision,
            "threads": threads, "json_lines": fmt == "jsonl"}


@dataclass(frozen=True)
class ActorPlan:
    """How many labeler actors, what each reserves from Ray, and how many torch threads each runs."""

    min_actors: int
    max_actors: int
    cpus: float
    gpus: int
    threads: int | None


def plan_actors(options: LabelOptions, node_cpus: list[float], cluster_gpus: float) -> ActorPlan:
    """The actor pool for a cluster whose nodes have ``node_cpus`` cores and ``cluster_gpus`` GPUs.

    On GPUs: an actor per GPU. On CPUs: an actor per core with one torch thread each, since a small
    encoder's matrices split poorly over threads (two one-thread actors beat one two-thread actor:
    docs/benchmarks.md). Actors then reserve less than a whole CPU each,
    which keeps room for the repartition (a CPU), a reader and a writer: without it the pipeline
    stalls once the actors hold every CPU.
    """
    use_gpu = options.use_gpu if options.use_gpu is not None else cluster_gpus > 0
    cores = int(max(node_cpus, default=1))
    default_actors = int(cluster_gpus) if use_gpu else sum(int(cpus) for cpus in node_cpus)
    max_actors = max(options.max_actors or default_actors, options.min_actors or 1, 1)
    min_actors = options.min_actors or max_actors
    actors_per_node = max(1, min(max_actors, cores))
    if options.cpus_per_actor is not None:
        cpus = options.cpus_per_actor
    elif use_gpu:
        cpus = 1.0
    else:
        cpus = min(1.0, max(0.0, (cores - REPARTITION_CPUS - 2 * IO_CPUS) / actors_per_node))
    threads = options.threads_per_actor or (None if use_gpu else max(1, cores // actors_per_node))
    return ActorPlan(min_actors, max_actors, round(cpus, 4), 1 if use_gpu else 0, threads)


def cluster_plan(options: LabelOptions) -> ActorPlan:
    """The actors ``options`` get on the running cluster: its live nodes' CPUs and its GPUs."""
    node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    return plan_actors(options, node_cpus, ray.cluster_resources().get("GPU", 0))


def _check_no_clash(input_columns: list[str], added: list[str]) -> None:
    clash = sorted(set(input_columns) & set(added))
    if clash:
        raise ValueError(f"--input: the corpus already has column(s) {clash}, which labeling adds; rename them")
