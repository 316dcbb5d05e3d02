"""Prometheus metrics, per endpoint. Each gateway has its own registry (several can run
in one process, as in tests). Labels are inference ids, never anything from a key."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Requests for ids that do not exist are counted under this label: client-chosen ids
# must not create new series.
UNKNOWN_ID = "_unknown"

M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up once: prometheus_client's
    ``labels()`` validates, takes a lock and builds a tuple on every call, which showed
    in the profile of the request path (docs/benchmarks.md, "Reading the results")."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Labelled(Counter(
            "inference_gateway_requests", "Inference requests answered, by HTTP status.",
            ["inference_id", "stream", "status"], registry=r))
        self.duration = Labelled(Histogram(
            "inference_gateway_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["inference_id", "stream"], buckets=_LATENCY_BUCKETS, registry=r))
        self.queue_wait = Labelled(Histogram(
            "inference_gateway_queue_wait_seconds", "Time spent waiting for a rate-limit token.",
            ["inference_id"], buckets=_LATENCY_BUCKETS, registry=r))
        self.queued = Labelled(Gauge(
            "inference_gateway_queued_requests", "Requests waiting for a rate-limit token.",
            ["inference_id"], registry=r))
        self.upstream = Labelled(Counter(
            "inference_gateway_upstream_requests", "Calls to Anthropic, by outcome.",
            ["inference_id", "status"], registry=r))
        self.retries = Labelled(Counter(
            "inference_gateway_upstream_retries", "Retried calls to Anthropic, by cause.",
            ["inference_id", "cause"], registry=r))
        self.tokens = Labelled(Counter(
            "inference_gateway_tokens", "Tokens reported by Anthropic.",
            ["inference_id", "kind"], registry=r))
        self.endpoints = Gauge(
            "inference_gateway_endpoints", "Inference endpoints configured.", registry=r)
        self.ready = Gauge(
            "inference_gateway_ready",
            "1 once the first full sync arrived (config mode: every shard loaded), 0 again "
            "while shutting down.", registry=r)
        # Config mode (--config-secret): what each shard serves, and what was refused.
        self.config_generation = Labelled(Gauge(
            "inference_gateway_config_generation",
            "Generation of the configuration shard being served.", ["shard"], registry=r))
        self.config_rejected = Labelled(Counter(
            "inference_gateway_config_rejected",
            "Shard contents refused (undecodable, or an endpoint failing validation); the "
            "previous content is kept.", ["shard"], registry=r))
        self.replicas = Gauge(
            "inference_gateway_replicas",
            "Ready gateways sharing each rate limit (1 without --peers-service).", registry=r)
        self.replicas.set(1)
        # Both read at scrape time (set_function), for spotting leaks: after a burst they
        # return to where they were (tests/gateway/test_gateway_faults.py).
        self.tasks = Gauge(
            "inference_gateway_asyncio_tasks", "asyncio tasks in the gateway's event loop.",
            registry=r)
        self.connections = Gauge(
            "inference_gateway_client_connections", "Open client connections, by listener.",
            ["listener"], registry=r)

    def count_tokens(self, inference_id: str, input_tokens: Any, output_tokens: Any) -> None:
        """Counts as reported in an upstream reply; what is not a positive number (absent,
        or a reply that is odd) is no count, not a failure of the request."""
        if isinstance(input_tokens, int) and input_tokens > 0:
            self.tokens.labels(inference_id, "input").inc(input_tokens)
        if isinstance(output_tokens, int) and output_tokens > 0:
            self.tokens.labels(inference_id, "output").inc(output_tokens)
