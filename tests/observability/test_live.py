"""The dashboard's and the alerts' queries against a real Prometheus scraping the real
processes (the session's emulator, gateway and operator on the test control plane): each
returns series once the product has done what the panel or alert looks at. A renamed
metric or label breaks this test, not the dashboard in production."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from inference_devkit.devstack import prometheus
from inference_devkit.devstack.processes import Service, Stack
from inference_devkit.waiting import poll
from inference_operator.observability import alerts, dashboard
from operator_support import wait_reason
from resources import KEY, REJECTED_KEY, endpoint, secret

# Grafana's variables as a user leaves them (every endpoint, every caller namespace), and
# its rate interval as it would pick it for a 1 s scrape.
VARIABLES = {"$__rate_interval": "1m", "$inference_id": ".*", "$namespace": ".*"}


@pytest.fixture(scope="module")
def server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if prometheus.binary() is None:
        pytest.skip(prometheus.INSTALL_HINT)
    targets = {"gateway": urlsplit(stack.gateway_metrics_url).netloc,
               "operator": urlsplit(stack.operator_metrics_url).netloc}
    running = prometheus.service(tmp_path_factory.mktemp("prometheus"), targets,
                                 interval="1s")
    running.start(wait=60)
    try:
        yield running
    finally:
        running.stop()


def _post(url: str, body: Any) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _fault(stack: Stack, fault: dict[str, Any]) -> None:
    assert _post(f"{stack.emulator_url}/_emulator/faults", [fault]) == 200


# The emulator's organisation limits, far away: its answers then carry Anthropic's
# rate-limit headers, which the gateway learns its budget from.
FAR_LIMITS = {"requests_per_minute": 1_000_000, "input_tokens_per_minute": 100_000_000,
              "output_tokens_per_minute": 100_000_000}


def _limits(stack: Stack, method: str, body: Any = None) -> None:
    request = urllib.request.Request(
        f"{stack.emulator_url}/_emulator/limits", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _exercise(stack: Stack, kubectl: Any, namespace: str) -> None:
    """What every panel and alert looks at: a Ready endpoint called (completion, stream
    and chat) under an organisation's limits, Anthropic's 429, 529 and 401, and endpoints
    Ready=False for a missing Secret and for a key Anthropic refuses."""
    iid = f"{namespace}-live"
    kubectl.apply([secret("anthropic"), secret("refused", REJECTED_KEY),
                   endpoint("live", inference_id=iid),
                   endpoint("refused", "refused", inference_id=f"{namespace}-refused"),
                   endpoint("orphan", "missing", inference_id=f"{namespace}-orphan")],
                  namespace)
    kubectl.wait_for_condition("iep/live", "Ready", namespace, timeout=30)
    wait_reason(kubectl, namespace, "refused", "UpstreamAuthFailed")
    wait_reason(kubectl, namespace, "orphan", "SecretNotFound")
    base = f"{stack.gateway_url}/_inference/completion/{iid}"
    _limits(stack, "PUT", FAR_LIMITS)
    try:
        assert _post(base, {"input": "hello"}) == 200
    finally:
        _limits(stack, "DELETE")
    assert _post(base + "/_stream", {"input": "hello"}) == 200
    _fault(stack, {"kind": "error", "status": 529})  # retried, then answered
    assert _post(base, {"input": "hello"}) == 200
    _fault(stack, {"kind": "error", "status": 429, "retry_after": "0", "count": 3})
    assert _post(base, {"input": "hello"}) == 429  # every attempt refused
    _fault(stack, {"kind": "error", "status": 401})
    assert _post(base, {"input": "hello"}) == 401
    assert KEY not in json.dumps(kubectl.get("iep", "live", namespace))


def test_every_dashboard_and_alert_query_returns_series(stack: Stack, kubectl: Any,
                                                        namespace: str,
                                                        server: Service) -> None:
    _exercise(stack, kubectl, namespace)
    queries = {f"panel {index}": expr for index, expr in enumerate(dashboard.expressions())}
    queries |= {f"alert {alert.name}": alert.live_query() for alert in alerts.ALERTS}
    for placeholder, value in VARIABLES.items():
        queries = {name: expr.replace(placeholder, value) for name, expr in queries.items()}

    def empty() -> dict[str, str]:
        return {name: expr for name, expr in queries.items()
                if not prometheus.query(server, expr)}

    # Scraped every second; rates need two samples after the calls.
    with contextlib.suppress(TimeoutError):
        poll(lambda: not empty(), timeout=60, interval=1)
    assert not empty(), json.dumps(empty(), indent=1)
