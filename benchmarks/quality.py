"""What each multi-task technique does on CoNLL-2003 NER + SST-2 at the same budget.

    python benchmarks/quality.py [--rows ROW ...] [--examples 4000] [--epochs 2] [--reuse]

Every row trains jobs/configs/conll_sst2.yaml (each task capped at ``--examples`` training
sentences, ``--epochs`` epochs, no early stopping) with one technique changed, and reports CoNLL
validation entity F1, SST-2 dev accuracy, STS-B dev Spearman of the sentence embedding (the
config's ``embedding_eval``) and training sentences per second. ``single-task`` trains each task
alone (F1 from the NER model, accuracy from the sentiment one); ``multi-task`` is the config as
shipped, the baseline of every other row. ``--reuse`` reads a row's finished run from its output
folder instead of training it again, so rows can be trained one command at a time.
"""

from __future__ import annotations

import argparse
import json

from mtl import storage
from mtl.config import Config, load_config
from mtl.runtime.cluster import connect
from mtl.task_config import Augmentation
from mtl.train.trainer import fit

ALL_TASKS = {"mixing": "all_tasks"}
# row -> the train settings it changes, or a function of the config for changes elsewhere
ROWS = {
    "multi-task": {},
    "all_tasks": ALL_TASKS,
    "gradnorm": {**ALL_TASKS, "loss_weighting": "gradnorm"},
    "pcgrad": {**ALL_TASKS, "loss_weighting": "pcgrad"},
    "uncertainty": {"loss_weighting": "uncertainty"},
    "triangular": {"schedule": "triangular", "cycles": 2},
    "cosine_restarts": {"schedule": "cosine_restarts", "cycles": 2},
    "head_only": lambda config: _tasks(config, head_only_steps=50),
    "augment": lambda config: _tasks(config, augment={
        "classification": Augmentation(rows=0.5, deletion=0.1, swap=0.1, insertion=0.1),
        "tagging": Augmentation(rows=0.5, entity_substitution=0.5, case=1.0)}),
}
SINGLE = "single-task"


def _tasks(config: Config, **per_task) -> Config:
    """Every task with ``per_task`` set (a dict by task kind for settings that differ by kind)."""
    def changed(task):
        return task.model_copy(update={key: value.get(task.kind) if isinstance(value, dict) else value
                                       for key, value in per_task.items()})
    return config.model_copy(update={"tasks": [changed(task) for task in config.tasks]})


def row_configs(base: Config, row: str, output: str) -> list[Config]:
    """The config(s) a row trains: one, or one per task for ``single-task``."""
    if row == SINGLE:
        return [base.model_copy(update={"tasks": [task], "output": f"{output}/{SINGLE}_{task.name}"})
                for task in base.tasks]
    change = ROWS[row]
    config = change(base) if callable(change) else base.model_copy(
        update={"train": base.train.model_copy(update=change)})
    return [config.model_copy(update={"output": f"{output}/{row}"})]


def run(config: Config, reuse: bool) -> dict:
    """The run's metrics.json, training it first unless ``reuse`` finds it finished."""
    metrics_file = storage.join(config.output, "metrics.json")
    if not (reuse and storage.is_file(metrics_file)):
        connect()
        fit(config)
    return json.loads(storage.read_text(metrics_file))


def row_scores(metrics: list[dict]) -> dict:
    """NER F1, SST-2 accuracy, STS-B Spearman and sentences/s of a row's run(s)."""
    scores = {}
    for run_metrics in metrics:
        best = run_metrics["best"]
        scores.update({task: report["primary"] for task, report in best["tasks"].items()})
        scores.setdefault("sentences_per_second", []).append(run_metrics["sentences_per_second_per_worker"])
        if len(metrics) == 1 and "embedding" in best:
            scores["sts"] = best["embedding"]["spearman"]
    scores["sentences_per_second"] = sum(scores["sentences_per_second"]) / len(metrics)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/configs/conll_sst2.yaml")
    parser.add_argument("--rows", nargs="+", choices=[SINGLE, *ROWS], default=[SINGLE, *ROWS])
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", default="runs/benchmark_quality")
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of training them")
    args = parser.parse_args()
    base = load_config(args.config, [f"train.max_examples_per_task={args.examples}", f"train.epochs={args.epochs}",
                                     "train.patience=null"])
    table = {row: row_scores([run(config, args.reuse) for config in row_configs(base, row, args.output)])
             for row in args.rows}
    print(f"\n{args.examples} training sentences per task, {args.epochs} epochs, encoder {base.model.encoder}")
    print(f"{'row':<16} {'NER F1':>8} {'SST-2 acc':>9} {'STS-B':>7} {'sent/s':>7}")
    for row, scores in table.items():
        print(f"{row:<16} {scores.get('ner', float('nan')):>8.4f} {scores.get('sentiment', float('nan')):>9.4f} "
              f"{scores.get('sts', float('nan')):>7.4f} {scores['sentences_per_second']:>7.1f}")


if __name__ == "__main__":
    main()
