"""Bulk-labeling throughput: jobs.label end to end against SentenceTransformer.encode, in one run.

    python benchmarks/label_throughput.py [--sentences 20000] [--st-onnx-python .venv-st-onnx/bin/python]

The corpus is real text from ../shared/data (SST-2 sentences, then CoNLL-2003 sentences). The job
reads Parquet, embeds, classifies, tags and writes Parquet; the baseline only embeds the same
texts in memory with sentence-transformers at its best batch size, on every core.

Ray starts first, set up as a job starts its own (``mtl.runtime.cluster.connect``: the nodes' settings of
cluster.yaml), and stays up, idle, through both runs, as the cluster a job is submitted to would be:
Ray's own start-up (its worker pool, dashboard and agents) is not charged to either run.
The job's time does include starting its actors and loading the model in each; the baseline's
model is loaded before its clock starts. The job runs once per backend and precision (torch
float32, the default, then torch bfloat16, onnx float32 and onnx int8: ``--variants`` picks), on
the same texts, with the model folder exported to ONNX before any clock starts.

``--st-onnx-python`` adds sentence-transformers' own ONNX rows, float32 and int8, from
``benchmarks/st_onnx.py`` in the environment it needs (its docstring says how to make it). That
script also loads this job's exported model folder with sentence-transformers' ``backend="onnx"``;
the cosines of those embeddings to the job's own are printed below the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH_SIZES = (32, 64, 128)
PROBE_TEXTS = 2_000
VARIANTS = {"torch/float32": ("torch", "float32"), "torch/bfloat16": ("torch", "bfloat16"),
            "onnx/float32": ("onnx", "float32"), "onnx/int8": ("onnx", "int8")}


def real_sentences(count: int) -> list[str]:
    from mtl.data.readers import read_rows
    from mtl.task_config import DataSource

    texts = [row["text"] for row in read_rows(DataSource(path=str(SHARED / "sst2/train.tsv"), text_column="sentence"),
                                              "classification")]
    texts = texts[: count * 2 // 3]
    conll = read_rows(DataSource(path=str(SHARED / "conll2003/train.txt")), "tagging")
    texts += [" ".join(row["tokens"]) for row in conll[: count - len(texts)]]
    return texts


def encode_baseline(texts: list[str], max_length: int) -> tuple[float, int]:
    """Sentences/s of SentenceTransformer.encode on all the texts, at its best batch size."""
    from sentence_transformers import SentenceTransformer

    from mtl.inference.model_folder import resolve_encoder

    model = SentenceTransformer(resolve_encoder("all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = max_length
    return best_batch_rate(model, texts)


def best_batch_rate(model, texts: list[str]) -> tuple[float, int]:
    """The batch size that is fastest on the first texts (a probe), then the rate on all of them."""
    model.encode(texts[:256])  # warm-up: first calls allocate
    probe = texts[:PROBE_TEXTS]
    timings = []
    for batch_size in BATCH_SIZES:
        started = time.perf_counter()
        model.encode(probe, batch_size=batch_size)
        timings.append((time.perf_counter() - started, batch_size))
    batch_size = min(timings)[1]
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - started), batch_size


def st_onnx_rows(python: str, texts: list[str], model_dir: Path, work: Path, max_length: int) -> dict:
    """Run benchmarks/st_onnx.py in its own environment; its rows, and its embeddings of our folder."""
    from mtl.inference.export import cpu_family

    (work / "texts.json").write_text(json.dumps(texts))
    preset = cpu_family() if cpu_family() != "generic" else "avx2"
    command = [python, str(Path(__file__).with_name("st_onnx.py")), "--texts", str(work / "texts.json"),
               "--int8", preset, "--max-length", str(max_length), "--model-folder", str(model_dir)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def folder_agreement(model_dir: Path, texts: list[str], loaded: dict) -> dict[str, float]:
    """Lowest cosine between sentence-transformers' embeddings of our exported folder and ours."""
    import numpy as np

    from mtl.inference.predictor import Predictor
    from mtl.metrics import row_cosines

    lowest = {}
    for precision, embeddings in loaded.items():
        backend = "onnx" if precision == "int8" else "torch"
        ours = np.stack([a.embedding for a in Predictor.from_folder(model_dir, backend=backend, precision=precision)
                         .predict(texts[:len(embeddings)])])
        theirs = np.array(embeddings)
        lowest[precision] = float(row_cosines(ours, theirs).min())
    return lowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--actors", type=int, help="labeler actors (default: the job's own, one per core)")
    parser.add_argument("--threads-per-actor", type=int, help="torch threads per actor (default: the job's own)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="backend/precision runs of the job")
    parser.add_argument("--st-onnx-python", help="python of the environment benchmarks/st_onnx.py runs in")
    args = parser.parse_args()
    texts = real_sentences(args.sentences)
    cores = os.cpu_count() or 1

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mtl.config import ModelConfig
    from mtl.inference.export import export_onnx
    from mtl.inference.model_folder import build_model, save_model_folder
    from mtl.labeling.options import LabelOptions
    from mtl.labeling.pipeline import run_labeling
    from mtl.runtime.cluster import connect
    from mtl.tasks import TaskSpec

    specs = [TaskSpec("sentiment", "classification", ("0", "1")),
             TaskSpec("ner", "tagging",
                      ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"))]
    with tempfile.TemporaryDirectory() as work:
        model_dir = save_model_folder(build_model(ModelConfig(max_length=args.max_length), specs), Path(work) / "model")
        pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), Path(work) / "corpus.parquet")
        if any(VARIANTS[variant][0] == "onnx" for variant in args.variants):
            export_onnx(model_dir)
        connect()
        baseline, best_batch = encode_baseline(texts, args.max_length)
        st_onnx = st_onnx_rows(args.st_onnx_python, texts, model_dir, Path(work), args.max_length) \
            if args.st_onnx_python else {}
        agreement = folder_agreement(model_dir, texts, st_onnx.pop("model_folder")) if st_onnx else {}
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
    for variant, row in st_onnx.items():
        name = f"SentenceTransformer.encode {variant} (embed only, batch {row['batch_size']})"
        print(f"{name:<64} {row['sentences_per_second']:>8.1f} sentences/s  ratio "
              f"{row['sentences_per_second'] / baseline:.3f}")
    st_int8 = next((row["sentences_per_second"] for variant, row in st_onnx.items() if "int8" in variant), None)
    for variant, rate in rates.items():
        job = f"jobs.label {variant} (read, embed, classify, tag, write)"
        against_st = f"  vs sentence-transformers int8 {rate / st_int8:.3f}" if st_int8 else ""
        print(f"{job:<64} {rate:>8.1f} sentences/s  ratio {rate / baseline:.3f}{against_st}")
    for precision, cosine in agreement.items():
        print(f"sentence-transformers backend='onnx' on this export, {precision}: lowest cosine to the job's "
              f"own embeddings {cosine:.5f}")


if __name__ == "__main__":
    main()
