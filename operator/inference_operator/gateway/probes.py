"""The probes every listener answers without credentials: ``/healthz`` (liveness, and in
config mode the generations served), ``/readyz`` and, where every caller may see it all,
``/metrics``; and the metrics listener, which serves only that."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference_operator.gateway.keys import Probe
from inference_operator.gateway.responses import json_response
from inference_operator.gateway.service import Gateway


def _healthz(gateway: Gateway) -> web.Response:
    return json_response(gateway.health())


def _readyz(gateway: Gateway) -> web.Response:
    reason = gateway.readiness.reason()
    if reason is None:
        return json_response({"ready": True})
    return json_response({"ready": False, "reason": reason}, status=503)


def _metrics(gateway: Gateway) -> web.Response:
    response = web.Response(body=generate_latest(gateway.metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_ALL_PROBES: dict[str, Probe] = {"/healthz": _healthz, "/readyz": _readyz,
                                 "/metrics": _metrics}


def probes(*, metrics: bool) -> dict[str, Probe]:
    """The probes, with ``/metrics`` only where every caller may see it all: its series
    name endpoints and callers' namespaces, so with ``--auth`` on the public listener
    leaves it to the metrics listener (build_metrics_app); the admin listener (loopback by
    default) keeps it."""
    return _ALL_PROBES if metrics else {path: probe for path, probe in _ALL_PROBES.items()
                                        if probe is not _metrics}


def build_metrics_app(gateway: Gateway) -> web.Application:
    """The metrics listener (``--metrics-port``): ``GET /metrics`` and nothing else, not
    access-logged (Prometheus scrapes it forever)."""
    async def scrape(_: web.Request) -> web.Response:
        return _metrics(gateway)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app
