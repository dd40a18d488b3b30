"""Accuracy and speed of every backend and precision against torch float32, in one run.

    python benchmarks/precision.py --model runs/conll_sst2/best [--config jobs/configs/conll_sst2.yaml]

The model (trained by ``conll_sst2.yaml``; the figures in docs/benchmarks.md used
``--set train.max_examples_per_task=4000 --set train.epochs=2``) is exported first when its folder
has no ONNX export. For torch float32 (the baseline), torch bfloat16, onnx float32 and onnx int8
it prints each task's score on the config's eval data (entity F1 on CoNLL-2003 validation,
accuracy on SST-2 dev, through the same evaluation as training), the mean and lowest cosine of
its embeddings of the classification eval sentences to float32's, and sentences/s of a one-thread
predictor embedding and classifying those sentences. Targets: int8 within 1.0 point of float32 on
F1 and 0.5 on accuracy, mean cosine at least 0.99.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mtl import storage
from mtl.config import load_config
from mtl.data.readers import read_rows
from mtl.inference.export import export_onnx
from mtl.inference.onnx_backend import EXPORT_FILE
from mtl.inference.predictor import Predictor
from mtl.metrics import row_cosines
from mtl.train.validation import evaluate

VARIANTS = [("torch", "float32"), ("torch", "bfloat16"), ("onnx", "float32"), ("onnx", "int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="jobs/configs/conll_sst2.yaml")
    parser.add_argument("--threads", type=int, default=1, help="threads of each predictor")
    parser.add_argument("--limit", type=int, help="eval rows per task (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not storage.is_file(storage.join(args.model, EXPORT_FILE)):
        report = export_onnx(args.model)
        print(f"exported: int8 for {report.cpu}, reduce_range={report.reduce_range}")
    config = load_config(args.config, [])
    eval_rows = {task.name: list(read_rows(task.eval, task.kind))[:args.limit] for task in config.tasks if task.eval}
    sentences = [row["text"] for task in config.tasks if task.kind == "classification" for row in eval_rows[task.name]]
    results = {}
    for backend, precision in VARIANTS:
        predictor = Predictor.from_folder(args.model, backend=backend, precision=precision, threads=args.threads)
        scores = evaluate(predictor, eval_rows)
        predictor.predict(sentences[:64])  # warm up: first calls allocate
        started = time.perf_counter()
        answers = predictor.predict(sentences)
        seconds = time.perf_counter() - started
        results[(backend, precision)] = {
            "scores": {task: report["primary"] for task, report in scores["tasks"].items()},
            "embeddings": np.stack([answer.embedding for answer in answers]), "rate": len(sentences) / seconds}
    baseline = results[("torch", "float32")]
    tasks = list(baseline["scores"])
    print(f"\n{len(sentences)} sentences timed, {args.threads} thread(s); scores on the eval data of {args.config}")
    print(f"{'backend':<8} {'precision':<9} " + " ".join(f"{task:>10}" for task in tasks)
          + f" {'cos mean':>9} {'cos min':>8} {'sent/s':>8} {'speed-up':>8}")
    for (backend, precision), result in results.items():
        got, want = result["embeddings"], baseline["embeddings"]
        cosine = row_cosines(got, want)
        print(f"{backend:<8} {precision:<9} " + " ".join(f"{result['scores'][task]:>10.4f}" for task in tasks)
              + f" {cosine.mean():>9.4f} {cosine.min():>8.4f} {result['rate']:>8.1f}"
              + f" {result['rate'] / baseline['rate']:>8.2f}")
    int8 = results[("onnx", "int8")]["scores"]
    print("int8 - float32 (points): " + ", ".join(f"{task} {100 * (int8[task] - baseline['scores'][task]):+.2f}"
                                                  for task in tasks))


if __name__ == "__main__":
    main()
