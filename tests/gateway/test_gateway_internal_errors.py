"""A bug in the gateway is a 500 in the Elasticsearch shape, with its traceback in the
log and never in the answer; it is not blamed on Anthropic (502) nor retried."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from gateway_support import RunningEmulator, RunningGateway, metric, sse_events

from inference_operator.anthropic.client import Client
from inference_operator.gateway.metrics import GatewayMetrics

COMPLETION = "/_inference/completion/anthropic_completion"
STREAM = COMPLETION + "/_stream"
DETAIL = "the bug's own words"


def internal_error(path: str) -> dict[str, Any]:
    cause = {"type": "exception",
             "reason": f"internal error while handling [{path}]; see the gateway log"}
    return {"error": {"root_cause": [cause], **cause}, "status": 500}


def bug(*_: Any, **__: Any) -> Any:
    raise RuntimeError(DETAIL)


def traceback_logged(caplog: pytest.LogCaptureFixture, path: str) -> bool:
    return any(r.levelno == logging.ERROR and path in r.getMessage() and r.exc_info
               and r.exc_info[0] is RuntimeError for r in caplog.records)


async def requests_counted(gateway: RunningGateway, status: int, stream: str) -> float:
    return await metric(gateway.session, gateway.public, "inference_gateway_requests_total",
                        f'inference_id="anthropic_completion",status="{status}",'
                        f'stream="{stream}"')


@pytest.mark.parametrize(("path", "method"), [(COMPLETION, "create"), (STREAM, "stream")])
async def test_a_bug_on_the_way_upstream_is_a_500_not_a_502(
        gateway: RunningGateway, emulator: RunningEmulator, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, path: str, method: str) -> None:
    await gateway.put()
    monkeypatch.setattr(Client, method, bug)
    async with gateway.session.post(gateway.public + path, json={"input": "x"}) as r:
        status, headers, body = r.status, r.headers, await r.text()
    assert status == 500 and headers["X-Elastic-Product"] == "Elasticsearch"
    if path == STREAM:  # before the stream started: its one event, with the status
        assert headers["Content-Type"].startswith("text/event-stream")
        assert sse_events(body) == [("error", json.dumps(internal_error(path),
                                                         separators=(",", ":")))]
    else:
        assert json.loads(body) == internal_error(path)
    assert DETAIL not in body and "Traceback" not in body
    assert traceback_logged(caplog, path)
    assert emulator.requests() == []  # not retried
    assert await requests_counted(gateway, 500, "true" if path == STREAM else "false") == 1
    _, _, metrics = await gateway.call("GET", "/metrics")
    assert "inference_gateway_upstream_requests_total{" not in metrics  # Anthropic not blamed


async def test_a_bug_mid_stream_ends_it_with_a_500_event(
        gateway: RunningGateway, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await gateway.put()
    monkeypatch.setattr(GatewayMetrics, "count_tokens", bug)  # at the stream's first event
    async with gateway.session.post(gateway.public + STREAM, json={"input": "x"}) as r:
        status, body = r.status, await r.text()
    events = sse_events(body)
    assert status == 200
    assert events[-1] == ("error", json.dumps(internal_error(STREAM), separators=(",", ":")))
    assert "[DONE]" not in body and DETAIL not in body
    assert traceback_logged(caplog, STREAM)
    assert await requests_counted(gateway, 500, "true") == 1


async def test_a_bug_outside_inference_is_a_500_too(
        gateway: RunningGateway, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await gateway.put()
    monkeypatch.setattr(gateway.server.gateway.registry, "select", bug)
    status, _, payload = await gateway.call("GET", "/_inference")
    assert status == 500 and payload == internal_error("/_inference")
    assert traceback_logged(caplog, "/_inference")


async def test_odd_usage_numbers_from_upstream_are_not_a_failure(
        gateway: RunningGateway, emulator: RunningEmulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted only when they are positive integers; anything else must not fail the answer.
    await gateway.put()
    original = Client.create

    async def odd_usage(self: Client, body: bytes, headers: dict[str, str] | None = None,
                        on_headers: Any = None) -> dict[str, Any]:
        message = await original(self, body, headers, on_headers)
        return {**message, "usage": {"input_tokens": -3, "output_tokens": "many"}}

    monkeypatch.setattr(Client, "create", odd_usage)
    status, _, payload = await gateway.call("POST", COMPLETION, {"input": "x"})
    assert status == 200 and payload["completion"]
