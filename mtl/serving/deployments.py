"""The online endpoint on Ray Serve: ``serve run serve_config.yaml`` imports ``mtl.serving.deployments:build_app``.

Each ``Endpoint`` replica serves the FastAPI app of ``mtl.serving.api`` (validation, limits, errors,
cache; no Ray in it). Behind the app, a ``BatchedPredictor`` gathers the texts of concurrent
requests into one model batch with ``@serve.batch``, counted in texts rather than requests. Two
layouts, chosen by ``model_deployment`` in serve_config.yaml:

- colocated (default): the model lives in the HTTP replica. Fastest, as a request makes no hop
  between deployments (docs/benchmarks.md); a replica killed mid-request can lose the requests it
  held.
- ``model_deployment: true``: the model runs in its own ``ModelReplica`` deployment behind the HTTP
  replicas, which retry a request on another model replica when one dies, so a lost model
  replica costs a retry, never an error. One more hop per request; the model scales on its own
  (GPU replicas behind CPU ingress replicas).

Colocated, a replica may serve several variants of an A/B test (``variants``), and a model given as
``models:/NAME@ALIAS`` follows the alias to each new version without a restart
(``mtl.serving.served_model``). ``mtl.serving.metrics`` counts every answer and the drift scores in Ray's
metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

import ray
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import MutableHeaders

from mtl import storage
from mtl.inference.answers import Prediction
from mtl.inference.predictor import Predictor, check_backend
from mtl.inference.reference import read_reference
from mtl.lifecycle.registry import is_registered, resolve_model
from mtl.serving.api import create_api
from mtl.serving.inspection import Inspection, inspect_text
from mtl.serving.metrics import EndpointMetrics, batch_size_histogram
from mtl.serving.routing import Router, model_info, single_model
from mtl.serving.schema import ServiceSettings
from mtl.serving.served_model import ServedModel, answered_tasks

logger = logging.getLogger("mtl.serving.deployments")
_REPLICA_LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)

@dataclass(frozen=True)
class Query:
    """One request's texts, batched with other requests' texts."""

    texts: list[str]
    tasks: list[str]


def _count_texts(queries: list[Query]) -> int:
    """Batch size in texts, not requests: one request may bring up to ``max_texts``."""
    return sum(len(query.texts) for query in queries)


class BatchedPredictor:
    """The model loaded once, answering batches gathered across concurrent requests."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.predictor: Predictor | None = Predictor.from_folder(
            settings.model, batch_size=settings.max_batch_texts, max_chars=settings.max_chars,
            backend=settings.backend, precision=settings.precision, threads=settings.threads)
        self._predict_batch.set_max_batch_size(settings.max_batch_texts)
        self._predict_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.failure: str | None = None
        self.counts = {"requests": 0, "batches": 0, "texts": 0}
        self.batch_sizes = batch_size_histogram()

    def check(self) -> None:
        """Raise when the model is not loaded or has failed (e.g. a CUDA error)."""
        if self.predictor is None:
            raise RuntimeError("the model is not loaded")
        if self.failure:
            raise RuntimeError(f"the model failed: {self.failure}")

    async def healthy(self) -> bool:
        return self.predictor is not None and self.failure is None

    async def stats(self) -> dict:
        """The process id and how many requests, batches and texts it has answered."""
        return {"pid": os.getpid(), **self.counts}

    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]:
        self.counts["requests"] += 1
        return await self._predict_batch(Query(texts=texts, tasks=tasks))

    async def inspect(self, text: str, layer: int, head: int, max_tokens: int) -> Inspection:
        """On the event loop, as the batches run: never beside a prediction (``inspect_text``)."""
        self._use_threads()
        return inspect_text(self.predictor, text, layer=layer, head=head, max_tokens=max_tokens)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0, batch_size_fn=_count_texts)
    async def _predict_batch(self, queries: list[Query]) -> list[list[Prediction]]:
        tasks = list(dict.fromkeys(task for query in queries for task in query.tasks))
        texts = [text for query in queries for text in query.texts]
        self.counts["batches"] += 1
        self.counts["texts"] += len(texts)
        self.batch_sizes.observe(len(texts))
        self._use_threads()
        try:  # run on the event loop: requests arriving meanwhile queue up and form the next batch
            predictions = self.predictor.predict(texts, tasks=tasks)
        except RuntimeError as error:  # fail the health check, so that Serve replaces the replica
            self.failure = str(error)
            raise
        answers, start = [], 0
        for query in queries:
            batch = predictions[start:start + len(query.texts)]
            answers.append([_only(prediction, query.tasks) for prediction in batch])
            start += len(query.texts)
        return answers

    def _use_threads(self) -> None:
        """Apply ``threads`` on the thread that runs the model: OpenMP keeps the thread count per
        OS thread, and Serve may build the replica on another thread than the one serving requests
        (left alone, Ray's OMP_NUM_THREADS, the replica's num_cpus, applies). An ONNX session has
        its threads from its start, and an ONNX replica never imports torch."""
        if not self.settings.threads or self.settings.backend != "torch":
            return
        import torch

        if torch.get_num_threads() != self.settings.threads:
            torch.set_num_threads(self.settings.threads)


def _only(prediction: Prediction, tasks: list[str]) -> Prediction:
    """A prediction cut down to the tasks its request asked for (the batch ran their union)."""
    return Prediction(embedding=prediction.embedding, truncated=prediction.truncated, error=prediction.error,
                      labels={task: label for task, label in prediction.labels.items() if task in tasks},
                      entities={task: spans for task, spans in prediction.entities.items() if task in tasks})


