"""A finished training run logged to MLflow: its config as params, every evaluation's metrics by
step, the metrics file and plots, and the best model folder (which ``config.mlflow.register_as``
then registers as a new version, ``mtl.lifecycle.registry``)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mtl import storage
from mtl.config import Config
from mtl.inference.model_folder import model_version
from mtl.lifecycle import registry
from mtl.metrics import evaluation_reports

MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str
    tracking_uri: str
    registered_version: str | None


def flat_params(value, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"train.learning_rate": "5e-05", "tasks.0.name": "ner", ...}``."""
    if isinstance(value, dict):
        return {key: item for name, child in value.items()
                for key, item in flat_params(child, f"{prefix}{name}.").items()}
    if isinstance(value, (list, tuple)) and any(isinstance(item, (dict, list)) for item in value):
        return {key: item for index, child in enumerate(value)
                for key, item in flat_params(child, f"{prefix}{index}.").items()}
    return {prefix.rstrip("."): str(value)[:6000]}


def evaluation_metrics(evaluation: dict, prefix: str = "") -> dict[str, float]:
    """An evaluation's numbers as MLflow metric names: ``combined``, ``ner/f1``, ``embedding/spearman``."""
    reports = evaluation_reports(evaluation)
    metrics = {f"{prefix}combined": evaluation["combined"]} if "combined" in evaluation else {}
    metrics |= {f"{prefix}{task}/{name}": float(value) for task, report in reports.items()
                for name, value in report.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    metrics |= {f"{prefix}{task}/train_loss": value for task, value in evaluation.get("train_loss", {}).items()}
    return metrics


def _experiment(mlflow_client, name: str, uri: str) -> str:
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=registry.artifact_location(uri))


def log_training(config: Config, summary) -> TrackedRun:
    """Log ``summary`` (``mtl.train.trainer.TrainingSummary``) of a run of ``config`` to MLflow."""
    from mlflow.entities import Metric, Param

    uri = registry.tracking_uri(config.mlflow.tracking_uri)
    mlflow_client = registry.client(uri)
    experiment_id = _experiment(mlflow_client, config.mlflow.experiment, uri)
    run = mlflow_client.create_run(experiment_id, run_name=storage.name(config.output),
                                   tags={"mtl.output": config.output})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = [Param(key, value) for key, value in flat_params(config.model_dump(mode="json")).items()]
    metrics = [Metric(name, value, now, entry["step"]) for entry in summary.history
               for name, value in evaluation_metrics(entry).items()]
    metrics += [Metric(name, value, now, summary.steps)
                for name, value in evaluation_metrics(summary.best, "best/").items()]
    for start in range(0, len(params), 100):   # log_batch's limits: 100 params, 1,000 metrics a call
        mlflow_client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + 1000])
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch)
        for report in [summary.metrics_file, *summary.plots]:
            (local / storage.name(report)).write_bytes(storage.read_bytes(report))
        mlflow_client.log_artifacts(run_id, str(local))
        model = summary.best_model
        if not storage.is_local(model):
            storage.download_folder(model, local / MODEL_ARTIFACT)
            model = str(local / MODEL_ARTIFACT)
        mlflow_client.log_artifacts(run_id, str(model), artifact_path=MODEL_ARTIFACT)
    version_hash = model_version(summary.best_model)
    mlflow_client.set_tag(run_id, registry.VERSION_TAG, version_hash)
    registered = None
    if config.mlflow.register_as:
        source = f"{mlflow_client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
        registered = str(registry.register(config.mlflow.register_as, source=source, run_id=run_id,
                                           model_version=version_hash, uri=uri,
                                           description=f"trained into {config.output}").version)
    mlflow_client.set_terminated(run_id)
    return TrackedRun(run_id=run_id, experiment_id=experiment_id, tracking_uri=uri, registered_version=registered)
