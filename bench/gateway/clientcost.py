"""What one upstream call costs the caller: the anthropic SDK (aiohttp transport, as the
gateway used it) against the gateway's own client, a bare aiohttp request and the floor
of any Python client (one kept-alive socket, the request bytes built once, the answer
cut by Content-Length), all in this process against the emulator, one call at a time,
rounds alternated; plus what importing the SDK adds to a gateway process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anthropic

from inference_operator.anthropic.client import Upstream, encode

ROUNDS = 3


class _Socket(asyncio.Protocol):
    """The floor: no HTTP library, only what any client must do on one connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bytes] | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if found and length is not None and len(body) >= length and self.waiter:
            self.buffer = b""
            self.waiter.set_result(body[:length])

    async def call(self, request: bytes) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

_IMPORT_PROBE = """
import json, os, time
from inference_devkit.procfs import rss_mib  # the standard library only
t0 = time.perf_counter()
import inference_operator.gateway.server, inference_operator.cli.serving
t1 = time.perf_counter(); r1 = rss_mib(os.getpid())
import anthropic
t2 = time.perf_counter(); r2 = rss_mib(os.getpid())
print(json.dumps({"gateway_modules_mib": round(r1, 1), "gateway_import_s": round(t1 - t0, 3),
                  "anthropic_extra_mib": round(r2 - r1, 1),
                  "anthropic_import_s": round(t2 - t1, 3)}))
"""


async def _timed(call: Callable[[], Awaitable[Any]], requests: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await call()
    return ((time.process_time() - cpu) / requests * 1000,
            (time.perf_counter() - wall) / requests * 1000)


async def measure(emulator_url: str, model: str, prompt: str, max_tokens: int,
                  requests: int) -> dict[str, Any]:
    params = {"model": model, "max_tokens": max_tokens,
              "messages": [{"role": "user", "content": prompt}]}
    sdk = anthropic.AsyncAnthropic(base_url=emulator_url, api_key="bench-key", max_retries=0,
                                   http_client=anthropic.DefaultAioHttpClient())
    own = Upstream(emulator_url)
    await own.start()
    own_client = own.client("bench-key")
    session = aiohttp.ClientSession()
    body = json.dumps(params).encode()
    headers = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01",
               "Content-Type": "application/json"}

    async def bare() -> Any:
        async with session.post(emulator_url + "/v1/messages", data=body,
                                headers=headers) as response:
            return json.loads(await response.read())

    url = urllib.parse.urlsplit(emulator_url)
    transport, socket_ = await asyncio.get_running_loop().create_connection(
        _Socket, url.hostname, url.port)
    request = (f"POST /v1/messages HTTP/1.1\r\nHost: {url.netloc}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
               + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def floor() -> Any:
        return json.loads(await socket_.call(request))

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "sdk_aiohttp": lambda: sdk.messages.create(**params),
        "gateway_client": lambda: own_client.create(encode(params)),
        "bare_aiohttp": bare,
        "socket_floor": floor,
    }
    totals = {name: [0.0, 0.0] for name in calls}
    try:
        for call in calls.values():  # warm-up: pools, caches, lazy imports
            await _timed(call, 20)
        for _ in range(ROUNDS):
            for name, call in calls.items():
                cpu, wall = await _timed(call, requests)
                totals[name][0] += cpu / ROUNDS
                totals[name][1] += wall / ROUNDS
    finally:
        await sdk.close()
        await own.close()
        await session.close()
        transport.close()
    probe = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True,
        timeout=120, check=True)
    return {
        "requests_per_round": requests, "rounds": ROUNDS,
        **{name: {"cpu_ms_per_call": round(cpu, 3), "wall_ms_per_call": round(wall, 3)}
           for name, (cpu, wall) in totals.items()},
        "imports": json.loads(probe.stdout),
    }
