"""Which model version answers a request: the backends a version runs on, the A/B variants, the
router that picks one per request, and what ``GET /v1/model`` says of a version.

A *backend* is anything with ``async predict(texts, tasks) -> list[Prediction]``, ``async
inspect(...)`` (``mtl.serving.inspection``) and ``async healthy() -> bool``. Ray Serve plugs in a
batched model, in the HTTP replica or behind a deployment handle (``mtl.serving.deployments``);
tests and a single-process server plug in ``PredictorBackend``, which calls a ``Predictor``
directly. Either way the answers come from ``Predictor.predict``, the same code bulk labeling runs.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Protocol

from mtl.inference.answers import Prediction
from mtl.inference.model_folder import encoder_shape, model_version, read_model_description
from mtl.inference.predictor import Predictor
from mtl.inference.reference import Reference
from mtl.serving.inspection import Inspection, inspect_text
from mtl.serving.schema import ModelInfo, TaskOut


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
