"""A metrics sink for tests of the endpoint without Ray: it records what ``mtl.serving.metrics`` would count."""


class RecordingSink:
    def __init__(self):
        self.requests: list[tuple] = []      # (route, variant, model, status, seconds)
        self.served: list[tuple] = []        # (route, variant, model, texts, cache hits)
        self.drift_reports: list = []

    def request(self, route, variant, model, status, seconds):
        self.requests.append((route, variant, model, status, seconds))

    def texts(self, route, variant, model, texts, predictions, cache_hits):
        self.served.append((route, variant, model, list(texts), cache_hits))

    def drift(self, variant, model, report):
        self.drift_reports.append(report)