class HandleBackend:
    """Calls the ModelReplica deployment, retrying on another replica when the one called dies."""

    def __init__(self, handle: DeploymentHandle, retries: int):
        self.handle = handle
        self.retries = retries

    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]:
        for attempt in range(self.retries + 1):
            try:
                return await self.handle.predict.remote(texts, tasks)
            except _REPLICA_LOST as error:
                logger.warning("model replica lost (attempt %d of %d): %s", attempt + 1, self.retries + 1, error)
                if attempt == self.retries:
                    raise

    async def inspect(self, text: str, layer: int, head: int, max_tokens: int) -> Inspection:
        return await self.handle.inspect.remote(text, layer, head, max_tokens)

    async def healthy(self) -> bool:
        try:
            return await asyncio.wait_for(self.handle.healthy.remote(), timeout=5)
        except (asyncio.TimeoutError, *_REPLICA_LOST):
            return False

    async def stats(self) -> dict:
        return await self.handle.stats.remote()


@serve.deployment(name="ModelReplica", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64,
                  max_queued_requests=128, health_check_period_s=10)
class ModelReplica:
    """The model in a deployment of its own (``model_deployment: true``)."""

    def __init__(self, settings: dict):
        self.model = BatchedPredictor(ServiceSettings.model_validate(settings))

    def check_health(self) -> None:
        self.model.check()

    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]:
        return await self.model.predict(texts, tasks)

    async def inspect(self, text: str, layer: int, head: int, max_tokens: int) -> Inspection:
        return await self.model.inspect(text, layer, head, max_tokens)

    async def healthy(self) -> bool:
        return await self.model.healthy()

    async def stats(self) -> dict:
        return await self.model.stats()


class ServedBy:
    """ASGI middleware: the ``X-Served-By`` header names the node that answered (for operators and
    the cluster test).

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware passes each
    response through a stream between two tasks, which costs throughput and lets a model batch run
    between a response's headers and its body, where a replica killed cuts the response off and
    HAProxy cannot replay it."""

    def __init__(self, app, node: str):
        self.app = app
        self.node = node

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_node(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Served-By", self.node)
            await send(message)

        await self.app(scope, receive, send_with_node)


@serve.deployment(name="Endpoint", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64,
                  max_queued_requests=128, health_check_period_s=10)
@serve.ingress()
class Endpoint:
    """An HTTP replica: the API in front of the model (or the variants of an A/B test), held here
    and reloaded when a registry alias moves, or reached through ``model``."""

    def __init__(self, settings: dict, model: DeploymentHandle | None = None):
        self.settings = ServiceSettings.model_validate(settings)
        self.served: list[ServedModel] = []
        if model:
            info = model_info(self.settings.model)
            self.router = single_model(HandleBackend(model, self.settings.retries), info,
                                       read_reference(self.settings.model))
        else:
            def load(folder: str) -> BatchedPredictor:
                return BatchedPredictor(self.settings.model_copy(update={"model": folder, "variants": None}))

            self.served = [ServedModel(variant, load, reload_interval_s=self.settings.reload_interval_s)
                           for variant in self.settings.served()]
            self.router = Router([served.variant for served in self.served])

    def __serve_build_asgi_app__(self):
        app = create_api(self.router, self.settings, sink=EndpointMetrics())
        app.add_middleware(ServedBy, node=ray.get_runtime_context().get_node_id())
        return app

    def check_health(self) -> None:
        for served in self.served:
            served.variant.current.backend.check()

    async def stats(self) -> dict:
        """Process id and counts of the model replica that answers (this one when colocated)."""
        return await self.router.variants[0].current.backend.stats()


def _checked_reference(reference: str, settings: ServiceSettings) -> tuple[str, list[str]]:
    """``reference`` as replicas read it (a local folder made absolute where the config was read;
    a registry reference kept, for replicas to follow) and the tasks of the model it names now."""
    folder = storage.absolute(resolve_model(reference))
    info = model_info(folder)  # fail at deploy time, naming the folder, not in every replica
    check_backend(settings.backend, settings.precision, folder)
    return (reference if is_registered(reference) else folder), answered_tasks(info)


def build_app(args: dict) -> serve.Application:
    """The application of serve_config.yaml; ``args`` are ServiceSettings (``model`` or ``variants``)."""
    settings = ServiceSettings.model_validate(args)
    variants, tasks = [], {}
    for variant in settings.served():
        reference, tasks[variant.name] = _checked_reference(variant.model, settings)
        variants.append(variant.model_copy(update={"model": reference}))
    if len({tuple(names) for names in tasks.values()}) > 1:
        raise ValueError(f"variants: every variant must answer the same tasks; they answer {tasks}")
    if settings.variants:
        settings = settings.model_copy(update={"variants": variants})
    else:
        settings = settings.model_copy(update={"model": variants[0].model})
    if settings.model_deployment:
        # the model replicas load the version named now: a moved alias reaches them at the next deploy
        folder = storage.absolute(resolve_model(settings.model))
        pinned = settings.model_copy(update={"model": folder}).model_dump()
        return Endpoint.bind(pinned, ModelReplica.bind(pinned))
    return Endpoint.bind(settings.model_dump())
