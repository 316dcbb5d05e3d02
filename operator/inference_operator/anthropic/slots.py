"""Upstream connections in use, per API key and in all: a call takes one of each before
it sends, and gives them back when its answer is read or its stream closed.

The per-key cap keeps one key (one tenant) from taking the whole pool with calls that do
not end, such as streams to clients that stopped reading; the wait for a free one is
bounded, so a caller beyond it learns at once (NoConnection) instead of queueing
behind calls that may take minutes. Keys are grouped by a digest, never kept or shown."""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Callable

Release = Callable[[], None]


class NoSlot(Exception):
    """No connection came free within the wait; the message says which limit is full."""


class KeySlots:
    """The connections one API key may use: shared by every client of that key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = asyncio.Semaphore(limit)


class Slots:
    def __init__(self, total: int, per_key: int, wait: float) -> None:
        if per_key < 1:
            raise ValueError("the upstream connections per key must be at least 1")
        if wait < 0:
            raise ValueError("the upstream connection wait must not be negative")
        self.total = total
        self.per_key = min(per_key, total)
        self.wait = wait
        self._all = asyncio.Semaphore(total)
        # Held by the clients of a key (and by calls in flight): gone with the last one.
        self._keys: weakref.WeakValueDictionary[bytes, KeySlots] = (
            weakref.WeakValueDictionary())

    def for_key(self, api_key: str) -> KeySlots:
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).digest()
        slots = self._keys.get(digest)
        if slots is None:
            slots = self._keys[digest] = KeySlots(self.per_key)
        return slots

    async def take(self, key: KeySlots) -> Release:
        """One connection of ``key`` and one of the pool, waiting at most ``wait`` for
        both; NoSlot when they did not come free. The release gives both back."""
        if key.free.locked() or self._all.locked():
            limit = asyncio.timeout(self.wait)
            try:
                async with limit:
                    await self._take_both(key)
            except TimeoutError:
                if not limit.expired():  # an outer timeout's (the request's own)
                    raise
                raise NoSlot(self._full(key)) from None
        else:  # the common case: both free, no timer
            await self._take_both(key)

        def release() -> None:
            key.free.release()
            self._all.release()

        return release

    async def _take_both(self, key: KeySlots) -> None:
        await key.free.acquire()
        try:
            await self._all.acquire()
        except BaseException:
            key.free.release()
            raise

    def _full(self, key: KeySlots) -> str:
        if key.free.locked():
            return f"the {key.limit} upstream connections allowed per API key are in use"
        return f"all {self.total} upstream connections of the gateway are in use"
