"""What multi-task training does to the sentence embedding: STS-B dev Spearman beside the task scores.

    python benchmarks/embedding_quality.py [--examples 4000] [--epochs 2] [--variants ...] [--reuse]

Trains jobs/configs/conll_sst2.yaml (CoNLL-2003 NER + SST-2), each task capped at ``--examples``
training sentences, in three variants: ``without`` embedding preservation, with it as shipped
(``preserve``), and with an STS-B similarity task added (``sts``, preservation on). A fourth,
``sts_alone`` (asked for by name), trains the similarity task by itself without preservation: the
most it lifts the embedding at this budget. It prints, for
the original encoder and each variant, STS-B dev Spearman (and Pearson) of cosine similarity, CoNLL
validation entity F1 and SST-2 dev accuracy. Targets: ``preserve`` at least the original's
Spearman with F1 and accuracy within 0.5 points of ``without``; ``sts`` 2 points above the
original, the other tasks within 0.5 points. ``--reuse`` reads a variant's finished run from its
output folder instead of training it again (variants can be trained one command at a time);
``--set key=value`` changes the config of every variant (another preservation weight, say).
"""

from __future__ import annotations

import argparse
import json
import time

from mtl import storage
from mtl.config import EMBEDDING_METRICS, load_config
from mtl.data.readers import read_rows
from mtl.inference.model_folder import build_model
from mtl.inference.predictor import Predictor
from mtl.runtime.cluster import connect
from mtl.task_config import TaskConfig
from mtl.train.trainer import fit
from mtl.train.validation import evaluate

STS_TRAIN = "../shared/data/stsb/sts-train.csv"
VARIANTS = ("without", "preserve", "sts", "sts_alone")
DEFAULT_VARIANTS = ("without", "preserve", "sts")


def variant_config(base, name: str, output: str):
    """The shipped config as the variant ``name`` trains it."""
    tasks = [] if name == "sts_alone" else list(base.tasks)
    train = base.train
    if name in ("without", "sts_alone"):
        train = train.model_copy(update={"preserve_embedding": None})
    if name in ("sts", "sts_alone"):
        sts = base.embedding_eval.model_copy(update={"path": STS_TRAIN})
        tasks.append(TaskConfig(name="sts", kind="similarity", train=sts, eval=base.embedding_eval))
    return base.model_copy(update={"tasks": tasks, "train": train, "output": f"{output}/{name}"})


def sts_scores(predictor: Predictor, rows: list[dict]) -> dict:
    return evaluate(predictor, {EMBEDDING_METRICS: rows})["embedding"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/configs/conll_sst2.yaml")
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--output", default="runs/benchmark_embedding")
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of training them")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every variant (a tuned row: give it its own --output)")
    args = parser.parse_args()
    base = load_config(args.config, [f"train.max_examples_per_task={args.examples}", f"train.epochs={args.epochs}",
                                     "train.patience=null", *args.set])
    sts_rows = read_rows(base.embedding_eval, "similarity")
    original = Predictor(build_model(base.model, []))
    rows = {"original encoder": {**sts_scores(original, sts_rows), "tasks": {}}}
    seconds = {}
    for name in args.variants:
        config = variant_config(base, name, args.output)
        metrics_file = storage.join(config.output, "metrics.json")
        if not (args.reuse and storage.is_file(metrics_file)):
            connect()
            started = time.perf_counter()
            fit(config)
            seconds[name] = time.perf_counter() - started
        best = json.loads(storage.read_text(metrics_file))["best"]
        predictor = Predictor.from_folder(storage.join(config.output, "best"))
        rows[name] = {**sts_scores(predictor, sts_rows),
                      "tasks": {task: report["primary"] for task, report in best["tasks"].items()}}
    print(f"\n{args.examples} training sentences per task, {args.epochs} epochs, encoder {base.model.encoder}; "
          f"STS-B dev: {len(sts_rows)} pairs")
    print(f"{'model':<18} {'STS Spearman':>12} {'Pearson':>8} {'NER F1':>8} {'SST-2 acc':>9}")
    for name, row in rows.items():
        tasks = row["tasks"]
        print(f"{name:<18} {row['spearman']:>12.4f} {row['pearson']:>8.4f} "
              f"{tasks.get('ner', float('nan')):>8.4f} {tasks.get('sentiment', float('nan')):>9.4f}")
    if seconds:
        print("wall time: " + ", ".join(f"{name} {value:.0f}s" for name, value in seconds.items()))


if __name__ == "__main__":
    main()
