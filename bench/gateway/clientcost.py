"""What one upstream call costs the caller: the anthropic SDK (aiohttp transport, as the
gateway used it) against the gateway's own client and a bare aiohttp request, all in this
process against the emulator, one call at a time, rounds alternated."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anthropic

from inference_operator.anthropic.client import Upstream, encode

ROUNDS = 3


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

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "sdk_aiohttp": lambda: sdk.messages.create(**params),
        "gateway_client": lambda: own_client.create(encode(params)),
        "bare_aiohttp": bare,
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
    return {
        "requests_per_round": requests, "rounds": ROUNDS,
        **{name: {"cpu_ms_per_call": round(cpu, 3), "wall_ms_per_call": round(wall, 3)}
           for name, (cpu, wall) in totals.items()},
    }
