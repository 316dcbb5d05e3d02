"""The controller's time, passed in wherever it decides timing (a retry's backoff, how
long a verified key holds, how long to wait for the gateways or for kopf's index, when to
resync), so that tests can step through those decisions instead of sleeping through them."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real one: asyncio's own clock is ``time.monotonic`` as well."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()

