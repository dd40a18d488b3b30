"""What an endpoint watches while it serves, free of Ray: a drift window per served model version,
sampled request logs, and the events a metrics sink counts (``mtl.serving.metrics`` puts them in
Ray's metrics; tests pass their own sink or none).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from mtl.inference.reference import Reference, predicted_labels
from mtl.serving.drift import DriftReport, DriftThresholds, DriftWindow
from mtl.serving.schema import DriftSettings, RequestLogSettings

logger = logging.getLogger("mtl.serving.deployments")


class MetricsSink(Protocol):
    """Told of every request, of the texts it served, and of the drift scores after it."""

    def request(self, route: str, variant: str, model: str, status: int, seconds: float | None) -> None: ...

    def texts(self, route: str, variant: str, model: str, texts: list[str], predictions: list,
              cache_hits: int) -> None: ...

    def drift(self, variant: str, model: str, report: DriftReport) -> None: ...


class RequestLog:
    """Appends one JSON line per sampled request to a local file: time, route, status, latency,
    variant, model version and the labels given; the texts only with ``include_text``."""

    def __init__(self, settings: RequestLogSettings, *, seed: int | None = None):
        self.settings = settings
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        Path(settings.path).parent.mkdir(parents=True, exist_ok=True)

    def write(self, route: str, status: int, seconds: float | None, variant: str, model: str,
              texts: list[str], predictions: list) -> None:
        if self._random.random() >= self.settings.sample_rate:
            return
        latency = None if seconds is None else round(seconds * 1000, 2)
        entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "route": route,
                 "status": status, "latency_ms": latency, "variant": variant, "model": model,
                 "texts": len(texts), "labels": [predicted_labels(prediction) for prediction in predictions]}
        if self.settings.include_text:
            entry["text"] = texts
        line = (json.dumps(entry) + "\n").encode()
        with self._lock:  # one write per line, in append mode: replicas sharing a file never interleave lines
            descriptor = os.open(self.settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)


class EndpointMonitor:
    """The drift windows (one per variant and model version: a new version starts a new window),
    the request log and the metrics sink of one endpoint replica."""

    def __init__(self, drift: DriftSettings, request_log: RequestLogSettings | None = None,
                 sink: MetricsSink | None = None):
        self.settings = drift
        self.sink = sink
        self.log = RequestLog(request_log) if request_log else None
        self._windows: dict[tuple[str, str], DriftWindow] = {}
        self._drifted: dict[tuple[str, str], set[str]] = {}

    def window(self, variant: str, model: str, reference: Reference | None) -> DriftWindow | None:
        """The window of ``variant`` serving version ``model``; None when its folder has no reference."""
        if reference is None:
            return None
        key = (variant, model)
        if key not in self._windows:
            self._windows = {known: window for known, window in self._windows.items() if known[0] != variant}
            thresholds = DriftThresholds(psi=self.settings.psi_threshold, embedding=self.settings.embedding_threshold)
            self._windows[key] = DriftWindow(reference, size=self.settings.window, min_window=self.settings.min_window,
                                             thresholds=thresholds)
        return self._windows[key]

    def served(self, route: str, variant: str, model: str, reference: Reference | None, texts: list[str],
               predictions: list, cache_hits: int) -> None:
        """Texts answered by one request (cached answers too: they were served all the same)."""
        if self.sink is not None:
            self.sink.texts(route, variant, model, texts, predictions, cache_hits)
        window = self.window(variant, model, reference)
        if window is None:
            return
        for text, prediction in zip(texts, predictions):
            window.add(text, prediction)
        report = window.report()
        if self.sink is not None and report.scores:
            self.sink.drift(variant, model, report)
        self._warn_on_change(variant, model, report, window)

    def finished(self, route: str, status: int, seconds: float | None, variant: str, model: str,
                 texts: list[str], predictions: list) -> None:
        """A request answered with ``status`` after ``seconds`` (None: refused before it was timed)."""
        if self.sink is not None:
            self.sink.request(route, variant, model, status, seconds)
        if self.log is not None:
            self.log.write(route, status, seconds, variant, model, texts, predictions)

    def _warn_on_change(self, variant: str, model: str, report: DriftReport, window: DriftWindow) -> None:
        """A warning when a score passes its threshold, and a note when it falls back below it."""
        before = self._drifted.get((variant, model), set())
        now = set(report.drifted)
        for score in sorted(now - before):
            logger.warning("drift: %s is %.3f over the last %d texts of variant %s (model %s), past its threshold "
                           "%.2f", score, report.scores[score], report.window, variant, model,
                           window.threshold(score))
        for score in sorted(before - now):
            logger.info("drift: %s of variant %s (model %s) is back under its threshold", score, variant, model)
        self._drifted[(variant, model)] = now
