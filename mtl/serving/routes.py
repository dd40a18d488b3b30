"""The endpoint's routes: the model's (``/v1/embed``, ``/v1/predict``, ``/v1/inspect``) and the
service's (the demo page, ``/v1/drift``, ``/v1/model``, ``/healthz``)."""

# no ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime,
# and the request models are built per endpoint (``mtl.serving.schema.request_models``)
from dataclasses import asdict
from importlib.resources import files
from typing import Annotated

from fastapi import FastAPI, Header
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from mtl.inference.answers import Prediction
from mtl.serving.exchange import Answering, Exchange
from mtl.serving.inspection import InspectionError, NotInspectable
from mtl.serving.monitoring import EndpointMonitor
from mtl.serving.routing import Loaded, Router, Variant
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
)

WEB = files("mtl") / "web"   # the demo page, served at /

ClientKey = Annotated[str | None, Header(alias="X-Client-Key", description="keeps a client on one A/B variant")]


def add_model_routes(app: FastAPI, answering: Answering, settings: ServiceSettings, answered: list[str],
                     embed_request: type, predict_request: type, inspect_request: type) -> None:
    """``/v1/embed``, ``/v1/predict`` (``answered``: the tasks with an output) and ``/v1/inspect``."""

    @app.post("/v1/embed", responses=ERROR_RESPONSES, summary="Embed texts")
    async def embed(request: embed_request, client_key: ClientKey = None) -> EmbedResponse:
        async def respond(variant: Variant, loaded: Loaded, exchange: Exchange) -> EmbedResponse:
            predictions = await answering.answer("/v1/embed", variant, loaded, request.texts, [], exchange)
            return EmbedResponse(model=loaded.info.version, variant=variant.name,
                                 dimension=loaded.info.embedding_dimension,
                                 embeddings=[prediction.embedding.tolist() for prediction in predictions])

        return await answering.observed("/v1/embed", client_key, respond)

    @app.post("/v1/predict", responses=ERROR_RESPONSES, summary="Labels, entities and optionally embeddings")
    async def predict(request: predict_request, client_key: ClientKey = None) -> PredictResponse:
        tasks = list(dict.fromkeys(request.tasks)) if request.tasks is not None else answered

        async def respond(variant: Variant, loaded: Loaded, exchange: Exchange) -> PredictResponse:
            predictions = await answering.answer("/v1/predict", variant, loaded, request.texts, tasks, exchange)
            return PredictResponse(model=loaded.info.version, variant=variant.name, results=[
                _prediction_out(prediction, request.embedding) for prediction in predictions])

        return await answering.observed("/v1/predict", client_key, respond)

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

        return await answering.observed("/v1/inspect", client_key, respond)


def add_service_routes(app: FastAPI, router: Router, monitor: EndpointMonitor, settings: ServiceSettings) -> None:
    """The demo page at ``/``, ``/v1/drift``, ``/v1/model`` and ``/healthz``."""

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(str(WEB / "index.html"))

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
