"""``_stream``: Elasticsearch's SSE shape, passed through as upstream produces it."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
from gateway_support import RunningEmulator, RunningGateway, metric, seed_body, sse_events

from inference_devkit.waiting import poll_async

STREAM = "/_inference/completion/anthropic_completion/_stream"


async def wait_for(predicate, seconds: float = 5.0) -> bool:
    async def probe() -> bool:
        return predicate()

    return await poll_async(probe, timeout=seconds, interval=0.02)


async def test_deltas_in_order_then_done(gateway: RunningGateway) -> None:
    await gateway.put()
    async with gateway.session.post(gateway.public + STREAM, json={"input": "stream me"}) as r:
        raw = await r.read()
        headers = r.headers
    assert r.status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    assert headers["X-Elastic-Product"] == "Elasticsearch"
    assert not raw.startswith(b"\xef\xbb\xbf") and "\ufeff" not in raw.decode()
    events = sse_events(raw.decode())
    assert all(name == "message" for name, _ in events)
    assert events[-1] == ("message", "[DONE]")
    deltas = [d["delta"] for _, data in events[:-1] for d in json.loads(data)["completion"]]
    assert "".join(deltas) == "Hello from the Anthropic emulator. You said: stream me"
    assert deltas[:3] == ["Hello", " from", " the"]


async def test_stream_is_not_buffered(gateway: RunningGateway, emulator: RunningEmulator) -> None:
    await gateway.put()
    emulator.latency(per_token=0.1)  # 10 deltas: about a second in all
    started = time.monotonic()
    arrivals = []
    async with gateway.session.post(gateway.public + STREAM, json={"input": "x y"}) as r:
        async for chunk in r.content.iter_any():
            if b'"delta"' in chunk:
                arrivals.append(time.monotonic() - started)
    # Deltas arrive spread out over the upstream's pace, not all at the end.
    assert len(arrivals) >= 5
    assert arrivals[0] < 0.5 * arrivals[-1]


async def test_upstream_error_mid_stream(gateway: RunningGateway,
                                         emulator: RunningEmulator) -> None:
    await gateway.put()
    emulator.fail({"kind": "stream_error", "after": 2, "error_type": "overloaded_error",
                   "message": "Overloaded"})
    async with gateway.session.post(gateway.public + STREAM, json={"input": "x"}) as r:
        events = sse_events(await r.text())
    assert r.status == 200
    assert [name for name, _ in events] == ["message", "message", "error"]
    error = json.loads(events[-1][1])
    assert error["status"] == 502
    assert error["error"]["type"] == "status_exception"
    assert error["error"]["reason"] == (
        "Received an Anthropic server is temporarily overloaded status code for request from "
        "inference entity id [anthropic_completion] status [529]. Error message: [Overloaded]")
    assert "[DONE]" not in str(events)


async def test_connection_lost_mid_stream(gateway: RunningGateway,
                                          emulator: RunningEmulator) -> None:
    await gateway.put()
    emulator.fail({"kind": "stream_drop", "after": 1})
    async with gateway.session.post(gateway.public + STREAM, json={"input": "x"}) as r:
        events = sse_events(await r.text())
    assert [name for name, _ in events] == ["message", "error"]
    assert json.loads(events[-1][1])["status"] == 502


async def test_error_before_stream_is_an_error_event(gateway: RunningGateway,
                                                     emulator: RunningEmulator) -> None:
    await gateway.put()
    async with gateway.session.post(gateway.public + "/_inference/nope/_stream",
                                    json={"input": "x"}) as r:
        events = sse_events(await r.text())
    assert r.status == 404 and r.headers["X-Elastic-Product"] == "Elasticsearch"
    assert events[0][0] == "error"
    assert json.loads(events[0][1])["error"]["type"] == "resource_not_found_exception"

    emulator.fail({"kind": "error", "status": 401, "message": "invalid x-api-key"})
    async with gateway.session.post(gateway.public + STREAM, json={"input": "x"}) as r:
        events = sse_events(await r.text())
    assert r.status == 401
    assert json.loads(events[0][1])["status"] == 401


async def test_upstream_retried_before_stream_starts(gateway: RunningGateway,
                                                     emulator: RunningEmulator) -> None:
    await gateway.put(body=seed_body(requests_per_minute=6000))
    emulator.fail({"kind": "error", "status": 529})
    async with gateway.session.post(gateway.public + STREAM, json={"input": "x"}) as r:
        events = sse_events(await r.text())
    assert r.status == 200 and events[-1] == ("message", "[DONE]")
    assert [e.outcome for e in emulator.requests()] == ["529", "200"]


async def test_client_disconnect_cancels_stream_upstream(gateway: RunningGateway,
                                                         emulator: RunningEmulator) -> None:
    await gateway.put()
    emulator.latency(per_token=0.3)
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.public + STREAM, json={"input": "x"})
        await response.content.readuntil(b"\n\n")  # the first delta
        response.close()  # the client goes away mid-stream
    assert await wait_for(lambda: emulator.requests()[-1].outcome == "cancelled")


async def test_client_disconnect_cancels_completion_upstream(gateway: RunningGateway,
                                                             emulator: RunningEmulator) -> None:
    await gateway.put()
    emulator.latency(first_token=3.0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        try:
            await session.post(gateway.public + "/_inference/anthropic_completion",
                               json={"input": "x"})
        except TimeoutError:
            pass
    assert await wait_for(lambda: emulator.requests() != []
                          and emulator.requests()[-1].outcome == "cancelled")
    assert await metric(gateway.session, gateway.public, "inference_gateway_requests_total",
                        'inference_id="anthropic_completion",status="499",stream="false"') == 1


@pytest.mark.parametrize(("query", "body", "error_type"), [
    ("?timeout=soon", {"input": "x"}, "parse_exception"),
    ("", {"input": "x", "query": "q"}, "x_content_parse_exception"),
    ("?timout=5s", {"input": "x"}, "illegal_argument_exception"),
])
async def test_stream_request_errors_are_plain_json_and_counted(
        gateway: RunningGateway, query: str, body, error_type: str) -> None:
    await gateway.put()
    async with gateway.session.post(gateway.public + STREAM + query, json=body) as r:
        status, payload = r.status, await r.json()
    assert status == 400 and payload["error"]["type"] == error_type
    # Was not counted: these were raised before the handler's counting started.
    assert await metric(gateway.session, gateway.public, "inference_gateway_requests_total",
                        'inference_id="_unknown",status="400",stream="true"') == 1
