"""Label a corpus with a trained model folder: embeddings, sentence labels and entities, to Parquet.

    python -m jobs.label --model runs/demo/best --input data/demo/corpus.txt --output runs/demo/labels
    ray job submit --working-dir . -- python -m jobs.label --model s3://bucket/runs/demo/best \
        --input s3://bucket/corpus/ --output s3://bucket/labels/

Run again after a kill, it labels only the rows that were not written yet.
"""

from __future__ import annotations

import argparse
import sys

from mtl.errors import ModelFolderError, OutputInUseError


def actor_range(value: str) -> tuple[int, int]:
    """``N`` or ``MIN,MAX``, each at least 1."""
    try:
        sizes = [int(part) for part in value.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1 or sizes[0] > sizes[-1]:
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX with 1 <= MIN <= MAX, got {value!r}")
    return sizes[0], sizes[-1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.label", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="model folder written by jobs.train (local path or URI), or models:/NAME@ALIAS")
    parser.add_argument("--input", required=True, help="file, folder or glob; local path or URI (s3://, gs://, ...)")
    parser.add_argument("--output", required=True,
                        help="output folder of Parquet files; local path or URI. It must be empty or hold an "
                             "earlier output of this job: other files in it stop the job")
    parser.add_argument("--output-shared", action="store_true",
                        help="the local --output path is a file system that every node of the cluster mounts "
                             "(without it, a local output on a cluster of several nodes is refused)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text-column", default="text", help="column with raw text (default: text)")
    source.add_argument("--tokens-column", help="column with pre-split tokens: tagged token by token")
    parser.add_argument("--format", dest="input_format", choices=["parquet", "jsonl", "csv", "tsv", "text"],
                        help="input format (default: from the file suffix)")
    parser.add_argument("--tasks", help="comma-separated tasks to run (default: all)")
    parser.add_argument("--no-embedding", dest="embedding", action="store_false", help="leave out the embedding")
    parser.add_argument("--embedding-dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="torch, or onnx: the model folder's ONNX export, made by python -m jobs.export")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "int8"], default="float32",
                        help="float32; bfloat16 (torch: autocast) or int8 (onnx)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="rows per batch handed to an actor, sorted by length there to cut padding "
                             "(fewer when rows are wide, so that a batch fits in an 8 MiB block)")
    parser.add_argument("--actors", type=actor_range, default=(None, None),
                        help="actor pool size: N, or MIN,MAX to autoscale "
                             "(default: one per GPU, or one per CPU core on a CPU cluster)")
    parser.add_argument("--cpus-per-actor", type=float,
                        help="CPUs each actor reserves from Ray (default: 1 with GPUs; on CPUs, what is "
                             "left of a node after Ray Data's repartition, reading and writing, shared out)")
    parser.add_argument("--threads-per-actor", type=int,
                        help="torch threads per actor (default: a node's cores shared among its actors)")
    parser.add_argument("--max-length", type=int, help="token limit; longer texts are cut and flagged truncated")
    parser.add_argument("--rows-per-file", type=int, default=200_000, help="most rows in one output file")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs and Ray Data's progress bars here (always in Ray's log files)")
    parser.add_argument("--overwrite", action="store_true",
                        help="label again even if the output is complete (replaces the files of the earlier run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mtl.labeling.options import LabelOptions
    from mtl.labeling.pipeline import run_labeling
    from mtl.lifecycle.registry import resolve_model
    from mtl.runtime.cluster import connect

    try:
        model = resolve_model(args.model)
    except ModelFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = LabelOptions(
        model=model, input=args.input, output=args.output, text_column=args.text_column,
        tokens_column=args.tokens_column, input_format=args.input_format,
        tasks=tuple(args.tasks.split(",")) if args.tasks else None, embedding=args.embedding,
        embedding_dtype=args.embedding_dtype, backend=args.backend, precision=args.precision,
        actor_batch_rows=args.batch_size, min_actors=args.actors[0],
        max_actors=args.actors[1], cpus_per_actor=args.cpus_per_actor,
        threads_per_actor=args.threads_per_actor, max_length=args.max_length,
        rows_per_file=args.rows_per_file, overwrite=args.overwrite, output_shared=args.output_shared)
    connect(args.verbose)
    try:
        summary = run_labeling(options, progress=not args.verbose)
    except (ValueError, FileNotFoundError, OutputInUseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if summary.skipped:
        print(f"{summary.output} is already complete (pass --overwrite to label again)")
    else:
        labeled = summary.rows - summary.resumed_rows
        rate = labeled / summary.seconds if summary.seconds else 0.0
        resumed = (f"; {summary.resumed_rows} were labeled by an earlier, interrupted run"
                   if summary.resumed_rows else "")
        print(f"labeled {labeled} rows in {summary.seconds:.1f}s ({rate:.0f} rows/s){resumed}; "
              f"{summary.output} holds {summary.rows} rows in {len(summary.files)} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
