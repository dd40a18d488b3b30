"""The online endpoint on Ray Serve: ``serve run serve_config.yaml`` imports ``mtl.serve:build_app``.

Two deployments, so each scales on its own and a dead model replica costs no request:

    HTTP -> Endpoint (FastAPI ingress: validation, limits, cache; light)
              -> ModelReplica (Predictor loaded once; @serve.batch across concurrent requests)

The ingress retries a request on another model replica when the one it went to dies, and turns
Serve's back-pressure (``max_queued_requests`` reached) into a quick 503. All HTTP behavior lives
in ``mtl.service``, which knows nothing of Ray.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle

from mtl.predict import Prediction, Predictor
from mtl.service import Overloaded, ServiceSettings, create_api, model_info

logger = logging.getLogger("mtl.serve")
_REPLICA_LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)


@dataclass(frozen=True)
class Query:
    """One request's texts, batched with other requests' by ``ModelReplica``."""

    texts: list[str]
    tasks: list[str]


def _count_texts(queries: list[Query]) -> int:
    """Batch size in texts, not requests: one request may bring up to ``max_texts``."""
    return sum(len(query.texts) for query in queries)


@serve.deployment(name="ModelReplica", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64,
                  max_queued_requests=256, health_check_period_s=10)
class ModelReplica:
    """Loads the model folder once, then answers batches gathered across concurrent requests."""

    def __init__(self, settings: dict):
        self.settings = ServiceSettings.model_validate(settings)
        if self.settings.threads:  # Ray sets OMP_NUM_THREADS to the replica's num_cpus otherwise
            torch.set_num_threads(self.settings.threads)
        self.predictor: Predictor | None = Predictor.from_folder(
            self.settings.model, batch_size=self.settings.max_batch_texts, max_chars=self.settings.max_chars)
        self._predict_batch.set_max_batch_size(self.settings.max_batch_texts)
        self._predict_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        self.failure: str | None = None
        self.counts = {"requests": 0, "batches": 0, "texts": 0}

    def check_health(self) -> None:
        """Serve restarts a replica whose model is gone or whose device failed."""
        if self.predictor is None:
            raise RuntimeError("the model is not loaded")
        if self.failure:
            raise RuntimeError(f"the model failed: {self.failure}")

    async def healthy(self) -> bool:
        return self.predictor is not None and self.failure is None

    async def stats(self) -> dict:
        """This replica's process id and how many requests, batches and texts it has answered."""
        return {"pid": os.getpid(), **self.counts}

    async def predict(self, query: Query) -> list[Prediction]:
        self.counts["requests"] += 1
        return await self._predict_batch(query)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=_count_texts)
    async def _predict_batch(self, queries: list[Query]) -> list[list[Prediction]]:
        tasks = list(dict.fromkeys(task for query in queries for task in query.tasks))
        texts = [text for query in queries for text in query.texts]
        self.counts["batches"] += 1
        self.counts["texts"] += len(texts)
        try:  # off the event loop, so the next batch gathers while this one runs
            predictions = await asyncio.to_thread(self.predictor.predict, texts, tasks=tasks)
        except RuntimeError as error:  # e.g. a CUDA error: fail the health check, let Serve replace us
            self.failure = str(error)
            raise
        answers, start = [], 0
        for query in queries:
            answers.append([_only(prediction, query.tasks) for prediction in predictions[start:start + len(query.texts)]])
            start += len(query.texts)
        return answers


def _only(prediction: Prediction, tasks: list[str]) -> Prediction:
    """A prediction cut down to the tasks its request asked for (the batch ran their union)."""
    return Prediction(embedding=prediction.embedding, truncated=prediction.truncated, error=prediction.error,
                      labels={task: label for task, label in prediction.labels.items() if task in tasks},
                      entities={task: spans for task, spans in prediction.entities.items() if task in tasks})


class HandleBackend:
    """The ``mtl.service`` backend that calls ModelReplica through its deployment handle."""

    def __init__(self, handle: DeploymentHandle, retries: int):
        self.handle = handle
        self.retries = retries

    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]:
        for attempt in range(self.retries + 1):
            try:
                return await self.handle.predict.remote(Query(texts=texts, tasks=tasks))
            except BackPressureError as error:
                raise Overloaded("the model replicas' queues are full") from error
            except _REPLICA_LOST as error:
                logger.warning("model replica lost (attempt %d of %d): %s", attempt + 1, self.retries + 1, error)
                last_error = error
        raise Overloaded("no model replica could answer") from last_error

    async def healthy(self) -> bool:
        try:
            return await asyncio.wait_for(self.handle.healthy.remote(), timeout=5)
        except (asyncio.TimeoutError, BackPressureError, *_REPLICA_LOST):
            return False


@serve.deployment(name="Endpoint", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256,
                  max_queued_requests=512)
@serve.ingress()
class Endpoint:
    """The HTTP ingress: the FastAPI app of ``mtl.service`` over the model replicas."""

    def __init__(self, model: DeploymentHandle, settings: dict):
        self.settings = ServiceSettings.model_validate(settings)
        self.backend = HandleBackend(model, retries=self.settings.retries)
        self.info = model_info(self.settings.model)

    def __serve_build_asgi_app__(self):
        return create_api(self.backend, self.info, self.settings)


def build_app(args: dict) -> serve.Application:
    """The application of serve_config.yaml; ``args`` are ServiceSettings (``model`` at least)."""
    settings = ServiceSettings.model_validate(args)
    # replicas may start in another folder: pin the model folder where the config was read
    settings = settings.model_copy(update={"model": str(Path(settings.model).absolute())})
    model_info(settings.model)  # fail at deploy time, naming the folder, not in every replica
    return Endpoint.bind(ModelReplica.bind(settings.model_dump()), settings.model_dump())
