"""Upstream connections, tried as a hostile tenant would: stream readers
that stop reading (raw sockets that never read a byte) fill key A's share of the upstream
connections. The next request of A gets a fast 503 with Retry-After in Elasticsearch's
shape (408 when its own ?timeout ends first), key B's endpoint answers promptly
throughout, the stalled streams are cut once their client has taken nothing for the
write timeout and their upstream calls are closed (the emulator sees them cancelled),
and A works again afterwards. The gateway and the emulator are real processes. The
figures are printed for docs/reliability.md (run with -s)."""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from isolation_support import isolated

from gateway.gateway_support import (
    Gateways,
    RunningEmulator,
    is_es_error,
    metric,
    sse_events,
)
from inference_devkit.devstack.processes import Service
from inference_operator.anthropic.client import Upstream, encode
from inference_operator.anthropic.errors import NoConnection

PER_KEY = 4  # --upstream-connections-per-key
WAIT = 0.5  # --upstream-connection-wait
WRITE_TIMEOUT = 5.0  # --stream-write-timeout
RPM = 100_000
KEY_A, KEY_B = "key-a-7e1f3b9c5d2a4e6f", "key-b-0c8d6a2f4e1b3c5d"
# A stream far larger than every buffer on its way, so that the upstream is still
# generating when the gateway has to wait for the client: the client's (its receive
# buffer, up to ~1 MiB, the gateway's send buffer, aiohttp's) and the upstream
# connection's (the emulator's send buffer and the gateway's receive buffer, grown by the
# kernel to several MiB). ~150k deltas: ~20 MiB upstream, ~8 MiB of events.
WORDS = 150_000
LONG = json.dumps({"input": "w " * WORDS,
                   "task_settings": {"max_tokens": WORDS + 100}}).encode()
SHORT = json.dumps({"input": "hello"}).encode()


@dataclass
class Tenants:
    gateway: str
    emulator: str
    port: int
    session: aiohttp.ClientSession
    processes: list[Service]  # the gateway's and the emulator's

    def cpu_seconds(self) -> float:
        return sum(process.cpu_seconds() for process in self.processes)

    async def post(self, tenant: str, *, stream: bool = False, query: str = ""
                   ) -> tuple[int, dict[str, str], bytes, float]:
        started = time.monotonic()
        path = f"/_inference/completion/{tenant}" + ("/_stream" if stream else "")
        async with self.session.post(self.gateway + path + query, data=SHORT,
                                     headers={"Content-Type": "application/json"}) as response:
            raw = await response.read()
            return response.status, dict(response.headers), raw, time.monotonic() - started

    async def long_calls(self) -> list[dict[str, Any]]:
        """The emulator's log of the stalled streams' upstream calls."""
        async with self.session.get(self.emulator + "/_emulator/requests") as response:
            log = await response.json()
        return [entry for entry in log if entry["path"] == "/v1/messages"
                and (entry["body"] or {}).get("max_tokens", 0) > WORDS]


@pytest.fixture
async def tenants(tmp_path: Path) -> AsyncIterator[Tenants]:
    """Tenants A and B, each with its own key, on one gateway process."""
    with isolated(tmp_path, "--upstream-connections-per-key", str(PER_KEY),
                  "--upstream-connection-wait", str(WAIT),
                  "--stream-write-timeout", str(WRITE_TIMEOUT)) as running:
        stack = running.stack
        for tenant, key in (("a", KEY_A), ("b", KEY_B)):  # rpm: no wait for a token
            running.put(tenant, "completion", api_key=key, requests_per_minute=RPM)
        async with aiohttp.ClientSession() as session:
            yield Tenants(stack.gateway_url, stack.emulator_url, stack.gateway_port, session,
                          [running.gateway, stack.services["emulator"]])


