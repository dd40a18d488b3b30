"""k-fold cross-validation of a config: k trainings, each scored on the fold it did not see.

Every task's training rows (after ``train.max_examples_per_task``) are shuffled with the config's
seed and dealt into k folds; run i trains on the other folds and is scored on fold i. The folds are
written as JSONL under ``<output>/cv/fold-<i>/data`` (kept, so a fold can be trained again by hand),
and each run's model under ``<output>/cv/fold-<i>/best``. The held-out fold is never the run's
validation data: a run picks its checkpoint by training loss, so no fold's score chose its model.
"""

from __future__ import annotations

import json
import random
from statistics import mean, stdev

from scipy import stats

from mtl import storage
from mtl.config import Config
from mtl.data.readers import read_rows
from mtl.errors import ConfigError
from mtl.evaluation.intervals import CONFIDENCE
from mtl.evaluation.run import EvalSet, EvaluationOptions, evaluate_sets, local_scorer
from mtl.inference.predictor import Predictor
from mtl.task_config import DataSource, TaskConfig
from mtl.tasks import TaskSpec
from mtl.train.trainer import fit


def fold_rows(config: Config, folds: int) -> dict[str, list[list[dict]]]:
    """Per task, its training rows dealt into ``folds`` folds of (nearly) equal size."""
    if folds < 2:
        raise ConfigError(f"--cv {folds}: cross-validation needs at least 2 folds")
    dealt = {}
    for task in config.tasks:
        rows = read_rows(task.train, task.kind)
        random.Random(f"{config.train.seed}:{task.name}").shuffle(rows)
        rows = rows[:config.train.max_examples_per_task or len(rows)]
        if len(rows) < folds:
            raise ConfigError(f"tasks.{task.name}.train: {len(rows)} rows cannot make {folds} folds")
        dealt[task.name] = [rows[fold::folds] for fold in range(folds)]
    return dealt


def _write_rows(path: str, rows: list[dict]) -> None:
    storage.write_text(path, "".join(json.dumps({key: value for key, value in row.items() if key != "origin"}) + "\n"
                                     for row in rows))


def _fold_source(path: str, original: DataSource, rows: list[dict]) -> DataSource:
    """How to read a fold file: this module's JSONL columns, the original's score range."""
    scored, negatives = "score" in rows[0], "negative" in rows[0]
    return DataSource(path=path, format="jsonl", score_column="score" if scored else None,
                      score_range=original.score_range if scored else None,
                      negative_column="negative" if negatives else None)


def _fold_config(config: Config, folder: str, dealt: dict[str, list[list[dict]]], fold: int) -> Config:
    tasks = []
    for task in config.tasks:
        training = [row for other, rows in enumerate(dealt[task.name]) if other != fold for row in rows]
        path = storage.join(folder, "data", f"{task.name}.train.jsonl")
        _write_rows(path, training)
        tasks.append(task.model_copy(update={"train": _fold_source(path, task.train, training), "eval": None}))
    train = config.train.model_copy(update={"max_examples_per_task": None, "patience": None})
    return config.model_copy(update={"output": folder, "tasks": tasks, "train": train, "embedding_eval": None})


def _held_out(task: TaskConfig, spec: TaskSpec, folder: str, rows: list[dict]) -> EvalSet | None:
    """The fold's held-out rows of ``task`` as an eval set; unscored pairs cannot be scored."""
    if task.kind == "similarity" and "score" not in rows[0]:
        return None
    path = storage.join(folder, "data", f"{task.name}.heldout.jsonl")
    _write_rows(path, rows)
    return EvalSet(spec=spec, rows=rows, source=path)


def cross_validate(config: Config, *, folds: int, output: str) -> dict:
    """Train and score every fold; per task, each fold's primary metric, their mean and standard
    deviation, and a 95% Student-t interval of the mean over the folds."""
    dealt = fold_rows(config, folds)
    scores: dict[str, list[float]] = {}
    for fold in range(folds):
        folder = storage.join(output, "cv", f"fold-{fold}")
        summary = fit(_fold_config(config, folder, dealt, fold))
        predictor = Predictor.from_folder(summary.best_model)
        sets = {task.name: held for task in config.tasks
                if (held := _held_out(task, predictor.task_specs[task.name], folder, dealt[task.name][fold]))}
        report = evaluate_sets(sets, local_scorer(predictor), EvaluationOptions(resamples=0, perturbations=()))
        for task, task_report in report["tasks"].items():
            scores.setdefault(task, []).append(task_report["primary"])
    return {"folds": folds, "tasks": {task: _summary(values) for task, values in scores.items()}}


def _summary(values: list[float]) -> dict:
    center, spread = mean(values), stdev(values)
    half = stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1) * spread / len(values) ** 0.5
    return {"per_fold": values, "mean": center, "std": spread, "mean_ci": [center - half, center + half]}


def cross_validation_table(summary: dict) -> str:
    """The printed table: per task, the mean primary metric over the folds with its interval."""
    lines = [f"{'task':<14} {'mean':>8} {'95% interval':>20} {'std':>8}  per fold"]
    for task, values in summary["tasks"].items():
        low, high = values["mean_ci"]
        folds = " ".join(f"{value:.4f}" for value in values["per_fold"])
        interval = f"[{low:.4f}, {high:.4f}]"
        lines.append(f"{task:<14} {values['mean']:>8.4f} {interval:>20} {values['std']:>8.4f}  {folds}")
    return "\n".join(lines)
