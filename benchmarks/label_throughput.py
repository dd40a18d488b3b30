"""Bulk-labeling throughput: jobs.label end to end against SentenceTransformer.encode, in one run.

    python benchmarks/label_throughput.py [--sentences 20000]

The corpus is real text from ../shared/data (SST-2 sentences, then CoNLL-2003 sentences). The job
reads Parquet, embeds, classifies, tags and writes Parquet; the baseline only embeds the same
texts in memory with sentence-transformers at its best batch size, on every core.

Ray starts first and stays up, idle, through both runs, as the cluster a job is submitted to
would be: Ray's own start-up (its worker pool, dashboard and agents) is not charged to either run.
The job's time does include starting its actors and loading the model in each; the baseline's
model is loaded before its clock starts. The job runs once per backend and precision (torch
float32, the default, then torch bfloat16, onnx float32 and onnx int8: ``--variants`` picks), on
the same texts, with the model folder exported to ONNX before any clock starts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS = {"torch/float32": ("torch", "float32"), "torch/bfloat16": ("torch", "bfloat16"),
            "onnx/float32": ("onnx", "float32"), "onnx/int8": ("onnx", "int8")}


def real_sentences(count: int) -> list[str]:
    from mtl.config import DataSource
    from mtl.data.readers import read_rows

    texts = [row["text"] for row in read_rows(DataSource(path=str(SHARED / "sst2/train.tsv"), text_column="sentence"),
                                              "classification")]
    texts = texts[: count * 2 // 3]
    conll = read_rows(DataSource(path=str(SHARED / "conll2003/train.txt")), "tagging")
    texts += [" ".join(row["tokens"]) for row in conll[: count - len(texts)]]
    return texts


def encode_baseline(texts: list[str], max_length: int) -> tuple[float, int]:
    """Best sentences/s of SentenceTransformer.encode over a few batch sizes."""
    from sentence_transformers import SentenceTransformer

    from mtl.checkpoint import resolve_encoder

    model = SentenceTransformer(resolve_encoder("all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = max_length
    model.encode(texts[:256])  # warm-up
    results = []
    for batch_size in (32, 64, 128):
        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        results.append((len(texts) / (time.perf_counter() - started), batch_size))
    return max(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--actors", type=int, help="labeler actors (default: the job's own, one per core)")
    parser.add_argument("--threads-per-actor", type=int, help="torch threads per actor (default: the job's own)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="backend/precision runs of the job")
    args = parser.parse_args()
    texts = real_sentences(args.sentences)
    cores = os.cpu_count() or 1

    import ray

    from mtl.checkpoint import build_model, save_model_folder
    from mtl.config import ModelConfig
    from mtl.export import export_onnx
    from mtl.label_pipeline import LabelOptions, run_labeling
    from mtl.tasks import TaskSpec

    specs = [TaskSpec("sentiment", "classification", ("0", "1")),
             TaskSpec("ner", "tagging",
                      ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"))]
    with tempfile.TemporaryDirectory() as work:
        model_dir = save_model_folder(build_model(ModelConfig(max_length=args.max_length), specs), Path(work) / "model")
        pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), Path(work) / "corpus.parquet")
        if any(VARIANTS[variant][0] == "onnx" for variant in args.variants):
            export_onnx(model_dir)
        ray.init(ignore_reinit_error=True)
        baseline, best_batch = encode_baseline(texts, args.max_length)
        rates = {}
        for variant in args.variants:
            backend, precision = VARIANTS[variant]
            options = LabelOptions(model=str(model_dir), input=str(Path(work) / "corpus.parquet"),
                                   output=str(Path(work) / f"out-{backend}-{precision}"), min_actors=args.actors,
                                   max_actors=args.actors, threads_per_actor=args.threads_per_actor,
                                   backend=backend, precision=precision)
            summary = run_labeling(options)
            assert summary.rows == len(texts)
            rates[variant] = summary.rows / summary.seconds
    print(f"\n{len(texts)} sentences, {cores} cores, max length {args.max_length}")
    encode = f"SentenceTransformer.encode (torch float32, embed only, batch {best_batch})"
    print(f"{encode:<64} {baseline:>8.1f} sentences/s")
    for variant, rate in rates.items():
        job = f"jobs.label {variant} (read, embed, classify, tag, write)"
        print(f"{job:<64} {rate:>8.1f} sentences/s  ratio {rate / baseline:.3f}")


if __name__ == "__main__":
    main()
