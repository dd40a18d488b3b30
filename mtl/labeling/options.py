"""What a label job is asked to do (``python -m jobs.label``'s options), checked before any work,
and what it reports when done.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtl import storage
from mtl.inference.model_folder import embedding_dimension, read_model_description
from mtl.inference.predictor import check_backend
from mtl.tasks import TaskSpec


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


def check_output_reachable(output: str, *, shared: bool, nodes: int) -> None:
    """Refuse a local output on a cluster of several nodes: each node would write its blocks to its
    own disk and the output seen from here would silently miss rows."""
    if nodes > 1 and storage.is_local(output) and not shared:
        raise ValueError(f"--output: '{output}' is a local path, and this cluster has {nodes} nodes, each "
                         "with its own disk; write to shared storage (s3://, gs://, ...), or pass "
                         "--output-shared if every node mounts this path")


def batch_rows(options: LabelOptions, row_bytes: int, *, embedding_bytes: int) -> int:
    """Rows per actor batch: ``actor_batch_rows``, fewer when rows are wide enough to make a batch
    bigger than a block (input columns are carried through, so a corpus of documents or images
    beside the text would otherwise make batches of hundreds of MiB)."""
    return max(1, min(options.actor_batch_rows, options.block_bytes // (row_bytes + embedding_bytes)))


def embedding_bytes(options: LabelOptions) -> int:
    if not options.embedding:
        return 0
    hidden = embedding_dimension(options.model)
    return hidden * (4 if options.embedding_dtype == "float32" else 2)
