"""The endpoint's metrics, through Ray Serve's metrics API: Ray exports them on every node's metrics
port for Prometheus, with the application, deployment and replica as tags and ``ray_`` before each
name (``ray_mtl_requests_total``). docs/serving.md lists them; ``monitoring/`` holds a Grafana
dashboard and a Prometheus alerting rule built on them.
"""

from __future__ import annotations

from mtl.inference.reference import predicted_labels
from mtl.serving.drift import DriftReport

LATENCY_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
BATCH_TEXTS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
INPUT_CHARACTERS = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
VERSION_TAGS = ("variant", "model")


def batch_size_histogram():
    """Texts per model batch (a replica's ``@serve.batch`` gathers them across requests)."""
    from ray.serve import metrics

    return metrics.Histogram("mtl_batch_texts", description="texts the model ran in one batch",
                             boundaries=BATCH_TEXTS)


class EndpointMetrics:
    """A ``mtl.serving.monitoring.MetricsSink`` that counts in Ray's metrics: requests by route and status,
    latency, texts served, cache hits, truncated texts, input length, predicted labels per task,
    and the drift scores of the replica's window."""

    def __init__(self):
        from ray.serve import metrics

        self.requests = metrics.Counter("mtl_requests", description="requests answered, by route, variant, "
                                        "model version and status", tag_keys=("route", *VERSION_TAGS, "status"))
        self.latency = metrics.Histogram("mtl_request_seconds", description="time to answer a request",
                                         boundaries=LATENCY_SECONDS, tag_keys=("route", *VERSION_TAGS))
        self.served = metrics.Counter("mtl_texts", description="texts answered",
                                      tag_keys=("route", *VERSION_TAGS))
        self.cache_hits = metrics.Counter("mtl_cache_hits", description="texts answered from the answer cache",
                                          tag_keys=("route", *VERSION_TAGS))
        self.truncated = metrics.Counter("mtl_truncated_texts", description="texts cut at the model's max length",
                                         tag_keys=VERSION_TAGS)
        self.lengths = metrics.Histogram("mtl_input_characters", description="length of the texts answered",
                                         boundaries=INPUT_CHARACTERS, tag_keys=VERSION_TAGS)
        self.labels = metrics.Counter("mtl_predicted_labels", description="labels given per task (entity types "
                                      "for a tagging task)", tag_keys=(*VERSION_TAGS, "task", "label"))
        self.drift_scores = metrics.Gauge("mtl_drift", description="drift score of the replica's window against "
                                          "the model's reference", tag_keys=(*VERSION_TAGS, "score"))

    def request(self, route: str, variant: str, model: str, status: int, seconds: float | None) -> None:
        tags = {"route": route, "variant": variant, "model": model}
        self.requests.inc(tags={**tags, "status": str(status)})
        if seconds is not None:
            self.latency.observe(seconds, tags=tags)

    def texts(self, route: str, variant: str, model: str, texts: list[str], predictions: list,
              cache_hits: int) -> None:
        version = {"variant": variant, "model": model}
        self.served.inc(len(texts), tags={"route": route, **version})
        if cache_hits:
            self.cache_hits.inc(cache_hits, tags={"route": route, **version})
        truncated = sum(prediction.truncated for prediction in predictions)
        if truncated:
            self.truncated.inc(truncated, tags=version)
        for text in texts:
            self.lengths.observe(len(text), tags=version)
        counts: dict[tuple[str, str], int] = {}
        for prediction in predictions:
            for task, labels in predicted_labels(prediction).items():
                for label in labels:
                    counts[task, label] = counts.get((task, label), 0) + 1
        for (task, label), count in counts.items():
            self.labels.inc(count, tags={**version, "task": task, "label": label})

    def drift(self, variant: str, model: str, report: DriftReport) -> None:
        for score, value in report.scores.items():
            self.drift_scores.set(value, tags={"variant": variant, "model": model, "score": score})
