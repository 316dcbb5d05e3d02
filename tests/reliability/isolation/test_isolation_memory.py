"""Memory is bounded by configuration, not by demand: hundreds of ~1 MiB
chat bodies sent at once to endpoints that allow one request a minute, on a real gateway
process. What fits in each endpoint's share of --request-memory waits in the queue
holding only its upstream request's bytes; the rest gets a fast 429 with Retry-After;
RSS stays under the figure docs/reliability.md states; a second tenant is answered
throughout; and once the flood leaves, the gateway holds nothing and serves as before.
``RELIABILITY_SCALE=N`` (make soak) sends N floods in a row. Figures are printed for
docs/reliability.md (run with -s)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from isolation_support import HealthWatch, Isolated, isolated, post

from gateway.gateway_support import is_unified_error, metric
from inference_operator.gateway.request_memory import MIB

BUDGET = 128 * MIB  # the default for the chart's 512Mi limit (a quarter of it)
SHARE = 0.25  # the default endpoint share
FLOODED = 3  # endpoints flooded at once: their shares together stay within the budget
# Bodies sent to each: hundreds queued, and a crowd three times that uploading at once.
PER_ENDPOINT = (100, 300)
BODY_SIZE = 1_000_000


def rss_bound_mib(connections: int) -> float:
    """The bound docs/reliability.md states: the process at rest and one body being
    parsed, the budget, and the buffers of the connections sending bodies at once."""
    return 64 + 1.25 * BUDGET / MIB + 0.15 * connections


def chat_body(size: int) -> bytes:
    head, tail = '{"messages":[{"role":"user","content":"', '"}]}'
    return (head + "x" * (size - len(head) - len(tail)) + tail).encode()


@dataclass
class Flood:
    """Bodies sent at once to the flooded endpoints, and what came back."""

    url: str
    flooded: list[str]
    body: bytes
    per_endpoint: int
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    async def one(self, session: aiohttp.ClientSession, inference_id: str) -> None:
        # No timeout: each waits its turn (at 1 rpm, minutes away) until cancelled, so
        # that the memory budget, not a timeout, is what refuses the rest.
        path = f"/_inference/chat_completion/{inference_id}?timeout=-1"
        status, headers, answer = await post(session, self.url + path, self.body)
        self.outcomes[str(status)] += 1
        if status == 429:
            payload = json.loads(answer)
            if not (is_unified_error(payload) and headers.get("Retry-After")
                    and payload["error"]["type"] == "es_rejected_execution_exception"):
                self.problems.append(f"{dict(headers)} {answer[:300]!r}")

    async def queued(self, session: aiohttp.ClientSession) -> float:
        total = 0.0
        for inference_id in self.flooded:
            with contextlib.suppress(KeyError):  # none has reached its queue yet
                total += await metric(session, self.url, "inference_gateway_queued_requests",
                                      f'inference_id="{inference_id}"')
        return total


@pytest.mark.parametrize("per_endpoint", PER_ENDPOINT)
async def test_queued_bodies_keep_rss_bounded_and_the_excess_gets_fast_429s(
        tmp_path: Path, scale: int, per_endpoint: int) -> None:
    """One flood (``make soak``: one after another, as many as RELIABILITY_SCALE says,
    each held to the same bound and leaving nothing behind)."""
    with isolated(tmp_path, "--request-memory", str(BUDGET),
                  "--request-memory-endpoint-share", str(SHARE)) as running:
        flooded = [f"flood-{n}" for n in range(FLOODED)]
        for n, inference_id in enumerate(flooded):
            running.put(inference_id, "chat_completion", requests_per_minute=1,
                        api_key=f"flood-key-{n}")
        running.put("other", "completion", api_key="other-tenant-key")
        url = running.stack.gateway_url
        other = json.dumps({"input": "y" * (BODY_SIZE - 20)}).encode()
        async with aiohttp.ClientSession() as session:
            status, _, _ = await post(session, url + "/_inference/completion/other", other)
            assert status == 200
        baseline = running.gateway.rss_mib()
        for round_ in range(scale):
            await _flood(running, Flood(url, flooded, chat_body(BODY_SIZE), per_endpoint), other,
                         baseline, first=round_ == 0)

        async with aiohttp.ClientSession() as session:
            # A flooded endpoint takes requests into its queue again (refused at once
            # otherwise): one waits, until its client gives up.
            path = "/_inference/chat_completion/flood-0?timeout=-1"
            with pytest.raises(TimeoutError):
                await post(session, url + path, chat_body(BODY_SIZE),
                           timeout=aiohttp.ClientTimeout(total=1))


async def _flood(running: Isolated, flood: Flood, other: bytes, baseline: float, *,
                 first: bool) -> None:
    url = running.stack.gateway_url
    share = int(BUDGET * SHARE)
    queue_room = share // BODY_SIZE  # what a share holds, one in flight included
    answered_at_once = len(flood.flooded) if first else 0  # each bucket's first token
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as senders:
        requests = [asyncio.create_task(flood.one(senders, inference_id))
                    for inference_id in flood.flooded for _ in range(flood.per_endpoint)]
        try:
            async with aiohttp.ClientSession() as session, HealthWatch(url).during() as watch:
                # Settled: every request answered (the endpoints' first, 429s) or queued.
                for _ in range(600):
                    waiting = await flood.queued(session)
                    if sum(flood.outcomes.values()) + waiting == len(requests):
                        break
                    await asyncio.sleep(0.1)
                settled = time.monotonic() - started
                rss, peak = running.gateway.rss_mib(), running.gateway.rss_mib(field="VmHWM")
                held = await metric(session, url, "inference_gateway_request_memory_bytes")
                # Another tenant, meanwhile: a body as large, answered at once.
                other_status, _, _ = await post(session, url + "/_inference/completion/other",
                                                other)
            bound = rss_bound_mib(len(requests))
            print(f"\n{len(requests)} bodies of {BODY_SIZE} bytes to {len(flood.flooded)} "
                  f"endpoints at 1 rpm, budget {BUDGET // MIB} MiB ({share // MIB} MiB per "
                  f"endpoint): settled in {settled:.1f} s as {dict(flood.outcomes)} + "
                  f"{waiting:.0f} queued holding {held / MIB:.1f} MiB; RSS {baseline:.0f} MiB "
                  f"at first, {rss:.0f} MiB queued, peak {peak:.0f} MiB (bound {bound:.0f}); "
                  f"/healthz at worst {max(watch.latencies):.2f} s")
            assert sum(flood.outcomes.values()) + waiting == len(requests)
            assert flood.outcomes["200"] == answered_at_once, flood.outcomes
            assert 0 < waiting <= len(flood.flooded) * queue_room, (waiting, flood.outcomes)
            assert flood.outcomes["429"] == len(requests) - answered_at_once - waiting
            assert not flood.problems, flood.problems[:3]
            assert held <= len(flood.flooded) * share, held
            assert peak < bound, (baseline, rss, peak)
            assert other_status == 200
            assert not watch.failures, watch.failures
        finally:
            for request in requests:
                request.cancel()
            await asyncio.gather(*requests, return_exceptions=True)

    # The flood gone (its clients disconnected): nothing held, nothing queued, and the
    # other tenant is served as before.
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            if not await metric(session, url, "inference_gateway_request_memory_bytes"):
                break
            await asyncio.sleep(0.1)
        assert await metric(session, url, "inference_gateway_request_memory_bytes") == 0
        assert await flood.queued(session) == 0
        status, _, _ = await post(session, url + "/_inference/completion/other", other)
        assert status == 200
    print(f"after: RSS {running.gateway.rss_mib():.0f} MiB")


async def test_a_body_that_cannot_fit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """Its Content-Length says it would not fit in the endpoint's share: the 429 comes
    back with no byte of the body sent (the client waits for the answer first)."""
    share = 100_000
    with isolated(tmp_path, "--request-memory", str(share * 4)) as running:
        running.put("chat", "chat_completion", requests_per_minute=1)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.stack.gateway_port)
        try:
            writer.write(b"POST /_inference/chat_completion/chat HTTP/1.1\r\nHost: gateway\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (share + 1))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 429 "), head
        assert b"\r\nRetry-After: 60\r\n" in head, head
