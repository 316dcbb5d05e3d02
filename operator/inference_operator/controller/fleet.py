"""What the gateways serve: the ready replicas, and per replica the configuration
generation of each shard it has loaded (its ``/healthz``). The status says Ready only
when every ready replica serves the endpoint's current configuration."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from inference_operator.clock import SYSTEM_CLOCK, Clock
from inference_operator.controller.publisher import Placement

log = logging.getLogger(__name__)
# A replica that stops answering keeps its last report for this many polls, so one slow
# answer does not flip the status of every endpoint.
MISSES_ALLOWED = 3
POLL_TIMEOUT = 2.0
# After a write, how soon and how long a reconcile asks the replicas whether they serve
# it, so a change becomes Ready in one status patch instead of a pending one first.
QUICK_POLL_DELAY = 0.05

Addresses = Callable[[], Awaitable[list[str]]]


@dataclass(frozen=True)
class Coverage:
    serving: int
    replicas: int

    @property
    def complete(self) -> bool:
        return self.replicas > 0 and self.serving == self.replicas

    def describe(self) -> str:
        return f"{self.serving}/{self.replicas} gateway replica{'s' * (self.replicas != 1)}"


def static_addresses(urls: tuple[str, ...]) -> Addresses:
    """Gateways at fixed addresses: a gateway next to the operator outside a cluster."""
    async def addresses() -> list[str]:
        return [url.rstrip("/") for url in urls]
    return addresses


class Fleet:
    def __init__(self, addresses: Addresses, clock: Clock = SYSTEM_CLOCK) -> None:
        self._addresses = addresses
        self._clock = clock
        self._loaded: dict[str, Mapping[str, int]] = {}  # replica -> shard -> generation
        self._misses: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._polling = asyncio.Lock()
        self._polls_started = 0
        self._newest_finished = 0  # the start number of the newest poll that finished
        # Called after every poll that found a change, whoever asked for the poll.
        self.on_change: Callable[[], None] = lambda: None

    def coverage(self, placement: Placement) -> Coverage:
        serving = sum(1 for loaded in self._loaded.values()
                      if loaded.get(placement.shard, -1) >= placement.generation)
        return Coverage(serving, len(self._loaded))

    async def wait_for_replica(self, within: float, interval: float = 0.5) -> bool:
        """Poll until some replica is ready, at most ``within`` seconds; whether one is."""
        deadline = self._clock.now() + within
        while True:
            await self.refresh()
            if self._loaded or self._clock.now() >= deadline:
                return bool(self._loaded)
            await self._clock.sleep(interval)

    async def wait_for(self, placement: Placement, within: float) -> Coverage:
        """The coverage once every ready replica serves ``placement``, or after ``within`` s."""
        deadline = self._clock.now() + within
        while True:
            coverage = self.coverage(placement)
            if (coverage.complete or coverage.replicas == 0
                    or self._clock.now() >= deadline):
                return coverage
            await self._poll_after_now()

    async def _poll_after_now(self) -> None:
        """One poll that starts after this call; callers that wait meanwhile share it."""
        asked_at = self._polls_started
        async with self._polling:
            if self._newest_finished > asked_at:
                return
            await self._clock.sleep(QUICK_POLL_DELAY)
            await self.refresh()

    async def refresh(self) -> bool:
        """Poll every ready replica once; True when what they serve changed."""
        self._polls_started += 1
        number = self._polls_started
        try:
            return self._update(await self._poll())
        except Exception as error:  # the API server away: keep what we knew
            log.warning("gateway replicas not listed: %s", error)
            return False
        finally:
            self._newest_finished = max(self._newest_finished, number)

    async def _poll(self) -> dict[str, Mapping[str, int]]:
        addresses = await self._addresses()
        reports = await asyncio.gather(*map(self._report, addresses))
        loaded: dict[str, Mapping[str, int]] = {}
        for address, report in zip(addresses, reports, strict=True):
            if report is not None:
                self._misses.pop(address, None)
                loaded[address] = report
            elif address in self._loaded and self._misses.get(address, 0) < MISSES_ALLOWED:
                self._misses[address] = self._misses.get(address, 0) + 1
                loaded[address] = self._loaded[address]
        for gone in set(self._misses) - set(loaded):
            del self._misses[gone]
        return loaded

    def _update(self, loaded: dict[str, Mapping[str, int]]) -> bool:
        if loaded == self._loaded:
            return False
        if set(loaded) != set(self._loaded):
            log.info("gateway replicas serving: %s", sorted(loaded) or "none")
        self._loaded = loaded
        self.on_change()
        return True

    async def _report(self, address: str) -> Mapping[str, int] | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT))
        try:
            async with self._session.get(f"{address}/healthz") as response:
                health: Any = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.debug("gateway %s did not report: %s", address, error)
            return None
        config = health.get("config") if isinstance(health, dict) else None
        if not isinstance(config, dict):
            return None
        return {str(k): v for k, v in config.items() if isinstance(v, int)}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
