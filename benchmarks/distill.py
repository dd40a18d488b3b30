"""A 3-layer student against its 6-layer teacher: quality kept and labeling speed, in one run.

    python benchmarks/distill.py [--teacher runs/benchmark_quality/multi-task/best] [--reuse]
                                 [--students distilled pruned corpus] [--corpus-sentences 4000]
                                 [--student-set KEY=VALUE ...] [--output runs/benchmark_distill]
                                 [--backend onnx]

The teacher is the multi-task model of ``benchmarks/quality.py`` (jobs/configs/conll_sst2.yaml,
4,000 sentences per task, 2 epochs). Two students keep every other of its layers and train on the
same data and budget: ``distilled`` (``jobs.distill``: soft targets and the embedding, plus the
labels), ``pruned`` (the same layers fine-tuned on the labels alone, no teacher) and ``corpus``
(``distilled`` plus ``--corpus-sentences`` unlabeled training sentences of both tasks that the
labeled sample left out, half from each, labeled by the teacher: ``jobs.distill --corpus``). Each row gives
CoNLL validation entity F1 and SST-2 dev accuracy, their share of the teacher's (target: at least
97%), and the label job's sentences/s on the same real sentences (target: the student at least
1.8x the teacher), every model labeling in the same run. ``--backend onnx`` labels with each
model's float32 ONNX export instead (made in a copy of its folder; the same answers to 1e-5, so the
scores stand), a tuned row beside the job's default torch backend.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from label_throughput import real_sentences
from quality import run

from mtl import storage
from mtl.config import apply_override, load_config, validate_config
from mtl.runtime.cluster import connect
from mtl.train.teacher import student_config


def students(config, teacher: str, output: str, corpus: str) -> dict:
    """The configs of the students of ``teacher``; ``corpus`` is the unlabeled text of ``corpus``."""
    distilled = student_config(config, teacher, keep_layers="every_other")
    pruned = distilled.model_copy(update={"distill": None})
    with_corpus = student_config(config, teacher, keep_layers="every_other", corpus=corpus)
    return {"distilled": distilled.model_copy(update={"output": f"{output}/distilled"}),
            "pruned": pruned.model_copy(update={"output": f"{output}/pruned"}),
            "corpus": with_corpus.model_copy(update={"output": f"{output}/corpus"})}


def overridden(config, overrides: list[str]):
    raw = config.model_dump()
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw)


def unlabeled_sentences(config, count: int) -> list[str]:
    """``count`` training sentences, half from each task, none of the ``max_examples_per_task`` the
    runs train on (the same seeded sample as theirs)."""
    from mtl.data.readers import read_rows
    from mtl.train.data_plan import kept_positions

    texts = []
    for task in config.tasks:
        rows = read_rows(task.train, task.kind)
        labeled = set(kept_positions(len(rows), config.train.max_examples_per_task, config.train.seed) or [])
        left_out = [row for position, row in enumerate(rows) if position not in labeled]
        texts += [row.get("text") or " ".join(row["tokens"]) for row in left_out[:count // len(config.tasks)]]
    return texts


def labeling_rate(model: str, corpus: Path, output: Path, backend: str) -> float:
    from mtl.labeling.options import LabelOptions
    from mtl.labeling.pipeline import run_labeling

    summary = run_labeling(LabelOptions(model=model, input=str(corpus), output=str(output), backend=backend))
    return summary.rows / summary.seconds


def exported_copy(model: str, folder: Path) -> str:
    """A copy of the local model folder ``model`` in ``folder``, with its ONNX export."""
    from mtl.inference.export import export_onnx

    shutil.copytree(model, folder)
    export_onnx(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/configs/conll_sst2.yaml")
    parser.add_argument("--teacher", default="runs/benchmark_quality/multi-task/best")
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=20_000, help="real sentences each model labels")
    parser.add_argument("--students", nargs="+", choices=["distilled", "pruned", "corpus"],
                        default=["distilled", "pruned", "corpus"])
    parser.add_argument("--corpus-sentences", type=int, default=4000,
                        help="unlabeled sentences the corpus student learns from besides the labeled ones")
    parser.add_argument("--output", default="runs/benchmark_distill")
    parser.add_argument("--reuse", action="store_true", help="read finished student runs instead of training them")
    parser.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the students only (train.preserve_embedding=null)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="tuned: the backend every model labels with (onnx: float32, exported first)")
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    config = load_config(args.config, [f"train.max_examples_per_task={args.examples}", f"train.epochs={args.epochs}",
                                       "train.patience=null"])
    connect()
    teacher = storage.absolute(args.teacher)
    scores = {"teacher": json.loads(storage.read_text(storage.join(teacher, "mtl.json")))["metadata"]["metrics"]}
    corpus = storage.absolute(storage.join(args.output, "unlabeled.txt"))
    if "corpus" in args.students:
        storage.write_text(corpus, "".join(f"{text}\n" for text in unlabeled_sentences(config, args.corpus_sentences)))
    runs = {name: overridden(student, args.student_set)
            for name, student in students(config, teacher, args.output, corpus).items() if name in args.students}
    scores.update({name: run(student, args.reuse)["best"] for name, student in runs.items()})
    models = {"teacher": teacher, **{name: storage.join(student.output, "best") for name, student in runs.items()}}
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus.parquet"
        pq.write_table(pa.table({"text": real_sentences(args.sentences)}), corpus)
        labeled = {name: exported_copy(model, Path(work) / "models" / name) if args.backend == "onnx" else model
                   for name, model in models.items()}
        rates = {name: labeling_rate(model, corpus, Path(work) / name, args.backend) for name, model in labeled.items()}
    print(f"\n{args.examples} training sentences per task, {args.epochs} epochs; labeling {args.sentences} "
          f"sentences on the {args.backend} backend")
    print(f"{'model':<10} {'layers':>6} {'NER F1':>8} {'of teacher':>10} {'SST-2 acc':>9} {'of teacher':>10} "
          f"{'label sent/s':>12} {'speed-up':>8}")
    teacher_tasks = scores["teacher"]["tasks"]
    for name, best in scores.items():
        tasks = best["tasks"]
        layers = json.loads(storage.read_text(storage.join(models[name], "config.json")))["num_hidden_layers"]
        print(f"{name:<10} {layers:>6} {tasks['ner']['primary']:>8.4f} "
              f"{tasks['ner']['primary'] / teacher_tasks['ner']['primary']:>10.3f} "
              f"{tasks['sentiment']['primary']:>9.4f} "
              f"{tasks['sentiment']['primary'] / teacher_tasks['sentiment']['primary']:>10.3f} "
              f"{rates[name]:>12.1f} {rates[name] / rates['teacher']:>8.2f}")


if __name__ == "__main__":
    main()
