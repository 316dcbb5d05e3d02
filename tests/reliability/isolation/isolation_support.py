"""A hostile tenant's view of one gateway: the emulator and the gateway as real
processes (the gateway's CPU time and RSS are what is measured), endpoints put on its
admin listener, and a watcher that asks ``/healthz`` throughout a request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.gateway_support import ADMIN_TOKEN, PROCESS_FLAGS, seed_body
from inference_devkit.devstack.processes import Service, Stack

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Isolated:
    stack: Stack
    gateway: Service

    def put(self, inference_id: str, task_type: str, *, requests_per_minute: int | None = None,
            api_key: str | None = None) -> None:
        body = seed_body(requests_per_minute)
        if api_key is not None:  # another tenant: its own key, so its own rate-limit group
            body["service_settings"]["api_key"] = api_key
        request = urllib.request.Request(
            f"{self.stack.admin_url}/_inference/{task_type}/{inference_id}", method="PUT",
            data=json.dumps(body).encode(),
            headers={**ADMIN, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@contextlib.contextmanager
def isolated(work_dir: Path, *gateway_flags: str) -> Iterator[Isolated]:
    """The emulator (any key accepted) and a standalone gateway, both processes."""
    stack = Stack(work_dir, api_keys=(), admin_token=ADMIN_TOKEN)
    try:
        stack.start(stack.emulator())
        gateway = stack.start(stack.gateway(*PROCESS_FLAGS, "--no-access-log", *gateway_flags))
        yield Isolated(stack, gateway)
    finally:
        stack.stop()


@dataclass
class HealthWatch:
    """``GET /healthz`` every ``interval`` while a request runs: the answers' latencies,
    and the probes not answered within ``timeout`` (the chart's liveness probe allows 5 s)."""

    url: str
    interval: float = 0.05
    timeout: float = 2.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def probe(self, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        try:
            async with session.get(self.url + "/healthz",
                                   timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                await r.read()
                if r.status != 200:
                    self.failures.append(f"status {r.status}")
        except (TimeoutError, aiohttp.ClientError) as error:
            self.failures.append(type(error).__name__)
        self.latencies.append(time.monotonic() - started)

    async def _run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.probe(session)
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def during(self) -> AsyncIterator[HealthWatch]:
        """Probes from the start of the block to its end, and one after it."""
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(self._run(session))
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await self.probe(session)


async def post(session: aiohttp.ClientSession, url: str, body: bytes,
               **kwargs: Any) -> tuple[int, Any, bytes]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                            **kwargs) as response:
        return response.status, response.headers, await response.read()
