"""The Ray edge of bulk labeling: read a corpus with Ray Data, label it in an actor pool, write Parquet.

    read (Parquet | JSONL | CSV/TSV | text; file, folder or glob; local or any pyarrow URI)
      -> repartition into blocks of one batch (rows, and fewer when rows are wide)
      -> map_batches(BatchLabeler, compute=ActorPoolStrategy(min, max))   the model loads once per actor
      -> write_parquet(<output>/_inprogress)  -> committed into <output>, then <output>/_SUCCESS

Ray Data streams blocks through the pipeline, so memory stays bounded however large the corpus
(tests/test_label_ray.py labels a corpus four times the object store and checks what was spilled).
Files are written to a staging folder that readers skip (its name starts with ``_``) and moved into
place only when the whole corpus is done; a job killed half-way and run again starts over from a
clean staging folder, so the output is complete and free of duplicates.
"""

from __future__ import annotations

import fnmatch
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data import ActorPoolStrategy
from transformers import AutoConfig

from mtl.checkpoint import read_model_description
from mtl.label import BatchLabeler, commit_output, output_columns
from mtl.tasks import TaskSpec

STAGING = "_inprogress"
# reading and writing Parquet is light next to the model: a quarter CPU each leaves the labeler
# actors the cores without starving the readers that feed them
IO_CPUS = 0.25
# Ray Data's streaming repartition runs tasks that each ask for a whole CPU
REPARTITION_CPUS = 1.0
SAMPLE_BYTES = 1024**2
SAMPLE_ROWS = 1000
_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
            ".txt": "text", ".text": "text"}


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
    batch_size: int = 1024
    predict_batch_size: int = 32
    min_actors: int | None = None
    max_actors: int | None = None
    cpus_per_actor: float | None = None
    threads_per_actor: int | None = None
    use_gpu: bool | None = None
    max_length: int | None = None
    rows_per_file: int = 200_000
    overwrite: bool = False
    block_bytes: int = 8 * 1024**2


@dataclass
class LabelSummary:
    output: Path
    files: list[Path]
    rows: int
    seconds: float
    skipped: bool = False


def expand_input(pattern: str) -> tuple[list[str], pafs.FileSystem]:
    """A file, a folder (every file below it) or a glob, local or behind any pyarrow filesystem URI."""
    filesystem, path = pafs.FileSystem.from_uri(pattern) if "://" in pattern else \
        (pafs.LocalFileSystem(), str(Path(pattern).absolute()))
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
                   and not Path(info.path).name.startswith(("_", "."))
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
    suffixes = {Path(name).suffix.lower() for name in files}
    formats = {_FORMATS.get(suffix) for suffix in suffixes}
    if len(formats) != 1 or None in formats:
        raise ValueError(f"--input: cannot tell one format from the suffixes {sorted(suffixes)}; pass --format")
    return formats.pop()


def read_corpus(files: list[str], filesystem: pafs.FileSystem, fmt: str, text_column: str) -> ray.data.Dataset:
    """One dataset row per input row (per line for text files, empty lines included)."""
    if fmt == "parquet":
        return ray.data.read_parquet(files, filesystem=filesystem, num_cpus=IO_CPUS)
    if fmt in ("csv", "tsv"):
        parse = pacsv.ParseOptions(delimiter="\t", quote_char=False) if fmt == "tsv" else pacsv.ParseOptions(newlines_in_values=True)
        convert = pacsv.ConvertOptions(column_types={text_column: pa.string()})
        return ray.data.read_csv(files, filesystem=filesystem, parse_options=parse, convert_options=convert,
                                 num_cpus=IO_CPUS)
    if fmt == "jsonl":  # raw lines, parsed by the labeler: one bad line is one bad row
        return ray.data.read_text(files, filesystem=filesystem, drop_empty_lines=True, num_cpus=IO_CPUS)
    if fmt == "text":
        return ray.data.read_text(files, filesystem=filesystem, drop_empty_lines=False, num_cpus=IO_CPUS)
    raise ValueError(f"--format: unknown format {fmt!r}; use parquet, jsonl, csv, tsv or text")


def check_options(options: LabelOptions) -> list[TaskSpec]:
    """Fail before any work on a bad model folder, an unknown task or an unknown embedding dtype."""
    description = read_model_description(options.model)
    specs = {task["name"]: TaskSpec.from_dict(task) for task in description["tasks"]}
    unknown = [task for task in options.tasks or () if task not in specs]
    if unknown:
        raise ValueError(f"--tasks: unknown task(s) {unknown}; the model has {list(specs)}")
    if options.embedding_dtype not in ("float32", "float16"):
        raise ValueError("--embedding-dtype: float32 or float16")
    return [specs[task] for task in (options.tasks or specs)]


