"""The endpoint's HTTP schema, free of Ray and of models: its settings (``args`` in
serve_config.yaml), the request models built with its limits and tasks, and the response models.

No ``from __future__ import annotations``: FastAPI and pydantic read these annotations at runtime.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model

# at least one character that Python's str.isspace() (the Predictor's test for blank) does not count
# as space, each listed: pydantic's \s lacks the separators \x1c-\x1f that Python counts, and the
# OpenAPI schema's clients read \s as ECMAScript does, without \x85, so "\x85" passed the schema and
# failed the API (schemathesis found it)
NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# JSON Schema's integer admits 2.0; strict pydantic would not
WholeNumber = Annotated[int, BeforeValidator(lambda value: int(value) if isinstance(value, float)
                                             and value.is_integer() else value)]
EXAMPLE_TEXTS = ["Alice flew to Paris with Acme Corp.", "What a wonderful, heartfelt film."]


class VariantSettings(BaseModel):
    """One model of an A/B test: a name for responses and metrics, a model, a traffic weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: str = Field(description="a model folder or models:/NAME@ALIAS, as the application's model")
    weight: float = Field(gt=0, description="share of the traffic, relative to the other variants' weights")


class DriftSettings(BaseModel):
    """How each replica watches what it serves against the model folder's reference statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(1000, ge=10, description="texts in the sliding window each replica scores")
    min_window: int = Field(200, ge=1, description="texts the window must hold before it is scored")
    psi_threshold: float = Field(0.25, gt=0, description="population stability index of the input lengths or of "
                                 "a task's labels past which the replica logs a warning")
    embedding_threshold: float = Field(0.25, gt=0, description="distance of the window's mean embedding from the "
                                       "reference mean, in reference spreads, past which it logs a warning")

    def model_post_init(self, _context) -> None:
        if self.min_window > self.window:
            raise ValueError(f"drift.min_window ({self.min_window}) must not exceed drift.window ({self.window})")


class RequestLogSettings(BaseModel):
    """Sampled request logs: one JSON line per logged request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="a local file each replica appends JSON lines to (made if missing)")
    sample_rate: float = Field(0.01, gt=0, le=1, description="share of the requests logged")
    include_text: bool = Field(False, description="also log the texts: they may be personal data")


