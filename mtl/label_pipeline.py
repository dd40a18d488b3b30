"""The Ray edge of bulk labeling: read a corpus with Ray Data, label it in an actor pool, write Parquet.

    read (Parquet | JSONL | CSV/TSV | text; file, folder or glob; local or any pyarrow URI)
      -> map_batches(BatchLabeler, compute=ActorPoolStrategy(min, max))   the model loads once per actor
      -> write_parquet(<output>/_inprogress)  -> committed into <output>, then <output>/_SUCCESS

Ray Data streams blocks through the pipeline, so memory stays bounded however large the corpus.
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

from mtl.checkpoint import read_model_description
from mtl.label import BatchLabeler, commit_output, output_columns
from mtl.tasks import TaskSpec

STAGING = "_inprogress"
# reading and writing Parquet is light next to the model: a quarter CPU each leaves the labeler
# actors the cores without starving the readers that feed them
IO_CPUS = 0.25
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
    batch_size: int = 2048
    predict_batch_size: int = 64
    min_actors: int = 1
    max_actors: int | None = None
    cpus_per_actor: float = 1
    threads_per_actor: int | None = None
    use_gpu: bool | None = None
    max_length: int | None = None
    rows_per_file: int = 200_000
    overwrite: bool = False
    block_bytes: int = 16 * 1024**2


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
        return ray.data.read_parquet(files, filesystem=filesystem, ray_remote_args={"num_cpus": IO_CPUS})
    if fmt in ("csv", "tsv"):
        parse = pacsv.ParseOptions(delimiter="\t", quote_char=False) if fmt == "tsv" else pacsv.ParseOptions(newlines_in_values=True)
        convert = pacsv.ConvertOptions(column_types={text_column: pa.string()})
        return ray.data.read_csv(files, filesystem=filesystem, parse_options=parse, convert_options=convert,
                                 ray_remote_args={"num_cpus": IO_CPUS})
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
    # small blocks keep many in flight within a modest object store (Ray's default is 128 MiB)
    ray.data.DataContext.get_current().target_max_block_size = options.block_bytes
    dataset = read_corpus(files, filesystem, fmt, options.text_column)
    if fmt != "jsonl":
        _check_no_clash(dataset.schema().names, output_columns(specs, options.embedding))
    labeled = dataset.map_batches(
        BatchLabeler,
        fn_constructor_kwargs=_labeler_arguments(options, fmt),
        batch_size=options.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=options.min_actors, max_size=_max_actors(options)),
        num_cpus=options.cpus_per_actor,
        num_gpus=1 if _use_gpu(options) else 0,
    )
    labeled.write_parquet(str(staging.absolute()), max_rows_per_file=options.rows_per_file,
                          ray_remote_args={"num_cpus": IO_CPUS})
    written = commit_output(staging, output)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in written)
    return LabelSummary(output=output, files=written, rows=rows, seconds=time.perf_counter() - started)


def _labeler_arguments(options: LabelOptions, fmt: str) -> dict:
    return {"model": str(Path(options.model).absolute()), "text_column": None if options.tokens_column else options.text_column,
            "tokens_column": options.tokens_column, "tasks": list(options.tasks) if options.tasks else None,
            "embedding": options.embedding, "embedding_dtype": options.embedding_dtype,
            "batch_size": options.predict_batch_size, "max_length": options.max_length,
            "threads": _threads_per_actor(options), "json_lines": fmt == "jsonl"}


def _threads_per_actor(options: LabelOptions) -> int:
    """Torch threads per actor: by default a node's cores shared among the actors it holds.

    An actor reserves ``cpus_per_actor`` for Ray's scheduling, but the CPU kept back for listing,
    reading and writing is idle most of the time, so torch uses it too (benchmarks/label_throughput.py
    on 2 cores: 0.45x of an in-memory ``encode`` with 1 thread, 0.73-0.75x with both cores).
    """
    if options.threads_per_actor:
        return options.threads_per_actor
    node_cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=1)
    actors_per_node = max(1, min(_max_actors(options), int(node_cpus // options.cpus_per_actor)))
    return max(1, int(node_cpus // actors_per_node))


def _use_gpu(options: LabelOptions) -> bool:
    return options.use_gpu if options.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0


def _max_actors(options: LabelOptions) -> int:
    if options.max_actors:
        return max(options.max_actors, options.min_actors)
    if _use_gpu(options):
        return max(options.min_actors, int(ray.cluster_resources().get("GPU", 1)))
    # leave room for Ray Data's file listing (1 CPU, at start-up) and for a reader and a writer
    spare = ray.cluster_resources().get("CPU", 1) - 1 - 2 * IO_CPUS
    return max(options.min_actors, int(spare // options.cpus_per_actor))


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
