"""How every route answers a request: the variant that serves it, its answers from the cache or the
model, and what the endpoint's monitor is told of it (status, latency, texts, predictions)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException

from mtl.inference.answers import Prediction
from mtl.serving.cache import AnswerCache
from mtl.serving.monitoring import EndpointMonitor
from mtl.serving.routing import Loaded, Router, Variant


@dataclass
class Exchange:
    """What one request was answered with, for its metrics and its log line."""

    texts: list[str] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)


Respond = Callable[[Variant, Loaded, Exchange], Awaitable]


class Answering:
    """The router, the cache and the monitor that every route shares."""

    def __init__(self, router: Router, cache: AnswerCache, monitor: EndpointMonitor):
        self.router, self.cache, self.monitor = router, cache, monitor

    async def answer(self, route: str, variant: Variant, loaded: Loaded, texts: list[str], tasks: list[str],
                     exchange: Exchange) -> list[Prediction]:
        """Every text's prediction by ``loaded``, from the cache where it has one; a text the model
        could not answer fails the request with a 422 that names it."""
        key = (loaded.info.version, *tasks)   # a cached answer is one version's
        found = [self.cache.get(text, key) for text in texts]
        missing = [index for index, prediction in enumerate(found) if prediction is None]
        if missing:
            fresh = await loaded.backend.predict([texts[index] for index in missing], list(tasks))
            for index, prediction in zip(missing, fresh):
                found[index] = prediction
                self.cache.put(texts[index], key, prediction)
        failed = [index for index, prediction in enumerate(found) if prediction.error]
        if failed:
            raise HTTPException(422, f"texts.{failed[0]}: {found[failed[0]].error}")
        exchange.texts, exchange.predictions = texts, found
        self.monitor.served(route, variant.name, loaded.info.version, loaded.reference, texts, found,
                            cache_hits=len(texts) - len(missing))
        return found

    async def observed(self, route: str, client_key: str | None, respond: Respond):
        """``respond`` with the variant chosen for ``client_key``, and the request's outcome told to
        the monitor whatever it is."""
        variant = self.router.choose(client_key)
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
            self.monitor.finished(route, status, time.perf_counter() - started, variant.name,
                                  loaded.info.version, exchange.texts, exchange.predictions)