class ServiceSettings(BaseModel):
    """The endpoint's limits and batching, from ``args`` in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="the model folder written by jobs.train (local path or URI), "
                              "or a registered version, models:/NAME@ALIAS or models:/NAME/VERSION; or variants")
    max_texts: int = Field(64, ge=1, description="most texts in one request")
    max_chars: int = Field(2_000, ge=1, description="most characters in one text")
    max_body_bytes: int = Field(1_000_000, ge=1_000, description="largest request body; larger gets 413")
    max_batch_texts: int = Field(64, ge=1, description="most texts the model runs in one batch")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="how long a batch waits to fill; "
                                        "under load the next batch fills while the current one runs")
    cache_size: int = Field(0, ge=0, description="answers of repeated texts kept (LRU); 0 turns the cache off")
    model_deployment: bool = Field(False, description="run the model in its own deployment behind the HTTP "
                                   "replicas, which retry when a model replica dies (see mtl.serving.deployments)")
    retries: int = Field(2, ge=0, description="with model_deployment: tries on another model replica")
    threads: int | None = Field(None, ge=1, description="torch threads per model replica (default: its num_cpus)")
    backend: Literal["torch", "onnx"] = Field("torch", description="onnx: the model folder's ONNX export "
                                              "(python -m jobs.export)")
    precision: Literal["float32", "bfloat16", "int8"] = Field(
        "float32", description="torch: float32 or bfloat16 (autocast); onnx: float32 or int8")
    variants: list[VariantSettings] | None = Field(
        None, description="an A/B test: two or more models with traffic weights; each response names its variant "
                          "and version, and a request's X-Client-Key header keeps a client on one variant")
    reload_interval_s: float = Field(30.0, ge=0, description="how often each replica looks up a models:/NAME@ALIAS "
                                     "model again and, when the alias has moved, loads the new version in the "
                                     "background and switches to it; 0 never looks again")

    drift: DriftSettings = Field(DriftSettings(), description="drift scores against the model's reference")
    request_log: RequestLogSettings | None = Field(None, description="sampled request logs (off by default)")
    max_inspect_tokens: int = Field(128, ge=2, description="most tokens of the one text /v1/inspect takes "
                                    "(its attention matrix grows with their square)")

    def model_post_init(self, _context) -> None:
        if self.max_texts > self.max_batch_texts:
            raise ValueError(f"max_texts ({self.max_texts}) must not exceed max_batch_texts ({self.max_batch_texts})")
        if (self.model is None) == (self.variants is None):
            raise ValueError("give model (one model) or variants (an A/B test), not both and not neither")
        if self.variants is not None:
            names = [variant.name for variant in self.variants]
            if len(names) < 2 or len(set(names)) < len(names):
                raise ValueError(f"variants: give two or more, each with its own name (got {names})")
            if self.model_deployment:
                raise ValueError("variants: the models of an A/B test run in the HTTP replicas; "
                                 "set model_deployment: false")

    def served(self) -> list[VariantSettings]:
        """The variants to serve: ``variants``, or ``model`` alone as the variant ``default``."""
        return list(self.variants) if self.variants else [VariantSettings(name="default", model=self.model, weight=1)]


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
    model: str = Field(description="version of the model that answered (content hash)", examples=["3f9a0c1b2d4e"])
    variant: str = Field(description="the A/B variant that answered ('default' without an A/B test)",
                         examples=["default"])
    results: list[PredictionOut]


class EmbedResponse(BaseModel):
    model: str = Field(examples=["3f9a0c1b2d4e"])
    variant: str = Field(examples=["default"])
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
    layers: int = Field(description="transformer layers of the encoder")
    attention_heads: int = Field(description="attention heads per layer")
    tasks: list[TaskOut]
    trained_at: str | None = None
    metrics: dict = Field(default_factory=dict, description="validation metrics of the saved checkpoint")
    variant: str = Field("default", description="the A/B variant this model serves")
    registered: str | None = Field(None, description="the models:/ reference it was loaded from, if any")


class TokenTagOut(BaseModel):
    tag: str = Field(examples=["B-PER"])
    score: float = Field(examples=[0.93])


class InspectResponse(BaseModel):
    model: str
    variant: str
    tokens: list[str] = Field(description="subword tokens, special tokens included")
    tags: dict[str, list[TokenTagOut]] = Field(description="per tagging task, the tag and probability of each token")
    layer: int
    head: int
    layers: int = Field(description="layers of the encoder")
    heads: int = Field(description="attention heads per layer")
    attention: list[list[float]] = Field(description="(tokens, tokens): row i is how token i attends to each token")
    truncated: bool


class DriftOut(BaseModel):
    variant: str
    model: str
    window: int = Field(description="texts in this replica's window (the scores need at least min_window)")
    scores: dict[str, float] = Field(description="length and labels/<task>: population stability index; "
                                     "embedding: distance of the mean embedding in reference spreads")
    thresholds: dict[str, float]
    drifted: list[str] = Field(description="the scores past their threshold")
    reference: bool = Field(description="false when the model folder holds no reference statistics")


class DriftResponse(BaseModel):
    variants: list[DriftOut]


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
    501: {"model": ErrorOut, "description": "the served backend cannot answer this route (onnx has no attention)"},
}


def request_models(settings: ServiceSettings, task_names: list[str],
                   info: ModelInfo) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """The embed, predict and inspect request models, with this endpoint's limits, the model's tasks,
    layers and heads in their schema."""
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
    inspect = create_model(
        "InspectRequest",
        __config__=ConfigDict(**strict, json_schema_extra={"examples": [{"text": EXAMPLE_TEXTS[0], "layer": -1,
                                                                          "head": 0}]}),
        text=(text, Field(description=f"one non-blank text of at most {settings.max_chars} characters")),
        layer=(WholeNumber, Field(-1, ge=-info.layers, lt=info.layers,
                          description="the layer whose attention to return; negative counts from the last")),
        head=(WholeNumber, Field(0, ge=-info.attention_heads, lt=info.attention_heads,
                         description="the attention head of that layer; negative counts from the last")),
    )
    return embed, predict, inspect
