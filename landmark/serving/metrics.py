"""Prometheus metrics of the serving process, in a registry of their own (one per app, so tests stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# request latency buckets in seconds: a CPU query takes tens to hundreds of milliseconds
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    """Requests, latency, errors by reason, the served version and model swaps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "landmark_serving_requests",
            "Requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "landmark_serving_request_seconds",
            "Wall time of answered requests, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "landmark_serving_errors",
            "Refused or failed requests, by endpoint and reason code.",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.model = Gauge(
            "landmark_serving_model_info",
            "1 for the registry version being served (labels: version, model id).",
            ["version", "model_id"],
            registry=self.registry,
        )
        self.index_size = Gauge(
            "landmark_serving_index_size", "Images in the served index.", registry=self.registry
        )
        self.swaps = Counter(
            "landmark_serving_model_swaps", "Versions put into service.", registry=self.registry
        )
        self.load_failures = Counter(
            "landmark_serving_model_load_failures",
            "Versions that failed to load (the previous one kept serving).",
            registry=self.registry,
        )

    def observe(self, endpoint: str, status: int, seconds: float, reason: str | None = None) -> None:
        """Count one answered request (and its error reason, if any)."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if reason is not None:
            self.errors.labels(endpoint, reason).inc()

    def served(self, version: str, model_id: str, index_size: int) -> None:
        """Record that ``version`` now serves."""
        self.model.clear()
        self.model.labels(version, model_id).set(1)
        self.index_size.set(index_size)
        self.swaps.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
