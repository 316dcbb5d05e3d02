"""Faults, and what users see: upstream replies that are slow, broken or cut short; the
gateway killed under load, flooded past its queue, and abandoned by 500 streaming
clients at once. The gateway runs as a real process where the fault is about the
process (SIGKILL, RSS, its task count); the emulator plays Anthropic. Every load loop
is bounded in requests and in time; figures are printed for docs/reliability.md
(run with -s)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gateway_support import (
    ADMIN_TOKEN,
    RunningEmulator,
    RunningGateway,
    answer_problems,
    metric,
    seed_body,
    sse_events,
    start_gateway,
)

from inference_devkit.devstack.processes import Stack
from inference_devkit.waiting import poll_async

COMPLETION = "/_inference/completion/anthropic_completion"
STREAM = COMPLETION + "/_stream"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def eventually(check: Callable[[], Coroutine[Any, Any, bool]], seconds: float) -> bool:
    """Whether ``check`` comes true within ``seconds``."""
    try:
        return await poll_async(check, timeout=seconds, interval=0.2)
    except TimeoutError:
        return False


# -- upstream faults not covered by test_gateway_upstream.py / test_gateway_streaming.py --

async def test_slow_first_byte_on_a_stream_is_408_before_it_starts(
        gateway: RunningGateway, emulator: RunningEmulator) -> None:
    await gateway.put()
    emulator.latency(first_token=10.0)
    async with gateway.session.post(gateway.public + STREAM + "?timeout=1s",
                                    json={"input": "x"}) as r:
        status, headers, body = r.status, r.headers, await r.read()
    assert status == 408 and not answer_problems(status, headers, body)
    assert sse_events(body.decode()) == [("error", json.dumps(
        {"error": {"root_cause": [{"type": "status_exception",
                                   "reason": "Request timed out after [1s]"}],
                   "type": "status_exception", "reason": "Request timed out after [1s]"},
         "status": 408}, separators=(",", ":")))]

    async def cancelled() -> bool:
        return emulator.requests()[-1].outcome == "cancelled"

    assert await eventually(cancelled, 5)  # the slow upstream call does not linger


@pytest.mark.parametrize(("body", "what"), [
    ('{"id": "msg_', "the answer is not JSON"),
    ("<html>502 Bad Gateway</html>", "the answer is not JSON"),
    ("[1, 2]", "the answer is not a JSON object"),
])
async def test_malformed_json_from_upstream_is_502(gateway: RunningGateway,
                                                   emulator: RunningEmulator, body: str,
                                                   what: str) -> None:
    await gateway.put()
    emulator.fail({"kind": "malformed", "body": body})
    async with gateway.session.post(gateway.public + COMPLETION, json={"input": "x"}) as r:
        status, headers, raw = r.status, r.headers, await r.read()
    assert status == 502 and not answer_problems(status, headers, raw, upstream_fault=True)
    assert json.loads(raw)["error"]["reason"] == (
        "Received an invalid response for request from inference entity id "
        f"[anthropic_completion]: [{what}]")
    assert len(emulator.requests()) == 1  # not retried: a broken answer is not transient


@pytest.mark.parametrize(("fault", "deltas"), [
    # The stream stops cleanly after two deltas, without message_stop: was answered as a
    # complete stream ending in [DONE], so the client took a cut answer for a whole one.
    ({"kind": "stream_truncate", "after": 2}, 2),
    # An event whose data is not JSON.
    ({"kind": "malformed", "content_type": "text/event-stream",
      "body": "event: message_start\ndata: {not json\n\n"}, 0),
    # Not an event stream at all.
    ({"kind": "malformed"}, 0),
])
async def test_broken_streams_end_with_an_error_event(gateway: RunningGateway,
                                                      emulator: RunningEmulator, fault,
                                                      deltas: int) -> None:
    await gateway.put()
    emulator.fail(fault)
    async with gateway.session.post(gateway.public + STREAM, json={"input": "a b c d"}) as r:
        status, headers, body = r.status, r.headers, await r.read()
    events = sse_events(body.decode())
    assert status == 200 and not answer_problems(status, headers, body)
    assert [name for name, _ in events] == ["message"] * deltas + ["error"]
    error = json.loads(events[-1][1])
    assert error["status"] == 502 and "Received an invalid response" in error["error"]["reason"]


# -- the gateway process ------------------------------------------------------------

async def _load(base: str, ids: list[str], *, seconds: float, max_requests: int,
                outcomes: Counter[str], stop: asyncio.Event, workers: int = 20) -> None:
    """Completions and streams round-robin over ``ids`` until ``stop`` or the bounds."""
    sent = 0
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=10)

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal sent
        while not stop.is_set() and sent < max_requests and time.monotonic() < deadline:
            sent += 1
            path = f"/_inference/{ids[sent % len(ids)]}" + ("/_stream" if n % 2 else "")
            try:
                async with session.post(base + path, json={"input": "load"}) as r:
                    body = await r.read()
                    ok = r.status == 200 and (not n % 2 or body.endswith(b"[DONE]\n\n"))
                    outcomes["200" if ok else f"{r.status} {body[:80]!r}"] += 1
            except (aiohttp.ClientError, TimeoutError):
                outcomes["connection error"] += 1
                await asyncio.sleep(0.05)  # the gateway is gone; don't spin

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session, n) for n in range(workers)))


async def test_sigkill_under_load_then_restart_serves_every_endpoint(
        process_stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = await start_gateway(process_stack, "--state-file", str(state))
    public, admin_url = process_stack.gateway_url, process_stack.admin_url
    ids = [f"endpoint-{n}" for n in range(5)]
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        for inference_id in ids:
            async with admin.put(f"{admin_url}/_inference/completion/{inference_id}",
                                 json=seed_body(requests_per_minute=60_000)) as r:
                assert r.status == 200, await r.text()

    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    load = asyncio.create_task(_load(public, ids, seconds=30, max_requests=5000,
                                     outcomes=outcomes, stop=stop))

    async def busy() -> bool:
        return outcomes["200"] >= 100

    assert await eventually(busy, 15), outcomes
    first.kill()  # SIGKILL, mid-load
    killed_at = sum(outcomes.values())
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(load, 20)  # in-flight requests fail fast, nothing hangs
    print(f"\nSIGKILL after {killed_at} requests under load: {dict(outcomes)}")
    assert set(outcomes) <= {"200", "connection error"}, outcomes

    await start_gateway(process_stack, "--state-file", str(state))  # the same ports
    async with aiohttp.ClientSession() as session:
        async with session.get(admin_url + "/_inference/_all", headers=ADMIN) as r:
            listed = [e["inference_id"] for e in (await r.json())["endpoints"]]
        assert listed == ids
        for inference_id in ids:
            async with session.get(f"{public}/_inference/{inference_id}") as r:
                assert r.status == 200
            async with session.post(f"{public}/_inference/{inference_id}",
                                    json={"input": "back?"}) as r:
                assert r.status == 200, await r.text()
            async with session.post(f"{public}/_inference/{inference_id}/_stream",
                                    json={"input": "back?"}) as r:
                assert (await r.read()).endswith(b"data: [DONE]\n\n")
    assert state.stat().st_mode & 0o777 == 0o600


# Long enough for a thousand refusals on a machine whose cores are busy elsewhere (CI
# builds Go binaries beside the first tests): a refusal slower than this would count as
# "gave up", as a queued request does.
BURST_PATIENCE = 6.0


async def _burst(base: str, count: int, path: str) -> Counter[str]:
    """``count`` requests at once (one connection each), answered, or given up by their
    client after BURST_PATIENCE seconds."""
    outcomes: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=BURST_PATIENCE)) as session:
        async def one() -> None:
            try:
                async with session.post(base + path, json={"input": "x"}) as r:
                    body = await r.read()
            except TimeoutError:
                outcomes["gave up"] += 1
                return
            problems = answer_problems(r.status, r.headers, body)
            if r.status == 429:
                assert r.headers["Retry-After"] == "60", r.headers
            outcomes[f"{r.status}" + (f" {problems}" if problems else "")] += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return outcomes


async def test_queue_at_capacity_is_429_with_retry_after_and_memory_stays_bounded(
        process_stack: Stack) -> None:
    capacity, burst = 200, 1000
    gateway = await start_gateway(process_stack, "--queue-capacity", str(capacity))
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.put(f"{process_stack.admin_url}{COMPLETION}",
                             json=seed_body(requests_per_minute=1)) as r:
            assert r.status == 200
    # No timeout: the queued ones wait (their turns are minutes away) until their clients
    # give up.
    path = COMPLETION + "?timeout=-1"
    # A first, smaller round warms up every path (200, 429, a client gone) before measuring.
    await _burst(process_stack.gateway_url, capacity + 10, path)
    baseline = gateway.rss_mib()
    rounds = []
    for _ in range(2):
        outcomes = await _burst(process_stack.gateway_url, burst, path)
        rounds.append((outcomes, gateway.rss_mib()))
    print(f"\nqueue capacity {capacity}, bursts of {burst}: RSS {baseline:.1f} MiB before, "
          + ", ".join(f"{rss:.1f} MiB after {dict(o)}" for o, rss in rounds))
    for outcomes, _ in rounds:
        # Exactly the queue's capacity waits (until its client leaves); the rest is refused
        # at once.
        assert outcomes == Counter({"429": burst - capacity, "gave up": capacity}), outcomes
    # Bounded: a burst five times the capacity costs a few MiB, and the second costs no
    # more than the first (a leak would grow with every burst).
    assert rounds[0][1] - baseline < 40, (baseline, rounds)
    assert rounds[1][1] - rounds[0][1] < 8, (baseline, rounds)


async def test_500_clients_leaving_mid_stream_leak_no_tasks_or_connections(
        process_stack: Stack, emulator: RunningEmulator) -> None:
    clients = 500
    # All on one key: its share of the upstream connections must hold them all.
    await start_gateway(process_stack, "--upstream-connections-per-key", str(clients))
    public = process_stack.gateway_url
    emulator.latency(per_token=0.3)  # streams last ~4 s: every client leaves mid-way
    scrape = aiohttp.ClientSession()  # one keep-alive connection for every scrape
    try:
        async with scrape.put(f"{process_stack.admin_url}{COMPLETION}", headers=ADMIN,
                              json=seed_body(requests_per_minute=60_000)) as r:
            assert r.status == 200

        async def gauges() -> tuple[float, float, int]:
            return (await metric(scrape, public, "inference_gateway_asyncio_tasks"),
                    await metric(scrape, public, "inference_gateway_client_connections",
                                 'listener="public"'),
                    emulator.connections())

        before = await gauges()
        streaming, left = 0, 0
        release = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def leave_mid_stream() -> None:
                nonlocal streaming, left
                response = await session.post(public + STREAM,
                                              json={"input": "a b c d e f g h i j"})
                assert response.status == 200
                await response.content.readuntil(b"\n\n")  # the first delta
                streaming += 1
                await release.wait()  # all 500 open at once, then all leave
                response.close()
                left += 1

            opened = [asyncio.create_task(leave_mid_stream()) for _ in range(clients)]

            async def all_streaming() -> bool:
                return streaming == clients or any(t.done() for t in opened)

            await eventually(all_streaming, 40)
            during = await gauges()
            release.set()
            await asyncio.wait_for(asyncio.gather(*opened), 30)

        async def settled() -> bool:
            now = await gauges()
            return now[0] <= before[0] and now[1] <= before[1] and now[2] <= before[2]

        settled_in_time = await eventually(settled, 20)
        after = await gauges()
        outcomes = Counter(e.outcome for e in emulator.requests())
        print(f"\n{left} of {clients} clients left mid-stream; (asyncio tasks, client "
              f"connections, upstream connections): before {before}, all open {during}, "
              f"after {after}; upstream outcomes {dict(outcomes)}")
        assert left == clients
        assert during[1] >= clients and during[2] >= clients  # the gauges do count
        assert settled_in_time, (before, after)
        # Every upstream call was cut when its client left, none ran to the end.
        assert outcomes == Counter({"cancelled": clients}), outcomes
        closed = await metric(scrape, public, "inference_gateway_requests_total",
                              'inference_id="anthropic_completion",status="499",stream="true"')
        assert closed == clients
    finally:
        await scrape.close()
