"""Time, passed in wherever the code decides timing (the controller's retry backoff, how
long a verified key holds, its waits and periods; the gateway's rate limit), so that
tests can step through those decisions instead of sleeping through them. Neither the
controller nor the gateway owns it: both import it."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds from an arbitrary start: only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real one; asyncio's own clock is ``time.monotonic`` as well."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = MonotonicClock()
