"""The online endpoint's HTTP API, free of Ray: routes, errors, cache, and the choice of the model
version (A/B variant) that answers each request. The schema is ``mtl.serving.schema``.

``create_api`` builds the FastAPI app around a *backend*, anything with
``async predict(texts, tasks) -> list[Prediction]``, ``async inspect(...)`` (``mtl.serving.inspection``) and
``async healthy() -> bool``. Ray Serve
plugs in a batched model, in the HTTP replica or behind a deployment handle (``mtl.serving.deployments``); tests
and a single-process server plug in ``PredictorBackend``, which calls a ``Predictor`` directly. Either way the answers
come from ``Predictor.predict``, the same code bulk labeling runs.

Every bad request gets a 4xx with a JSON body ``{"error": "...", "detail": ...}`` that names the
field at fault (``mtl.serving.errors``). (Overload is Serve's to answer: 503 with ``Retry-After``
once the queue is full.) What each replica watches, drift and request logs, is ``mtl.serving.monitoring``.
"""

# no ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime,
# and the request models are built per endpoint inside create_api
import asyncio
import bisect
import hashlib
import itertools
import random
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from typing import Annotated, Protocol

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from mtl.inference.answers import Prediction
from mtl.inference.model_folder import encoder_shape, model_version, read_model_description
from mtl.inference.predictor import Predictor
from mtl.inference.reference import Reference
from mtl.serving.errors import BodyLimit, http_error, validation_error
from mtl.serving.inspection import Inspection, InspectionError, NotInspectable, inspect_text
from mtl.serving.monitoring import EndpointMonitor, MetricsSink
from mtl.serving.schema import (
    ERROR_RESPONSES,
    DriftOut,
    DriftResponse,
    EmbedResponse,
    EntityOut,
    Health,
    InspectResponse,
    LabelOut,
    ModelInfo,
    PredictionOut,
    PredictResponse,
    ServiceSettings,
    TaskOut,
    request_models,
)

WEB = files("mtl") / "web"   # the demo page, served at /


class Backend(Protocol):
    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]: ...

    async def inspect(self, text: str, layer: int, head: int, max_tokens: int) -> Inspection: ...

    async def healthy(self) -> bool: ...


class PredictorBackend:
    """Calls a Predictor in this process, one request at a time, off the event loop."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self._lock = asyncio.Lock()

    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]:
        async with self._lock:
            return await asyncio.to_thread(self.predictor.predict, texts, tasks=tasks)

    async def inspect(self, text: str, layer: int, head: int, max_tokens: int) -> Inspection:
        async with self._lock:  # never beside a prediction: inspecting switches the attention kernel
            return await asyncio.to_thread(inspect_text, self.predictor, text, layer=layer, head=head,
                                           max_tokens=max_tokens)

    async def healthy(self) -> bool:
        return True


@dataclass(frozen=True)
class Loaded:
    """A model version ready to answer: its backend, what ``/v1/model`` says of it, and the
    reference statistics its drift is measured against (None for a folder without them)."""

    backend: Backend
    info: ModelInfo
    reference: Reference | None = None


class Variant:
    """A served model under a name and a traffic weight. ``current`` is replaced whole when a new
    version is loaded, so every request is answered and named by one version."""

    def __init__(self, name: str, weight: float, current: Loaded):
        self.name, self.weight, self.current = name, weight, current


class Router:
    """Picks the variant of each request: by the hash of its client key when it has one (the same
    key always gets the same variant), else at random, each in proportion to its weight."""

    def __init__(self, variants: list[Variant], *, seed: int | None = None):
        self.variants = variants
        total = sum(variant.weight for variant in variants)
        self._bounds = list(itertools.accumulate(variant.weight / total for variant in variants))
        self._random = random.Random(seed)

    def choose(self, client_key: str | None = None) -> Variant:
        if len(self.variants) == 1:
            return self.variants[0]
        if client_key:
            point = int.from_bytes(hashlib.sha256(client_key.encode()).digest()[:8], "big") / 2**64
        else:
            point = self._random.random()
        position = bisect.bisect_right(self._bounds, point)
        return self.variants[min(position, len(self.variants) - 1)]


def single_model(backend: Backend, info: ModelInfo, reference: Reference | None = None) -> Router:
    """A router for one model and no A/B test."""
    return Router([Variant("default", 1.0, Loaded(backend, info, reference))])


class AnswerCache:
    """A bounded LRU of predictions keyed by (text, tasks); size 0 keeps nothing."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple, Prediction] = OrderedDict()

    def get(self, text: str, tasks: tuple[str, ...]) -> Prediction | None:
        key = (text, tasks)
        if key in self._entries:
            self._entries.move_to_end(key)
        return self._entries.get(key)

    def put(self, text: str, tasks: tuple[str, ...], prediction: Prediction) -> None:
        if self.size:
            self._entries[(text, tasks)] = prediction
            self._entries.move_to_end((text, tasks))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def model_info(folder: str) -> ModelInfo:
    """What ``GET /v1/model`` answers, read from the model folder without loading the weights."""
    description = read_model_description(folder)
    settings, metadata = description["model"], description.get("metadata", {})
    encoder = encoder_shape(folder)
    return ModelInfo(
        version=model_version(folder), encoder=settings["encoder"], pooling=settings["pooling"],
        normalize=settings["normalize"], max_length=settings["max_length"],
        embedding_dimension=encoder.hidden_size, layers=encoder.num_hidden_layers,
        attention_heads=encoder.num_attention_heads,
        tasks=[TaskOut(name=task["name"], kind=task["kind"], labels=task["labels"]) for task in description["tasks"]],
        trained_at=metadata.get("trained_at"), metrics=metadata.get("metrics", {}))


