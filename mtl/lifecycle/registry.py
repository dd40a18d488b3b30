"""Model versions in MLflow's Model Registry: register, promote, roll back, list, resolve.

A registered model's versions point at copies of model folders that training logged as MLflow
artifacts, so a version never changes after it is registered, even when the run's
``<output>/best`` is trained again. The ``production`` alias names the version to serve. Every
move of the alias is recorded, with its reason, in a tag of the registered model
(``mtl.alias_history``) and on the version it reaches (``mtl.promoted_reason``). A roll-back walks
that history back. ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` resolve to the version's
folder, wherever a model folder is taken (``jobs.label``, ``jobs.evaluate``, serving,
``jobs.train --init-from``).

The tracking URI is the one given, else ``$MLFLOW_TRACKING_URI``, else an embedded SQLite store at
``runs/mlflow.db``, which needs no server. ``mlflow ui --backend-store-uri URI`` shows it.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from mtl import storage
from mtl.errors import ModelFolderError

REGISTRY_SCHEME = "models:/"
PRODUCTION = "production"
HISTORY_TAG = "mtl.alias_history"
VERSION_TAG = "mtl.model_version"   # the model folder's content hash, as responses name it
_HISTORY_KEPT = 40                   # entries: a tag value holds at most 5,000 characters
DEFAULT_STORE = Path("runs") / "mlflow.db"
_OBJECT_STORES = ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs")


def tracking_uri(configured: str | None = None) -> str:
    """The tracking URI to use: ``configured``, else ``$MLFLOW_TRACKING_URI``, else the embedded store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE.resolve()}"


def client(uri: str | None = None):
    """An MLflow client on the tracking (and registry) store ``uri``."""
    from mlflow import MlflowClient

    resolved = tracking_uri(uri)
    if resolved.startswith("sqlite:///"):
        Path(resolved.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside an embedded SQLite store (MLflow's own
    default, ``./mlruns``, would land in whatever folder a job runs in); a server decides itself."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return None


def is_registered(model: str) -> bool:
    return str(model).startswith(REGISTRY_SCHEME)


def _version_of(mlflow_client, reference: str):
    """The model version ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names."""
    from mlflow.exceptions import MlflowException

    path = reference.removeprefix(REGISTRY_SCHEME)
    try:
        if "@" in path:
            name, alias = path.split("@", 1)
            return mlflow_client.get_model_version_by_alias(name, alias)
        name, _, number = path.partition("/")
        return mlflow_client.get_model_version(name, number)
    except MlflowException as error:
        raise ModelFolderError(f"{reference}: no such registered model version ({error.message})") from None


def resolve_model(model: str, uri: str | None = None) -> str:
    """A model folder for ``model``: itself, or for a registry reference the version's folder: a
    local path or an object-storage URI as the artifact store has it (every node then reads it, and
    caches it, as any model folder), else (an artifact server's ``mlflow-artifacts:`` URI) the
    artifacts downloaded once into this machine's cache."""
    if not is_registered(model):
        return model
    mlflow_client = client(uri)
    version = _version_of(mlflow_client, model)
    source = mlflow_client.get_model_version_download_uri(version.name, version.version)
    if storage.is_local(source):
        return source.removeprefix("file://")
    if source.split("://", 1)[0] in _OBJECT_STORES:
        return source
    target = storage.cache_root() / "registry" / version.name / str(version.version)
    if not (target / "mtl.json").is_file():
        import mlflow.artifacts

        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target), tracking_uri=tracking_uri(uri))
    return str(target)


def register(name: str, *, source: str, run_id: str | None, model_version: str, description: str = "",
             uri: str | None = None):
    """A new version of registered model ``name`` (created if new) for the folder at ``source``."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        mlflow_client.create_registered_model(name, description="multi-task sentence transformer (mtl)")
    return mlflow_client.create_model_version(name, source=source, run_id=run_id, description=description,
                                              tags={VERSION_TAG: model_version})


def _history(mlflow_client, name: str) -> list[dict]:
    return json.loads(mlflow_client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))


def current_version(name: str, alias: str = PRODUCTION, uri: str | None = None) -> str | None:
    """The version ``alias`` names, or None when no version holds it."""
    return _current(client(uri), name, alias)


def _current(mlflow_client, name: str, alias: str) -> str | None:
    aliases = mlflow_client.get_registered_model(name).aliases
    return str(aliases[alias]) if alias in aliases else None


def move_alias(name: str, version: str, *, reason: str, action: str = "promote", alias: str = PRODUCTION,
               uri: str | None = None) -> dict:
    """Point ``alias`` at ``version`` and record the move; returns the history entry."""
    mlflow_client = client(uri)
    _version_of(mlflow_client, f"{REGISTRY_SCHEME}{name}/{version}")   # unknown: an error before anything moves
    entry = {"action": action, "alias": alias, "version": str(version),
             "previous": _current(mlflow_client, name, alias), "reason": reason,
             "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    mlflow_client.set_registered_model_alias(name, alias, version)
    mlflow_client.set_model_version_tag(name, version, "mtl.promoted_reason", reason)
    history = (_history(mlflow_client, name) + [entry])[-_HISTORY_KEPT:]
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return entry


def rollback(name: str, *, reason: str, alias: str = PRODUCTION, uri: str | None = None) -> dict:
    """Point ``alias`` back at the version it named before the current one was promoted."""
    mlflow_client = client(uri)
    current = _current(mlflow_client, name, alias)
    if current is None:
        raise ValueError(f"registered model '{name}' has no '{alias}' alias to roll back")
    promotions = [entry for entry in _history(mlflow_client, name)
                  if entry["alias"] == alias and entry["action"] == "promote" and entry["version"] == current]
    if not promotions or promotions[-1]["previous"] is None:
        raise ValueError(f"'{name}@{alias}' is version {current}, and no version held it before")
    return move_alias(name, promotions[-1]["previous"], reason=reason, action="rollback", alias=alias, uri=uri)


def list_versions(name: str, uri: str | None = None) -> list[dict]:
    """Every version of ``name``, newest first: aliases, model hash, run, reason and the run's metrics."""
    mlflow_client = client(uri)
    versions = mlflow_client.search_model_versions(f"name='{name}'")
    if not versions:
        raise ValueError(f"no registered model '{name}' in {tracking_uri(uri)}")
    # search results leave aliases out: the registered model has them
    aliases = mlflow_client.get_registered_model(name).aliases
    rows = []
    for version in sorted(versions, key=lambda item: -int(item.version)):
        metrics = mlflow_client.get_run(version.run_id).data.metrics if version.run_id else {}
        held = sorted(alias for alias, number in aliases.items() if str(number) == str(version.version))
        rows.append({"version": str(version.version), "aliases": held,
                     "model": version.tags.get(VERSION_TAG), "run_id": version.run_id,
                     "created": datetime.fromtimestamp(version.creation_timestamp / 1000, timezone.utc)
                     .isoformat(timespec="seconds"),
                     "reason": version.tags.get("mtl.promoted_reason"), "combined": metrics.get("best/combined")})
    return rows


def alias_history(name: str, uri: str | None = None) -> list[dict]:
    return _history(client(uri), name)