async def stalled_stream(port: int, tenant: str) -> asyncio.StreamWriter:
    """A stream request on a raw socket that never reads a byte of the answer."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /_inference/completion/%s/_stream HTTP/1.1\r\nHost: gateway\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (tenant.encode(), len(LONG), LONG))
    await writer.drain()
    return writer


async def test_stalled_streams_hold_only_their_key_and_are_cut(tenants: Tenants) -> None:
    b_latencies: dict[str, list[float]] = {"before": [], "filling": [], "stalled": []}
    for _ in range(10):
        status, _, raw, took = await tenants.post("b")
        assert status == 200, raw
        b_latencies["before"].append(took)
    opened = time.monotonic()
    stalled = [await stalled_stream(tenants.port, "a") for _ in range(PER_KEY)]
    try:
        for _ in range(100):  # every stalled stream's upstream call is open
            if len(await tenants.long_calls()) == PER_KEY:
                break
            await asyncio.sleep(0.1)

        # Key A's share is in use: its next request, streamed or not, is refused at once.
        refused_after = []
        for stream in (False, True):
            status, headers, raw, took = await tenants.post("a", stream=stream)
            assert status == 503, raw
            assert headers.get("Retry-After") == "1"
            payload = json.loads(sse_events(raw.decode())[0][1] if stream else raw)
            assert is_es_error(payload, 503), payload
            assert "upstream connections allowed per API key" in payload["error"]["reason"]
            assert KEY_A not in raw.decode()
            assert took < WAIT + 2.0  # the bounded wait, not the stalled streams' time
            refused_after.append(took)
        # Its own ?timeout, shorter than the wait, ends first: 408.
        status, _, raw, _ = await tenants.post("a", query="?timeout=100ms")
        assert status == 408 and is_es_error(json.loads(raw), 408), raw

        # Key B answers promptly throughout, until A's stalled streams are cut: while A's
        # output still flows (the emulator, which serves B too, and the gateway busy
        # until every buffer towards A's readers is full), and once A's streams only wait.
        cpu, clock = tenants.cpu_seconds(), time.monotonic()
        while any(entry["finished_at"] is None for entry in await tenants.long_calls()):
            status, _, raw, took = await tenants.post("b")
            assert status == 200, raw
            assert took < 2.0  # generous: B never waits behind A
            busy = (tenants.cpu_seconds() - cpu) / (time.monotonic() - clock)
            cpu, clock = tenants.cpu_seconds(), time.monotonic()
            b_latencies["stalled" if busy < 0.2 else "filling"].append(took)
            status, _, raw, _ = await tenants.post("b", stream=True)
            assert status == 200 and sse_events(raw.decode())[-1][1] == "[DONE]", raw
            assert time.monotonic() - opened < WRITE_TIMEOUT + 60, "the stalled streams stay"
            await asyncio.sleep(0.2)

        # Every stalled stream's upstream call was closed before its answer was complete.
        calls = await tenants.long_calls()
        assert [entry["outcome"] for entry in calls] == ["cancelled"] * PER_KEY
        cancelled_after = [entry["finished_at"] - opened for entry in calls]
        assert min(cancelled_after) >= WRITE_TIMEOUT

        # A works again, and the metrics tell what happened.
        status, _, raw, _ = await tenants.post("a")
        assert status == 200, raw
        session, url = tenants.session, tenants.gateway
        assert await metric(session, url, "inference_gateway_upstream_requests_total",
                            'inference_id="a",status="client_stalled"') == PER_KEY
        assert await metric(session, url, "inference_gateway_upstream_requests_total",
                            'inference_id="a",status="no_connection"') == 2
        assert await metric(session, url, "inference_gateway_requests_total",
                            'inference_id="a",stream="true",status="499"') == PER_KEY
        print(f"\nupstream call of a stalled stream cancelled {min(cancelled_after):.2f} to "
              f"{max(cancelled_after):.2f} s after its request (write timeout "
              f"{WRITE_TIMEOUT:g} s); A's next requests refused after "
              f"{', '.join(f'{took:.2f}' for took in refused_after)} s (wait {WAIT:g} s); "
              "key B while A was saturated: " + "; ".join(
                  f"{phase}: {len(took)} requests, median "
                  f"{statistics.median(took) * 1000:.1f} ms, max {max(took) * 1000:.1f} ms"
                  for phase, took in b_latencies.items() if took))
    finally:
        for writer in stalled:
            writer.close()


async def test_a_reading_client_of_a_slow_stream_is_not_cut(emulator: RunningEmulator) -> None:
    """Only output the client does not take counts: an upstream slower than the write
    timeout between its deltas is waited for."""
    async with Gateways(emulator.url) as gateways:
        running = await gateways.start(stream_write_timeout=0.3)
        await running.put("slow")
        emulator.latency(per_token=0.6)  # two gaps twice the write timeout
        status, _, text = await running.call(
            "POST", "/_inference/completion/slow/_stream",
            {"input": "hi", "task_settings": {"max_tokens": 3}})
        assert status == 200
        events = sse_events(text)
        assert events[-1] == ("message", "[DONE]") and len(events) == 4, events
        with pytest.raises(KeyError):  # never counted: nothing was cut
            await metric(running.session, running.public,
                         "inference_gateway_upstream_requests_total",
                         'inference_id="slow",status="client_stalled"')


async def test_a_stream_dropped_unread_gives_its_connection_back(
        emulator: RunningEmulator) -> None:
    """A stream whose events are never read (its client gone before the first one) is not
    closed by the cleanup of a generator that never started: dropping it frees the key's
    connection, else one such client per slot would lock the key out for good."""
    params = {"model": "claude-sonnet-4-5", "max_tokens": 5,
              "messages": [{"role": "user", "content": "hi"}]}
    streamed, whole = encode(params, stream=True), encode(params)
    upstream = Upstream(emulator.url, connections_per_key=1, connection_wait=0.1)
    await upstream.start()
    try:
        client = upstream.client(KEY_A)
        stream = await client.stream(streamed)
        with pytest.raises(NoConnection):  # the key's one connection is in use
            await client.stream(streamed)
        del stream
        gc.collect()
        (await client.stream(streamed)).close()
        assert (await client.create(whole))["type"] == "message"
    finally:
        await upstream.close()
