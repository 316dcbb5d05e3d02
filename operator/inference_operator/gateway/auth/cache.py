"""A bounded cache of decisions, each kept for its own lifetime, whose concurrent misses of
one key share a single lookup (single-flight).

What it bounds: memory (least recently used entries go first past the sizes; a flood of
made-up tokens evicts, it cannot grow the cache) and the API server's load (under any
number of concurrent requests with one token, one review is in flight for it, and a
decision is asked again only once its lifetime is over). Positive and negative decisions
are kept apart, each with its own size: refusals (what a flood of junk makes) only ever
evict other refusals, never a caller who was let in. Failures are not kept: the next
request asks again (its waiters, meanwhile, share the failure)."""

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
    def __init__(self, max_size: int, negative_size: int, *,
                 positive: Callable[[V], bool] = bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``max_size`` positive decisions (those ``positive`` says are) and
        ``negative_size`` negative ones."""
        if max_size < 1 or negative_size < 1:
            raise ValueError("a decision cache holds at least one entry of each kind")
        self.max_size, self.negative_size = max_size, negative_size
        self._positive = positive
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._negatives: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._flights: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._entries) + len(self._negatives)

    def cached(self, key: K) -> tuple[bool, V | None]:
        """(True, decision) while one is kept for ``key``, else (False, None); asks
        nobody."""
        for entries in (self._entries, self._negatives):
            entry = entries.get(key)
            if entry is None:
                continue
            if self._clock() >= entry[0]:
                del entries[key]
                return False, None
            entries.move_to_end(key)
            return True, entry[1]
        return False, None

    def put(self, key: K, value: V, seconds: float) -> None:
        """Keeps ``value`` for ``key`` ``seconds`` (0 or less: forgets ``key``)."""
        self._entries.pop(key, None)
        self._negatives.pop(key, None)
        if seconds <= 0:
            return
        positive = self._positive(value)
        entries, size = ((self._entries, self.max_size) if positive
                         else (self._negatives, self.negative_size))
        entries[key] = (self._clock() + seconds, value)
        while len(entries) > size:
            entries.popitem(last=False)

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
        self.put(key, value, seconds)
        return value