def run_labeling(options: LabelOptions) -> LabelSummary:
    """Label the corpus into ``options.output``; a complete output is left alone unless ``overwrite``."""
    specs = check_options(options)
    output = Path(options.output)
    if (output / "_SUCCESS").exists() and not options.overwrite:
        files = sorted(output.glob("*.parquet"))
        return LabelSummary(output=output, files=files, rows=0, seconds=0.0, skipped=True)
    staging = output / STAGING
    if (staging / "_FILES").exists():  # killed while committing: finish the commit
        return LabelSummary(output=output, files=commit_output(staging, output), rows=0, seconds=0.0)
    _clear(output)
    files, filesystem = expand_input(options.input)
    fmt = input_format(files, options.input_format)
    started = time.perf_counter()
    _configure_streaming(options)
    dataset = read_corpus(files, filesystem, fmt, options.text_column)
    rows_per_batch = batch_rows(options, estimate_row_bytes(files[0], filesystem, fmt),
                                embedding_bytes=_embedding_bytes(options))
    if fmt != "jsonl":
        _check_no_clash(dataset.schema().names, output_columns(specs, options.embedding))
    plan = _cluster_plan(options)
    # blocks of one batch each, so that every actor gets work however the input is split into files
    labeled = dataset.repartition(target_num_rows_per_block=rows_per_batch).map_batches(
        BatchLabeler,
        fn_constructor_kwargs=_labeler_arguments(options, fmt, plan.threads),
        batch_size=rows_per_batch,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors,
                                  max_tasks_in_flight_per_actor=plan.tasks_in_flight),
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
    )
    labeled.write_parquet(str(staging.absolute()), max_rows_per_file=options.rows_per_file,
                          ray_remote_args={"num_cpus": IO_CPUS})
    written = commit_output(staging, output)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in written)
    return LabelSummary(output=output, files=written, rows=rows, seconds=time.perf_counter() - started)


def _configure_streaming(options: LabelOptions) -> None:
    """Keep the data in flight within a modest object store, however large the corpus.

    Small blocks let many be in flight at once (Ray's default store is 30% of memory; the tests use
    100 MiB). Parquet goes through Ray Data's first reader: the newer one packs up to 128 MiB of
    row groups into one read task whose output is not held back, and with the labeler as the slow
    stage it spilled 313 MiB of a 375 MiB corpus to disk (the test
    tests/test_label_ray.py::test_streams_a_corpus_larger_than_the_object_store fails on that).
    """
    context = ray.data.DataContext.get_current()
    context.target_max_block_size = options.block_bytes
    context.use_datasource_v2 = False


def estimate_row_bytes(path: str, filesystem: pafs.FileSystem, fmt: str) -> int:
    """Bytes per input row in memory: from the first rows of a Parquet file (its footer gives sizes
    after encoding, which for repetitive columns are far smaller), or the first MiB of a text file."""
    if fmt == "parquet":
        first = next(pq.ParquetFile(path, filesystem=filesystem).iter_batches(batch_size=SAMPLE_ROWS), None)
        return max(1, first.nbytes // max(1, first.num_rows)) if first is not None else 1
    with filesystem.open_input_stream(path) as stream:
        head = stream.read(SAMPLE_BYTES)
    return max(1, len(head) // max(1, head.count(b"\n")))


def batch_rows(options: LabelOptions, row_bytes: int, *, embedding_bytes: int) -> int:
    """Rows per actor batch: ``batch_size``, fewer when rows are wide enough to make a batch
    bigger than a block (input columns are carried through, so a corpus of documents or images
    beside the text would otherwise make batches of hundreds of MiB)."""
    return max(1, min(options.batch_size, options.block_bytes // (row_bytes + embedding_bytes)))


def _embedding_bytes(options: LabelOptions) -> int:
    if not options.embedding:
        return 0
    hidden = AutoConfig.from_pretrained(options.model).hidden_size
    return hidden * (4 if options.embedding_dtype == "float32" else 2)


def _labeler_arguments(options: LabelOptions, fmt: str, threads: int | None) -> dict:
    return {"model": str(Path(options.model).absolute()), "text_column": None if options.tokens_column else options.text_column,
            "tokens_column": options.tokens_column, "tasks": list(options.tasks) if options.tasks else None,
            "embedding": options.embedding, "embedding_dtype": options.embedding_dtype,
            "batch_size": options.predict_batch_size, "max_length": options.max_length,
            "threads": threads, "json_lines": fmt == "jsonl"}


@dataclass(frozen=True)
class ActorPlan:
    """How many labeler actors, what each reserves from Ray, and how many torch threads each runs."""

    min_actors: int
    max_actors: int
    cpus: float
    gpus: int
    threads: int | None
    tasks_in_flight: int | None


def plan_actors(options: LabelOptions, node_cpus: list[float], cluster_gpus: float) -> ActorPlan:
    """The actor pool for a cluster whose nodes have ``node_cpus`` cores and ``cluster_gpus`` GPUs.

    On GPUs: an actor per GPU. On CPUs: an actor per core with one torch thread each, since a small
    encoder's matrices split poorly over threads (benchmarks/label_throughput.py on 2 cores: two
    one-thread actors beat one two-thread actor). Actors then reserve less than a whole CPU each,
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
    # one batch at a time per actor lets a fast actor take the next batch instead of a slow one queueing
    # it, which evens out the end of a job; an autoscaling pool needs queued batches to see demand
    tasks_in_flight = 1 if min_actors == max_actors else None
    return ActorPlan(min_actors, max_actors, round(cpus, 4), 1 if use_gpu else 0, threads, tasks_in_flight)


def _cluster_plan(options: LabelOptions) -> ActorPlan:
    node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    return plan_actors(options, node_cpus, ray.cluster_resources().get("GPU", 0))


def _clear(output: Path) -> None:
    """Remove what an unfinished earlier run left: its staging folder and any uncommitted files."""
    shutil.rmtree(output / STAGING, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    for leftover in [*output.glob("*.parquet"), output / "_SUCCESS"]:
        leftover.unlink(missing_ok=True)


def _check_no_clash(input_columns: list[str], added: list[str]) -> None:
    clash = sorted(set(input_columns) & set(added))
    if clash:
        raise ValueError(f"--input: the corpus already has column(s) {clash}, which labeling adds; rename them")
