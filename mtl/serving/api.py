"""The online endpoint's HTTP API, free of Ray: ``create_api`` assembles the FastAPI app from the
routes (``routes``), the choice of the model version that answers each request (``routing``), the
answer cache (``cache``) and the replica's monitor (``monitoring``: drift and request logs). The
schema is ``mtl.serving.schema``.

Every bad request gets a 4xx with a JSON body ``{"error": "...", "detail": ...}`` that names the
field at fault (``mtl.serving.errors``). (Overload is Serve's to answer: 503 with ``Retry-After``
once the queue is full.)
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from mtl.serving.cache import AnswerCache
from mtl.serving.errors import BodyLimit, http_error, validation_error
from mtl.serving.exchange import Answering
from mtl.serving.monitoring import EndpointMonitor, MetricsSink
from mtl.serving.routes import WEB, add_model_routes, add_service_routes
from mtl.serving.routing import Router
from mtl.serving.schema import ServiceSettings, request_models


def create_api(router: Router, settings: ServiceSettings, sink: MetricsSink | None = None) -> FastAPI:
    """The endpoint's FastAPI app: the demo page at ``/``; ``/v1/embed``, ``/v1/predict``,
    ``/v1/inspect``, ``/v1/model``, ``/v1/drift``, ``/healthz``, ``/docs``.

    Every variant of ``router`` must answer the same tasks (the request schema lists them).
    ``sink`` is told of every request, the texts it served and the drift scores after it
    (``mtl.serving.deployments`` counts them in Ray's metrics).
    """
    first = router.variants[0].current.info
    answered = [task.name for task in first.tasks if task.kind != "similarity"]  # those with an output
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
    answering = Answering(router, AnswerCache(settings.cache_size), monitor)
    add_model_routes(app, answering, settings, answered, *request_models(settings, answered, first))
    add_service_routes(app, router, monitor, settings)
    return app
