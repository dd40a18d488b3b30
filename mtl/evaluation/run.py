"""Score a model on labeled eval sets: metrics with intervals, error analysis and robustness.

Every prediction the evaluation needs (each eval set as it is and once per perturbation) is handed
to a ``Scorer`` in one call, so that a distributed scorer (``mtl.evaluation.distributed``) runs
them all on one pool of actors; ``local_scorer`` runs them in this process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from statistics import mean

import yaml
from pydantic import ValidationError

from mtl import storage
from mtl.config import EMBEDDING_METRICS, Config, field_problems
from mtl.data.readers import read_rows
from mtl.errors import ConfigError
from mtl.evaluation.analysis import error_analysis
from mtl.evaluation.intervals import CONFIDENCE
from mtl.evaluation.outcomes import predict_outcomes
from mtl.evaluation.robustness import PERTURBATIONS, perturb_rows
from mtl.evaluation.scoring import task_metrics
from mtl.inference.model_card import EVALUATION_FILE, write_model_card
from mtl.inference.model_folder import model_version, read_model_description
from mtl.inference.predictor import Predictor
from mtl.task_config import DataSource
from mtl.tasks import TaskSpec

Request = tuple[str, str, list[dict]]   # task name, task kind, rows
Scorer = Callable[[list[Request]], list[list[dict]]]
EMBEDDING_SPEC = TaskSpec(EMBEDDING_METRICS, "similarity", ())


@dataclass(frozen=True)
class EvaluationOptions:
    """``resamples`` bootstrap draws per interval (0: no intervals), their ``seed``, ``shown``
    examples per error list, and the ``perturbations`` to measure robustness with."""

    resamples: int = 1000
    seed: int = 0
    shown: int = 10
    perturbations: tuple[str, ...] = PERTURBATIONS


@dataclass(frozen=True)
class EvalSet:
    """One task's labeled eval rows, read from ``source`` (a path or URI)."""

    spec: TaskSpec
    rows: list[dict]
    source: str


def local_scorer(predictor: Predictor) -> Scorer:
    """Predict every request in this process."""
    return lambda requests: [predict_outcomes(predictor, task, kind, rows) for task, kind, rows in requests]


def read_eval_set(name: str, source: DataSource, task_specs: dict[str, TaskSpec]) -> EvalSet:
    """Task ``name``'s eval rows (``embedding``: scored pairs for the sentence embedding), read by
    the training readers; a task the model does not have is an error naming it."""
    if name == EMBEDDING_METRICS and name not in task_specs:
        spec = EMBEDDING_SPEC
    elif name in task_specs:
        spec = task_specs[name]
    else:
        raise ConfigError(f"task '{name}': the model has no such task; it has {list(task_specs)} "
                          f"(and '{EMBEDDING_METRICS}' for scored sentence pairs)")
    return EvalSet(spec=spec, rows=read_rows(source, spec.kind), source=source.path)


def eval_sets_from_config(config: Config, task_specs: dict[str, TaskSpec]) -> dict[str, EvalSet]:
    """The eval data of every task of ``config`` that has some, and its ``embedding_eval``."""
    sets = {}
    for task in config.tasks:
        if task.eval is None:
            continue
        if task.name in task_specs and task_specs[task.name].kind != task.kind:
            raise ConfigError(f"config error: tasks.{task.name}.kind: {task.kind}, but the model's task "
                              f"'{task.name}' is {task_specs[task.name].kind}")
        sets[task.name] = read_eval_set(task.name, task.eval, task_specs)
    if config.embedding_eval is not None:
        sets[EMBEDDING_METRICS] = read_eval_set(EMBEDDING_METRICS, config.embedding_eval,
                                                {EMBEDDING_METRICS: EMBEDDING_SPEC})
    if not sets:
        raise ConfigError("config error: no task has eval data, and there is no embedding_eval: nothing to score")
    return sets


