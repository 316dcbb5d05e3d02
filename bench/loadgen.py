"""The one load tool every target gets: an aiohttp client in the bench process. Each
function is bounded twice, by a request count and by a time limit."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
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

    def payload(self) -> bytes:
        return json.dumps(self.body).encode()

    def stream_request(self) -> tuple[str, bytes]:
        if self.stream_url is not None:
            return self.stream_url, self.payload()
        return self.url, json.dumps({**self.body, "stream": True}).encode()

    def request_headers(self) -> dict[str, str]:
        token = {"Authorization": f"Bearer {self.tokens.pop()}"} if self.tokens else {}
        return {"Content-Type": "application/json", **self.headers, **token}


@dataclass
class Sample:
    """Latencies (seconds) of one phase against one target."""

    target: str
    seconds: float  # wall time of the phase
    latencies: list[float]
    errors: int = 0
    client_cpu: float = 0.0  # CPU seconds the load tool itself used
    late: int = 0  # fixed-rate sends that left more than 1 ms behind schedule

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p / 100)

    def summary(self) -> dict[str, Any]:
        ms = {f"p{p}_ms": round(self.percentile(p) * 1000, 3) for p in (50, 90, 99)}
        return {"target": self.target, "requests": len(self.latencies), "errors": self.errors,
                "seconds": round(self.seconds, 3), "rps": round(self.rps, 1), **ms,
                **({"mean_ms": round(statistics.fmean(self.latencies) * 1000, 3),
                    "min_ms": round(min(self.latencies) * 1000, 3),
                    "max_ms": round(max(self.latencies) * 1000, 3)} if self.latencies else {}),
                "client_cpu_share": round(self.client_cpu / self.seconds, 2)
                if self.seconds else None,
                "late_sends": self.late}


async def _post(session: aiohttp.ClientSession, target: Target, payload: bytes
                ) -> tuple[float, bool]:
    started = time.perf_counter()
    try:
        async with session.post(target.url, data=payload,
                                headers=target.request_headers()) as response:
            await response.read()
            ok = response.status == 200
    except aiohttp.ClientError:
        ok = False
    return time.perf_counter() - started, ok


async def closed_loop(session: aiohttp.ClientSession, target: Target, *, requests: int,
                      concurrency: int, time_limit: float) -> Sample:
    """``requests`` POSTs from ``concurrency`` workers, each sending its next request as
    soon as the last one is answered: the most the target does at that concurrency."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    payload = target.payload()
    stop_at = time.monotonic() + time_limit

    async def worker() -> None:
        nonlocal issued, errors
        while issued < requests and time.monotonic() < stop_at:
            issued += 1
            latency, ok = await _post(session, target, payload)
            if ok:
                latencies.append(latency)
            else:
                errors += 1

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sample(target.name, time.perf_counter() - started, latencies, errors,
                  time.process_time() - cpu)


async def fixed_rate(session: aiohttp.ClientSession, target: Target, *, rate: float,
                     seconds: float, time_limit: float) -> Sample:
    """An open loop: one request every 1/rate s whatever the answers do, for ``seconds``.
    Latency counts from the scheduled send time, so a stalled target cannot hide its
    queue (no coordinated omission)."""
    payload = target.payload()
    count = round(rate * seconds)
    latencies: list[float] = []
    errors = late = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(scheduled: float) -> None:
        nonlocal errors
        _, ok = await _post(session, target, payload)
        if ok:
            latencies.append(loop.time() - scheduled)
        else:
            errors += 1

    tasks = []
    cpu, started = time.process_time(), time.perf_counter()
    for index in range(count):
        scheduled = start + index / rate
        if (delay := scheduled - loop.time()) > 0:
            await asyncio.sleep(delay)
        elif -delay > 0.001:
            late += 1
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.wait(tasks, timeout=time_limit)
    for task in tasks:
        task.cancel()
    return Sample(target.name, time.perf_counter() - started, latencies,
                  errors + sum(1 for t in tasks if t.cancelled()),
                  time.process_time() - cpu, late)


async def time_to_first_delta(session: aiohttp.ClientSession, target: Target, *,
                              requests: int, time_limit: float) -> Sample:
    """Streams one at a time; the latency is the time until the first chunk holding a
    text delta arrives (the stream is then read to its end)."""
    url, payload = target.stream_request()
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + time_limit
    cpu, started = time.process_time(), time.perf_counter()
    for _ in range(requests):
        if time.monotonic() > stop_at:
            break
        sent = time.perf_counter()
        first: float | None = None
        seen = b""
        try:
            async with session.post(url, data=payload,
                                    headers=target.request_headers()) as response:
                async for chunk in response.content.iter_any():
                    if first is None:
                        seen += chunk
                        if target.delta_marker in seen:
                            first = time.perf_counter() - sent
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        if ok and first is not None:
            latencies.append(first)
        else:
            errors += 1
    return Sample(target.name, time.perf_counter() - started, latencies, errors,
                  time.process_time() - cpu)


async def delta_arrivals(session: aiohttp.ClientSession, target: Target,
                         time_limit: float) -> list[float]:
    """Arrival times (s from the first) of each text delta of one stream, counted by
    chunk: deltas that arrive in one chunk get the same time, i.e. they were batched."""
    arrivals: list[float] = []
    url, payload = target.stream_request()
    async with asyncio.timeout(time_limit), session.post(
            url, data=payload, headers=target.request_headers()) as response:
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            arrivals.extend([now] * chunk.count(target.delta_marker))
    return [t - arrivals[0] for t in arrivals] if arrivals else []


async def hold_streams(session: aiohttp.ClientSession, target: Target, *, streams: int,
                       time_limit: float, on_all_open: Callable[[], None]
                       ) -> tuple[int, int]:
    """Opens ``streams`` streams at once and reads them to their end; calls
    ``on_all_open()`` once every stream has sent its first delta. Returns (streams that
    opened, streams that completed)."""
    url, payload = target.stream_request()
    opened = completed = 0

    async def one() -> None:
        nonlocal opened, completed
        async with session.post(url, data=payload,
                                headers=target.request_headers()) as response:
            first = True
            async for chunk in response.content.iter_any():
                if first and target.delta_marker in chunk:
                    first = False
                    opened += 1
                    if opened == streams:
                        on_all_open()
            completed += response.status == 200

    tasks = [asyncio.create_task(one()) for _ in range(streams)]
    await asyncio.wait(tasks, timeout=time_limit)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return opened, completed


def merged(samples: Sequence[Sample]) -> Sample:
    """Rounds of one target as one sample (alternating rounds share the machine's
    drift between targets)."""
    return Sample(samples[0].target, sum(s.seconds for s in samples),
                  [x for s in samples for x in s.latencies], sum(s.errors for s in samples),
                  sum(s.client_cpu for s in samples), sum(s.late for s in samples))


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
