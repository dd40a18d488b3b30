"""The online endpoint's HTTP API, free of Ray: request and response models, limits, errors, cache.

``create_api`` builds the FastAPI app around a *backend*, anything with
``async predict(texts, tasks) -> list[Prediction]`` and ``async healthy() -> bool``. Ray Serve
plugs in a batched model, in the HTTP replica or behind a deployment handle (``mtl.serve``); tests
and a single-process server plug in ``PredictorBackend``, which calls a ``Predictor`` directly. Either way the answers
come from ``Predictor.predict``, the same code bulk labeling runs.

Every bad request gets a 4xx with a JSON body ``{"error": "...", "detail": ...}`` that names the
field at fault. (Overload is Serve's to answer: 503 with ``Retry-After`` once the queue is full.)
"""

# no ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime,
# and the request models are built per endpoint inside create_api
import asyncio
from collections import OrderedDict
from typing import Annotated, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from starlette.exceptions import HTTPException

from mtl.checkpoint import embedding_dimension, model_version, read_model_description
from mtl.predict import Prediction, Predictor

# at least one character that Python's str.isspace() (the Predictor's test for blank) does not
# count as space; pydantic's \s lacks the separators \x1c-\x1f that Python counts
NOT_BLANK = r"[^\s\x1c-\x1f]"
EXAMPLE_TEXTS = ["Alice flew to Paris with Acme Corp.", "What a wonderful, heartfelt film."]


class ServiceSettings(BaseModel):
    """The endpoint's limits and batching, from ``args`` in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="the model folder written by jobs.train (local path or URI), or a "
                       "registered version, models:/NAME@ALIAS or models:/NAME/VERSION, looked up at deploy time")
    max_texts: int = Field(64, ge=1, description="most texts in one request")
    max_chars: int = Field(2_000, ge=1, description="most characters in one text")
    max_body_bytes: int = Field(1_000_000, ge=1_000, description="largest request body; larger gets 413")
    max_batch_texts: int = Field(64, ge=1, description="most texts the model runs in one batch")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="how long a batch waits to fill; "
                                        "under load the next batch fills while the current one runs")
    cache_size: int = Field(0, ge=0, description="answers of repeated texts kept (LRU); 0 turns the cache off")
    model_deployment: bool = Field(False, description="run the model in its own deployment behind the HTTP "
                                   "replicas, which retry when a model replica dies (see mtl.serve)")
    retries: int = Field(2, ge=0, description="with model_deployment: tries on another model replica")
    threads: int | None = Field(None, ge=1, description="torch threads per model replica (default: its num_cpus)")
    backend: Literal["torch", "onnx"] = Field("torch", description="onnx: the model folder's ONNX export "
                                              "(python -m jobs.export)")
    precision: Literal["float32", "bfloat16", "int8"] = Field(
        "float32", description="torch: float32 or bfloat16 (autocast); onnx: float32 or int8")

    def model_post_init(self, _context) -> None:
        if self.max_texts > self.max_batch_texts:
            raise ValueError(f"max_texts ({self.max_texts}) must not exceed max_batch_texts ({self.max_batch_texts})")


class Backend(Protocol):
    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]: ...

    async def healthy(self) -> bool: ...


class PredictorBackend:
    """Calls a Predictor in this process, one request at a time, off the event loop."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self._lock = asyncio.Lock()

    async def predict(self, texts: list[str], tasks: list[str]) -> list[Prediction]:
        async with self._lock:
            return await asyncio.to_thread(self.predictor.predict, texts, tasks=tasks)

    async def healthy(self) -> bool:
        return True


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


class LabelOut(BaseModel):
    label: str = Field(examples=["positive"])
    score: float = Field(description="probability of the label", examples=[0.97])
    probabilities: dict[str, float] = Field(examples=[{"negative": 0.03, "positive": 0.97}])


class EntityOut(BaseModel):
    start: int = Field(description="first character of the span", examples=[0])
    end: int = Field(description="one past its last character, as in a Python slice", examples=[5])
    label: str = Field(examples=["PER"])
    text: str = Field(examples=["Alice"])
    score: float = Field(description="mean tag probability of the span's words", examples=[0.91])


class PredictionOut(BaseModel):
    labels: dict[str, LabelOut] = Field(description="per classification task")
    entities: dict[str, list[EntityOut]] = Field(description="per tagging task")
    embedding: list[float] | None = Field(None, description="only when the request sets embedding=true")
    truncated: bool = Field(description="the text was longer than the model's max length and was cut")


class PredictResponse(BaseModel):
    model: str = Field(description="model version (content hash)", examples=["3f9a0c1b2d4e"])
    results: list[PredictionOut]


class EmbedResponse(BaseModel):
    model: str = Field(examples=["3f9a0c1b2d4e"])
    dimension: int = Field(examples=[384])
    embeddings: list[list[float]]


class TaskOut(BaseModel):
    name: str
    kind: Literal["classification", "tagging", "similarity"] = Field(
        description="similarity tasks trained the embedding: they have no output of their own")
    labels: list[str]


class ModelInfo(BaseModel):
    version: str
    encoder: str
    pooling: str
    normalize: bool
    max_length: int
    embedding_dimension: int
    tasks: list[TaskOut]
    trained_at: str | None = None
    metrics: dict = Field(default_factory=dict, description="validation metrics of the saved checkpoint")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorOut(BaseModel):
    error: str = Field(description="what is wrong, naming the field")
    detail: list | str | None = None


ERROR_RESPONSES = {
    400: {"model": ErrorOut, "description": "the body cannot be decoded (not UTF-8)"},
    413: {"model": ErrorOut, "description": "request body over max_body_bytes"},
    422: {"model": ErrorOut, "description": "malformed JSON or a field out of its limits"},
    503: {"model": ErrorOut, "description": "overloaded or restarting; retry after Retry-After seconds"},
}