def evaluate_sets(sets: dict[str, EvalSet], scorer: Scorer, options: EvaluationOptions) -> dict:
    """The report: per eval set its metrics with intervals, ``errors`` and ``robustness`` (each
    perturbation's primary metric, its interval and ``drop`` from the clean data); ``combined``,
    the mean primary metric of the tasks (``embedding`` apart, as in training)."""
    requests = [(name, eval_set.spec.kind, rows) for name, eval_set in sets.items()
                for rows in [eval_set.rows, *_perturbed(eval_set, options)]]
    answers = iter(zip([rows for _, _, rows in requests], scorer(requests)))
    reports = {name: _report(eval_set, answers, options) for name, eval_set in sets.items()}
    tasks = {name: report for name, report in reports.items() if sets[name].spec is not EMBEDDING_SPEC}
    result = {"tasks": tasks, "combined": mean(report["primary"] for report in tasks.values()) if tasks else 0.0,
              "options": {"resamples": options.resamples, "seed": options.seed, "confidence": CONFIDENCE,
                          "perturbations": list(options.perturbations)}}
    if len(tasks) < len(reports):
        result["embedding"] = reports[EMBEDDING_METRICS]
    return result


def _perturbed(eval_set: EvalSet, options: EvaluationOptions) -> list[list[dict]]:
    return [perturb_rows(eval_set.rows, eval_set.spec.kind, perturbation, seed=options.seed)
            for perturbation in options.perturbations]


def _report(eval_set: EvalSet, answers, options: EvaluationOptions) -> dict:
    """One eval set's report from its next answers: the clean rows', then each perturbation's."""
    clean_rows, clean = next(answers)
    report = task_metrics(eval_set.spec, clean_rows, clean, resamples=options.resamples, seed=options.seed)
    report["source"] = eval_set.source
    report["errors"] = error_analysis(eval_set.spec.kind, report, clean_rows, clean, shown=options.shown)
    report["robustness"] = {}
    for perturbation in options.perturbations:
        perturbed = task_metrics(eval_set.spec, *next(answers), resamples=options.resamples, seed=options.seed)
        report["robustness"][perturbation] = {
            "primary": perturbed["primary"], "drop": report["primary"] - perturbed["primary"],
            **({"primary_ci": perturbed["primary_ci"]} if "primary_ci" in perturbed else {})}
    return report


def model_task_specs(folder: str) -> dict[str, TaskSpec]:
    """Every task of a model folder (local or a URI), read from its ``mtl.json`` alone."""
    return {task["name"]: TaskSpec.from_dict(task) for task in read_model_description(folder)["tasks"]}


def source_from_fields(path: str, fields: list[str]) -> DataSource:
    """A data source from ``path`` and ``FIELD=VALUE`` settings (values parsed as YAML), checked as
    a config's data source is: an unknown or bad field is an error naming it."""
    raw: dict = {"path": path}
    for setting in fields:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise ConfigError(f"--column {setting!r}: expected FIELD=VALUE, e.g. text_column=sentence")
        raw[key] = yaml.safe_load(text)
    try:
        return DataSource.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"--column: {field_problems(error, top='data')}") from None


def evaluate_model(model: str, sets: dict[str, EvalSet], scorer: Scorer, options: EvaluationOptions) -> dict:
    """``evaluate_sets``, with the model folder and its version named in the report."""
    return {"model": {"folder": model, "version": model_version(model)}, **evaluate_sets(sets, scorer, options)}


def update_model_card(model: str, report: dict) -> str:
    """Store the report's numbers in the model folder (``evaluation.json``: metrics, intervals and
    robustness; not the error examples, whose texts may be personal data) and rewrite its card."""
    def numbers(task_report: dict) -> dict:
        return {key: value for key, value in task_report.items() if key != "errors"}

    kept = {**report, "tasks": {task: numbers(value) for task, value in report["tasks"].items()},
            **({"embedding": numbers(report["embedding"])} if "embedding" in report else {})}
    storage.write_text(storage.join(model, EVALUATION_FILE), json.dumps(kept, indent=2))
    return write_model_card(model, model_version(model))
