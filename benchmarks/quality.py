"""Multi-task vs single-task quality on CoNLL-2003 NER + SST-2, same budget, one run.

    python benchmarks/quality.py [--examples 4000] [--epochs 2]

Trains three models with jobs/configs/conll_sst2.yaml settings: both tasks together, NER alone and
sentiment alone, each task capped at the same number of training sentences and epochs, then
prints each task's validation score both ways, their ratio, and the reference single-task
PyTorch fine-tunes measured on this kind of machine (F1 0.755, accuracy 0.836).
"""

from __future__ import annotations

import argparse
import time

import ray

from mtl.config import load_config
from mtl.train.trainer import fit

REFERENCE = {"ner": 0.755, "sentiment": 0.836}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/configs/conll_sst2.yaml")
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", default="runs/benchmark_quality")
    args = parser.parse_args()
    base = load_config(args.config, [f"train.max_examples_per_task={args.examples}", f"train.epochs={args.epochs}",
                                     "train.patience=null"])
    ray.init(ignore_reinit_error=True)
    runs = {"multi-task": base.tasks, **{f"{task.name} alone": [task] for task in base.tasks}}
    scores, seconds = {}, {}
    for name, tasks in runs.items():
        config = base.model_copy(update={"tasks": tasks, "output": f"{args.output}/{name.replace(' ', '_')}"})
        started = time.perf_counter()
        summary = fit(config)
        seconds[name] = time.perf_counter() - started
        scores[name] = {task: report["primary"] for task, report in summary.best["tasks"].items()}
    print(f"\n{args.examples} training sentences per task, {args.epochs} epochs, encoder {base.model.encoder}")
    print(f"{'task':<10} {'metric':<10} {'multi-task':>10} {'alone':>8} {'ratio':>7} {'reference':>10}")
    for task in (task.name for task in base.tasks):
        multi, alone = scores["multi-task"][task], scores[f"{task} alone"][task]
        metric = "entity F1" if task == "ner" else "accuracy"
        reference = REFERENCE.get(task, float("nan"))
        print(f"{task:<10} {metric:<10} {multi:>10.4f} {alone:>8.4f} {multi / alone:>7.3f} {reference:>10.3f}")
    print("wall time: " + ", ".join(f"{name} {value:.0f}s" for name, value in seconds.items()))


if __name__ == "__main__":
    main()