ClientKey = Annotated[str | None, Header(alias="X-Client-Key", description="keeps a client on one A/B variant")]


@dataclass
class Exchange:
    """What one request was answered with, for its metrics and its log line."""

    texts: list[str] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)


def create_api(router: Router, settings: ServiceSettings, sink: MetricsSink | None = None) -> FastAPI:
    """The endpoint's FastAPI app: the demo page at ``/``; ``/v1/embed``, ``/v1/predict``,
    ``/v1/inspect``, ``/v1/model``, ``/v1/drift``, ``/healthz``, ``/docs``.

    Every variant of ``router`` must answer the same tasks (the request schema lists them).
    ``sink`` is told of every request, the texts it served and the drift scores after it
    (``mtl.serving.deployments`` counts them in Ray's metrics).
    """
    first = router.variants[0].current.info
    answered = [task.name for task in first.tasks if task.kind != "similarity"]  # those with an output
    embed_request, predict_request, inspect_request = request_models(settings, answered, first)
    cache = AnswerCache(settings.cache_size)
    monitor = EndpointMonitor(settings.drift, settings.request_log, sink)
    app = FastAPI(title="mtl: multi-task sentence transformer", version=first.version,
                  description=f"Embeddings, sentence labels and entities from one encoder ({first.encoder}).")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # rejected before any variant was chosen: counted, with no variant, version or latency
        monitor.finished(request.url.path, 422, None, "", "", [], [])
        return await validation_error(request, exc)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.mount("/web", StaticFiles(directory=str(WEB)), name="web")

    async def answer(route: str, variant: Variant, loaded: Loaded, texts: list[str], tasks: list[str],
                     exchange: Exchange) -> list[Prediction]:
        key = (loaded.info.version, *tasks)   # a cached answer is one version's
        found = [cache.get(text, key) for text in texts]
        missing = [index for index, prediction in enumerate(found) if prediction is None]
        if missing:
            fresh = await loaded.backend.predict([texts[index] for index in missing], list(tasks))
            for index, prediction in zip(missing, fresh):
                found[index] = prediction
                cache.put(texts[index], key, prediction)
        failed = [index for index, prediction in enumerate(found) if prediction.error]
        if failed:
            raise HTTPException(422, f"texts.{failed[0]}: {found[failed[0]].error}")
        exchange.texts, exchange.predictions = texts, found
        monitor.served(route, variant.name, loaded.info.version, loaded.reference, texts, found,
                       cache_hits=len(texts) - len(missing))
        return found

    async def observed(route: str, client_key: str | None, respond):
        variant = router.choose(client_key)
        loaded = variant.current   # this request's version, whatever a reload does meanwhile
        exchange = Exchange()
        started, status = time.perf_counter(), 500
        try:
            response = await respond(variant, loaded, exchange)
            status = 200
            return response
        except HTTPException as error:
            status = error.status_code
            raise
        finally:
            monitor.finished(route, status, time.perf_counter() - started, variant.name, loaded.info.version,
                             exchange.texts, exchange.predictions)

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(str(WEB / "index.html"))

    @app.post("/v1/embed", responses=ERROR_RESPONSES, summary="Embed texts")
    async def embed(request: embed_request, client_key: ClientKey = None) -> EmbedResponse:
        async def respond(variant: Variant, loaded: Loaded, exchange: Exchange) -> EmbedResponse:
            predictions = await answer("/v1/embed", variant, loaded, request.texts, [], exchange)
            return EmbedResponse(model=loaded.info.version, variant=variant.name,
                                 dimension=loaded.info.embedding_dimension,
                                 embeddings=[prediction.embedding.tolist() for prediction in predictions])

        return await observed("/v1/embed", client_key, respond)

    @app.post("/v1/predict", responses=ERROR_RESPONSES, summary="Labels, entities and optionally embeddings")
    async def predict(request: predict_request, client_key: ClientKey = None) -> PredictResponse:
        tasks = list(dict.fromkeys(request.tasks)) if request.tasks is not None else answered

        async def respond(variant: Variant, loaded: Loaded, exchange: Exchange) -> PredictResponse:
            predictions = await answer("/v1/predict", variant, loaded, request.texts, tasks, exchange)
            return PredictResponse(model=loaded.info.version, variant=variant.name, results=[
                _prediction_out(prediction, request.embedding) for prediction in predictions])

        return await observed("/v1/predict", client_key, respond)

    @app.post("/v1/inspect", responses={**ERROR_RESPONSES, 501: ERROR_RESPONSES[501]},
              summary="One text's tokens, token tags and attention weights (for the demo page)")
    async def inspect(request: inspect_request, client_key: ClientKey = None) -> InspectResponse:
        async def respond(variant: Variant, loaded: Loaded, _exchange: Exchange) -> InspectResponse:
            try:
                inspection = await loaded.backend.inspect(request.text, request.layer, request.head,
                                                          settings.max_inspect_tokens)
            except InspectionError as error:
                raise HTTPException(422, str(error)) from None
            except NotInspectable as error:
                raise HTTPException(501, str(error)) from None
            return InspectResponse(model=loaded.info.version, variant=variant.name, **asdict(inspection))

        return await observed("/v1/inspect", client_key, respond)

    @app.get("/v1/drift", summary="Drift scores of what this replica served, against the model's reference")
    async def drift() -> DriftResponse:
        return DriftResponse(variants=[_drift_out(monitor, variant, settings) for variant in router.variants])

    @app.get("/v1/model", summary="Tasks, labels, encoder, version and training metrics")
    async def describe(client_key: ClientKey = None) -> ModelInfo:
        return router.choose(client_key).current.info

    @app.get("/healthz", responses={503: ERROR_RESPONSES[503]}, summary="200 when the model can answer")
    async def health() -> Health:
        for variant in router.variants:
            if not await variant.current.backend.healthy():
                which = f" (variant '{variant.name}')" if len(router.variants) > 1 else ""
                raise HTTPException(503, f"the model is not loaded{which}")
        return Health()

    return app


def _drift_out(monitor: EndpointMonitor, variant: Variant, settings: ServiceSettings) -> DriftOut:
    loaded = variant.current
    window = monitor.window(variant.name, loaded.info.version, loaded.reference)
    report = window.report() if window else None
    return DriftOut(variant=variant.name, model=loaded.info.version, window=report.window if report else 0,
                    scores=report.scores if report else {}, drifted=report.drifted if report else [],
                    thresholds={"psi": settings.drift.psi_threshold, "embedding": settings.drift.embedding_threshold},
                    reference=loaded.reference is not None)


def _prediction_out(prediction: Prediction, embedding: bool) -> PredictionOut:
    return PredictionOut(
        labels={task: LabelOut(**vars(label)) for task, label in prediction.labels.items()},
        entities={task: [EntityOut(**vars(entity)) for entity in spans] for task, spans in prediction.entities.items()},
        embedding=prediction.embedding.tolist() if embedding else None,
        truncated=prediction.truncated)