def request_models(settings: ServiceSettings, task_names: list[str]) -> tuple[type[BaseModel], type[BaseModel]]:
    """The embed and predict request models, with this endpoint's limits and tasks in their schema."""
    text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=settings.max_chars,
                                            pattern=NOT_BLANK)]
    texts = Annotated[list[text], Field(min_length=1, max_length=settings.max_texts,
                                        description=f"1 to {settings.max_texts} non-blank texts of at most "
                                                    f"{settings.max_chars} characters")]
    task = Literal[tuple(task_names)] if task_names else str
    strict = ConfigDict(extra="forbid", strict=True)
    embed = create_model("EmbedRequest", __config__=ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"texts": EXAMPLE_TEXTS}]}), texts=(texts, ...))
    predict = create_model(
        "PredictRequest",
        __config__=ConfigDict(**strict, json_schema_extra={"examples": [
            {"texts": EXAMPLE_TEXTS, "tasks": task_names[:1], "embedding": False}]}),
        texts=(texts, ...),
        tasks=(list[task] | None, Field(None, description=f"tasks to run (default all): {task_names}")),
        embedding=(bool, Field(False, description="also return each text's embedding")),
    )
    return embed, predict


def model_info(folder: str) -> ModelInfo:
    """What ``GET /v1/model`` answers, read from the model folder without loading the weights."""
    description = read_model_description(folder)
    settings, metadata = description["model"], description.get("metadata", {})
    return ModelInfo(
        version=model_version(folder), encoder=settings["encoder"], pooling=settings["pooling"],
        normalize=settings["normalize"], max_length=settings["max_length"],
        embedding_dimension=embedding_dimension(folder),
        tasks=[TaskOut(name=task["name"], kind=task["kind"], labels=task["labels"]) for task in description["tasks"]],
        trained_at=metadata.get("trained_at"), metrics=metadata.get("metrics", {}))


def create_api(backend: Backend, info: ModelInfo, settings: ServiceSettings) -> FastAPI:
    """The endpoint's FastAPI app: ``/v1/embed``, ``/v1/predict``, ``/v1/model``, ``/healthz``, ``/docs``."""
    answered = [task.name for task in info.tasks if task.kind != "similarity"]  # those with an output
    embed_request, predict_request = request_models(settings, answered)
    cache = AnswerCache(settings.cache_size)
    app = FastAPI(title="mtl: multi-task sentence transformer", version=info.version,
                  description=f"Embeddings, sentence labels and entities from one encoder ({info.encoder}).")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)

    async def answer(texts: list[str], tasks: list[str]) -> list[Prediction]:
        key = tuple(tasks)
        found = [cache.get(text, key) for text in texts]
        missing = [index for index, prediction in enumerate(found) if prediction is None]
        if missing:
            fresh = await backend.predict([texts[index] for index in missing], list(tasks))
            for index, prediction in zip(missing, fresh):
                found[index] = prediction
                cache.put(texts[index], key, prediction)
        failed = [index for index, prediction in enumerate(found) if prediction.error]
        if failed:
            raise HTTPException(422, f"texts.{failed[0]}: {found[failed[0]].error}")
        return found

    @app.post("/v1/embed", responses=ERROR_RESPONSES, summary="Embed texts")
    async def embed(request: embed_request) -> EmbedResponse:
        predictions = await answer(request.texts, [])
        return EmbedResponse(model=info.version, dimension=info.embedding_dimension,
                             embeddings=[prediction.embedding.tolist() for prediction in predictions])

    @app.post("/v1/predict", responses=ERROR_RESPONSES, summary="Labels, entities and optionally embeddings")
    async def predict(request: predict_request) -> PredictResponse:
        tasks = list(dict.fromkeys(request.tasks)) if request.tasks is not None else answered
        predictions = await answer(request.texts, tasks)
        return PredictResponse(model=info.version, results=[
            _prediction_out(prediction, request.embedding) for prediction in predictions])

    @app.get("/v1/model", summary="Tasks, labels, encoder, version and training metrics")
    async def describe() -> ModelInfo:
        return info

    @app.get("/healthz", responses={503: ERROR_RESPONSES[503]}, summary="200 when the model can answer")
    async def health() -> Health:
        if not await backend.healthy():
            raise HTTPException(503, "the model is not loaded")
        return Health()

    return app


def _prediction_out(prediction: Prediction, embedding: bool) -> PredictionOut:
    return PredictionOut(
        labels={task: LabelOut(**vars(label)) for task, label in prediction.labels.items()},
        entities={task: [EntityOut(**vars(entity)) for entity in spans] for task, spans in prediction.entities.items()},
        embedding=prediction.embedding.tolist() if embedding else None,
        truncated=prediction.truncated)


def _error(status: int, error: str, detail=None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail}, headers=headers)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the first bad field (``texts.3``), without echoing the input back."""
    errors = [{"loc": [str(part) for part in error["loc"]], "msg": error["msg"], "type": error["type"]}
              for error in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(part for part in first["loc"] if part != "body") or "body"
    return _error(422, f"{where}: {first['msg']}", jsonable_encoder(errors))


async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    # FastAPI answers an undecodable body with a bare 400 "There was an error parsing the body"
    error = "body: cannot be decoded as UTF-8 JSON" if exc.status_code == 400 else str(exc.detail)
    return _error(exc.status_code, error, headers=getattr(exc, "headers", None))


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is read in full or parsed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _error(413, self._message())(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # a chunked body that does not say its length
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"body: larger than the limit of {self.max_bytes} bytes"
