"""The operator's Prometheus metrics, and the small aiohttp server that serves them on a
port of their own (kopf's liveness server takes no routes of ours).

The names are used by the chart's dashboard and alerts (docs/operator.md, "Metrics"). The
only labels are condition reasons (``api/models.py`` ``Reason``) and Ready states: never a
name, a key, a Secret's data or anything a user wrote. Each operator has its own registry,
as each gateway has (several can run in one process, as in the unit tests)."""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inference_operator.api.models import Reason
from inference_operator.labelled_metrics import Labelled

log = logging.getLogger(__name__)

# (Ready status, reason) of one endpoint, as the endpoints gauge labels it.
ReadyState = tuple[str, str]
UNKNOWN = "Unknown"
_REASONS = frozenset(Reason)
# A reconcile may wait for the Models API (10 s timeout) and for the gateways (5 s).
_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Ready can wait on things outside the operator (a Secret created later, a gateway rollout).
_READY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def ready_state(ready: str | None, reason: str | None) -> ReadyState:
    """A state fit for a label: a reason the controller does not write (a status someone
    else patched, say) is ``Unknown``, so nobody's text and no unbounded set of values
    becomes a series."""
    status = ready if ready in ("True", "False") else UNKNOWN
    return status, reason if reason in _REASONS else UNKNOWN


class _EndpointsByState(Collector):
    """``inference_operator_endpoints``, counted when scraped from what the controller
    tracks: a (ready, reason) pair no endpoint has any more is simply not there, so a
    deleted or changed endpoint can never leave a stale count behind."""

    NAME = "inference_operator_endpoints"
    HELP = "InferenceEndpoints the operator tracks, by their current Ready status and reason."

    def __init__(self, states: Callable[[], Iterable[ReadyState]]) -> None:
        self._states = states

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["ready", "reason"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["ready", "reason"])
        for (ready, reason), count in sorted(Tally(self._states()).items()):
            family.add_metric([ready, reason], count)
        yield family


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Labelled(Counter(
            "inference_operator_reconciles",
            "Reconciles of an InferenceEndpoint, by the Ready reason each wrote "
            "(ReconcileFailed when it raised).", ["outcome"], registry=r))
        # Every outcome from the start, at 0: rate() of one never seen yet is no series,
        # and an alert on it (ReconcileFailed) could not tell "none" from "not scraped".
        for reason in Reason:
            self.reconciles.labels(reason.value)
        self.reconcile_duration = Histogram(
            "inference_operator_reconcile_duration_seconds", "Time of one reconcile.",
            buckets=_RECONCILE_BUCKETS, registry=r)
        self.time_to_ready = Histogram(
            "inference_operator_time_to_ready_seconds",
            "From the first sight of an endpoint's generation to the reconcile that "
            "reported it Ready=True; once per generation.", buckets=_READY_BUCKETS, registry=r)
        # The controller's queue of work: every reconcile waits for its resource's lock
        # (one at a time per resource), and those of a full sync or a fleet revisit first
        # for one of SYNC_CONCURRENCY slots; waiting and running both count. A retry
        # sleeping through its backoff does not (it is scheduled, not ready to run), nor
        # do events kopf holds in its per-resource queue (kopf hands over the latest).
        self.pending = Gauge(
            "inference_operator_pending_reconciles",
            "Reconciles running or waiting for their turn (the endpoint's lock, or a slot "
            "of a full sync or fleet revisit).", registry=r)
        self.last_reconcile = Gauge(
            "inference_operator_last_reconcile_timestamp_seconds",
            "Unix time of the last finished reconcile or full sync.", registry=r)

    def track_endpoints(self, states: Callable[[], Iterable[ReadyState]]) -> None:
        """Count the endpoints ``states`` yields at each scrape (one controller each)."""
        self.registry.register(_EndpointsByState(states))

    def reconciled(self, outcome: str, seconds: float) -> None:
        self.reconciles.labels(outcome).inc()
        self.reconcile_duration.observe(seconds)
        self.finished()

    def finished(self) -> None:
        self.last_reconcile.set(time.time())


class MetricsServer:
    """``GET /metrics`` on its own listener, in kopf's event loop. A scrape only reads
    in-memory counters (and counts the tracked endpoints once), so it does not hold the
    loop for long; running it in a thread would read the controller's state unlocked."""

    def __init__(self, metrics: OperatorMetrics, address: str, port: int) -> None:
        self._metrics = metrics
        self._address, self._port = address, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        # No access log: Prometheus scrapes every 30 s, forever.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._address, self._port).start()
        log.info("metrics on http://%s:%d/metrics", self._address, self._port)

    async def _serve(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self._metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
