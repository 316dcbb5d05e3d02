"""The one load tool every target gets: an aiohttp client in the bench process. Each
function is bounded twice, by a request count and by a time limit."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.harness import percentile, step


@dataclass(frozen=True)
class Target:
    """One way of asking for the same completion: a URL, a body and headers."""

    name: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    # Bytes that mark a text delta in this target's stream (for time to first delta).
    delta_marker: bytes = b""
    # Where the same request streams: a URL of its own (the gateway's ``/_stream``) or,
    # when None, the same URL with ``"stream": true`` in the body (Anthropic, OpenAI).
    stream_url: str | None = None
    # Bearer tokens, one per request, taken from the end: each call a new caller.
    tokens: list[str] | None = None

    def request(self, stream: bool = False) -> tuple[str, bytes, dict[str, str]]:
        """URL, body and headers of one request."""
        token = {"Authorization": f"Bearer {self.tokens.pop()}"} if self.tokens else {}
        headers = {"Content-Type": "application/json", **self.headers, **token}
        if stream and self.stream_url is None:
            return self.url, json.dumps({**self.body, "stream": True}).encode(), headers
        return (self.stream_url if stream else self.url), json.dumps(self.body).encode(), headers


@dataclass
class Sample:
    """Latencies (seconds) of one phase against one target."""

    target: str
    seconds: float  # wall time of the phase
    latencies: list[float]
    statuses: Counter[str] = field(default_factory=Counter)  # HTTP status or error type
    client_cpu: float = 0.0  # CPU seconds the load tool itself used
    late: int = 0  # fixed-rate sends that left more than 1 ms behind schedule
    chunks: int = 0  # delta markers in the answers read

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200")

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p / 100)

    def summary(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies] or [float("nan")]
        return {"target": self.target, "requests": len(self.latencies), "errors": self.errors,
                "seconds": round(self.seconds, 3),
                "rps": round(len(self.latencies) / self.seconds, 1) if self.seconds else 0.0,
                **{f"p{p}_ms": round(self.percentile(p) * 1000, 3) for p in (50, 90, 99)},
                "max_ms": round(max(ms), 3), "late_sends": self.late,
                "client_cpu_share": round(self.client_cpu / self.seconds, 2)
                if self.seconds else None}


class _Phase:
    """What the requests of one phase add up to."""

    def __init__(self, target: Target) -> None:
        self.target, self.sample = target, Sample(target.name, 0.0, [])
        self.cpu, self.started = time.process_time(), time.perf_counter()

    async def call(self, session: aiohttp.ClientSession, stream: bool = False,
                   since: float | None = None) -> None:
        """One request, its latency from ``since`` (a loop time) or from now; a stream's
        latency is the time to its first chunk holding a delta."""
        url, body, headers = self.target.request(stream)
        marker, started = self.target.delta_marker, time.perf_counter()
        first: float | None = None
        whole = b""
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if not stream:
                    await response.read()
                async for chunk in response.content.iter_any():
                    whole += chunk
                    if first is None and marker in whole:
                        first = time.perf_counter() - started
                status = str(response.status)
        except aiohttp.ClientError as error:
            status = type(error).__name__
        if status == "200" and stream and first is None:
            status = "no delta"
        self.sample.statuses[status] += 1
        if status == "200":
            self.sample.latencies.append(
                first if stream else asyncio.get_running_loop().time() - since
                if since is not None else time.perf_counter() - started)
            self.sample.chunks += whole.count(marker) if marker else 0

    def done(self) -> Sample:
        self.sample.seconds = time.perf_counter() - self.started
        self.sample.client_cpu = time.process_time() - self.cpu
        return self.sample


async def closed_loop(session: aiohttp.ClientSession, target: Target, *, requests: int,
                      concurrency: int, time_limit: float, stream: bool = False) -> Sample:
    """``requests`` POSTs from ``concurrency`` workers, each sending its next request as
    soon as the last one is answered: the most the target does at that concurrency. With
    ``concurrency`` 1: sequential requests, the latency of each alone."""
    phase, issued, stop_at = _Phase(target), 0, time.monotonic() + time_limit

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < stop_at:
            issued += 1
            await phase.call(session, stream)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return phase.done()


async def sequential_rounds(targets: dict[str, Target], *, rounds: int, per_round: int,
                            time_limit: float) -> dict[str, list[Sample]]:
    """Each target alone on a keep-alive connection of its own: ``rounds`` rounds of
    ``per_round`` sequential requests, alternated between the targets (``alternate``)."""
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                for name in targets}
    try:
        return await alternate(tuple(targets), rounds, lambda name: closed_loop(
            sessions[name], targets[name], requests=per_round, concurrency=1,
            time_limit=time_limit))
    finally:
        for session in sessions.values():
            await session.close()


async def time_to_first_delta(session: aiohttp.ClientSession, target: Target, *,
                              requests: int, time_limit: float) -> Sample:
    """Streams one at a time; the latency is the time until the first chunk holding a
    text delta arrives (the stream is then read to its end)."""
    return await closed_loop(session, target, requests=requests, concurrency=1,
                             time_limit=time_limit, stream=True)


async def fixed_rate(session: aiohttp.ClientSession, target: Target, *, rate: float,
                     seconds: float, time_limit: float) -> Sample:
    """An open loop: one request every 1/rate s whatever the answers do, for ``seconds``.
    Latency counts from the scheduled send time, so a stalled target cannot hide its
    queue (no coordinated omission)."""
    phase, loop, tasks = _Phase(target), asyncio.get_running_loop(), []
    start = loop.time() + 0.05
    for index in range(round(rate * seconds)):
        scheduled = start + index / rate
        if (delay := scheduled - loop.time()) > 0:
            await asyncio.sleep(delay)
        elif -delay > 0.001:
            phase.sample.late += 1
        tasks.append(asyncio.create_task(phase.call(session, since=scheduled)))
    await asyncio.wait(tasks, timeout=time_limit)
    for task in tasks:
        if task.cancel():
            phase.sample.statuses["cancelled"] += 1
    return phase.done()


def merged(samples: Sequence[Sample]) -> Sample:
    """Rounds of one target as one sample (alternating rounds share the machine's
    drift between targets)."""
    return Sample(samples[0].target, sum(s.seconds for s in samples),
                  [x for s in samples for x in s.latencies],
                  sum((s.statuses for s in samples), Counter()),
                  sum(s.client_cpu for s in samples), sum(s.late for s in samples),
                  sum(s.chunks for s in samples))


async def alternate(targets: Sequence[str], rounds: int,
                    one: Callable[[str], Awaitable[Sample]], *, rotate: bool = True
                    ) -> dict[str, list[Sample]]:
    """``rounds`` rounds of ``one(target)`` for each target, the order rotated each round
    (``rotate``) or always as given, so that machine noise hits all targets alike."""
    orders = list(itertools.permutations(targets)) if rotate else [tuple(targets)]
    out: dict[str, list[Sample]] = {name: [] for name in targets}
    for number in range(rounds):
        order = orders[number % len(orders)]
        for name in order:
            out[name].append(await one(name))
        step(f"  round {number + 1}/{rounds} ({', '.join(order)}): p50 " + ", ".join(
            f"{n} {out[n][-1].percentile(50) * 1000:.3f} ms" for n in targets))
    return out


def added(rounds: dict[str, list[Sample]], target: str, base: str,
          percentiles: Sequence[int] = (50, 90, 99)) -> dict[str, Any]:
    """What ``target`` adds over ``base`` in ms: on all rounds together (``pNN``) and
    round by round against the ``base`` round beside it (``pNN_rounds``, with their
    median ``pNN_median``: one noisy round moves the spread, not the median)."""
    whole = merged(rounds[target]), merged(rounds[base])
    out: dict[str, Any] = {}
    for p in percentiles:
        per = [round((t.percentile(p) - b.percentile(p)) * 1000, 3)
               for t, b in zip(rounds[target], rounds[base], strict=True)]
        out[f"p{p}"] = round((whole[0].percentile(p) - whole[1].percentile(p)) * 1000, 3)
        out[f"p{p}_rounds"], out[f"p{p}_median"] = per, round(statistics.median(per), 3)
    return out
