"""A bounded cache of decisions, each kept for its own lifetime, whose concurrent misses of
one key share a single lookup (single-flight).

What it bounds: memory (least recently used entries go first past ``max_size``; a flood
of made-up tokens evicts, it cannot grow the cache) and the API server's load (under any
number of concurrent requests with one token, one review is in flight for it, and a
decision is asked again only once its lifetime is over). Failures are not kept: the
next request asks again (its waiters, meanwhile, share the failure)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
# A lookup: the decision and for how many seconds it may be reused (0 or less: not kept).
Lookup = Callable[[], Awaitable[tuple[V, float]]]


class DecisionCache(Generic[K, V]):
    def __init__(self, max_size: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError("a decision cache holds at least one entry")
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._flights: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, key: K) -> tuple[bool, V | None]:
        """(True, decision) while one is kept for ``key``, else (False, None); asks
        nobody."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, entry[1]

    async def get(self, key: K, lookup: Lookup[V]) -> V:
        """The kept decision for ``key``, else ``lookup()``'s, shared with every request
        that asks for ``key`` while it runs."""
        found, value = self.cached(key)
        if found:
            return value  # type: ignore[return-value]  # V may itself admit None
        flight = self._flights.get(key)
        if flight is None:
            # A task of its own, shielded: a client that goes away (its handler is
            # cancelled) must not cancel the lookup the others wait for. (shield also
            # reads a failure nobody waits for any more, so none is reported unread.)
            flight = self._flights[key] = asyncio.ensure_future(self._fill(key, lookup))
        return await asyncio.shield(flight)

    async def _fill(self, key: K, lookup: Lookup[V]) -> V:
        try:
            value, seconds = await lookup()
        finally:
            del self._flights[key]
        if seconds > 0:
            self._entries[key] = (self._clock() + seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        return value

