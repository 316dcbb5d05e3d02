"""The decision cache (gateway/auth/cache.py): bounded, each decision kept for its own
lifetime, failures never kept, and one lookup per key however many ask at once. On a
fake clock; no server."""

from __future__ import annotations

import asyncio

import pytest

from inference_operator.gateway.auth.cache import DecisionCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lookups:
    """Counts the lookups; each answers ``value`` to be kept ``seconds``."""

    def __init__(self, value: object = True, seconds: float = 10.0) -> None:
        self.value, self.seconds, self.calls = value, seconds, 0
        self.gate: asyncio.Event | None = None
        self.failure: Exception | None = None

    async def __call__(self) -> tuple[object, float]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return self.value, self.seconds


async def test_a_decision_is_kept_for_its_lifetime_then_asked_again() -> None:
    clock, lookup = Clock(), Lookups(value=False)  # negative decisions are kept too
    cache: DecisionCache[str, object] = DecisionCache(10, 10, clock=clock)
    assert await cache.get("k", lookup) is False
    clock.now += 9.9
    assert await cache.get("k", lookup) is False
    assert lookup.calls == 1
    clock.now += 0.1
    assert await cache.get("k", lookup) is False
    assert lookup.calls == 2


async def test_a_lifetime_of_zero_or_less_is_not_kept() -> None:
    cache: DecisionCache[str, object] = DecisionCache(10, 10, clock=Clock())
    for seconds in (0.0, -5.0):
        lookup = Lookups(seconds=seconds)
        await cache.get("k", lookup)
        await cache.get("k", lookup)
        assert lookup.calls == 2
    assert len(cache) == 0


async def test_the_least_recently_used_go_first_past_the_bound() -> None:
    cache: DecisionCache[int, object] = DecisionCache(3, 3, clock=Clock())
    lookup = Lookups()
    for key in (1, 2, 3):
        await cache.get(key, lookup)
    await cache.get(1, lookup)  # used again: now the most recent
    await cache.get(4, lookup)  # evicts 2
    assert len(cache) == 3
    assert cache.cached(1) == (True, True) and cache.cached(2) == (False, None)
    for _ in range(1000):  # a flood of new keys never grows it
        await cache.get(object(), lookup)  # type: ignore[arg-type]
    assert len(cache) == 3


async def test_refusals_have_their_own_smaller_room_and_never_evict_a_caller_let_in() -> None:
    clock = Clock()
    cache: DecisionCache[object, object] = DecisionCache(3, 2, clock=clock)
    allowed, refused = Lookups(value="user"), Lookups(value=None)
    for key in ("a", "b", "c"):
        await cache.get(key, allowed)
    for _ in range(1000):  # a flood of junk, each refused
        await cache.get(object(), refused)
    assert len(cache) == 3 + 2
    assert [cache.cached(k) for k in ("a", "b", "c")] == [(True, "user")] * 3
    assert allowed.calls == 3
    # A key that changes sides is kept on its new side only.
    cache.put("a", None, 10)
    assert cache.cached("a") == (True, None) and len(cache) == 2 + 2
    cache.put("a", "user", 10)
    assert cache.cached("a") == (True, "user")
    cache.put("a", "user", 0)  # a lifetime of nothing: forgotten
    assert cache.cached("a") == (False, None)
    with pytest.raises(ValueError):
        DecisionCache(1, 0)


async def test_concurrent_misses_share_one_lookup() -> None:
    cache: DecisionCache[str, object] = DecisionCache(10, 10, clock=Clock())
    lookup = Lookups(value="user")
    lookup.gate = asyncio.Event()
    waiters = [asyncio.ensure_future(cache.get("k", lookup)) for _ in range(200)]
    await asyncio.sleep(0)
    lookup.gate.set()
    assert await asyncio.gather(*waiters) == ["user"] * 200
    assert lookup.calls == 1


async def test_a_failure_is_shared_by_its_waiters_and_never_kept() -> None:
    cache: DecisionCache[str, object] = DecisionCache(10, 10, clock=Clock())
    lookup = Lookups()
    lookup.gate, lookup.failure = asyncio.Event(), ConnectionError("API server down")
    waiters = [asyncio.ensure_future(cache.get("k", lookup)) for _ in range(5)]
    await asyncio.sleep(0)
    lookup.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and lookup.calls == 1
    lookup.failure = None
    assert await cache.get("k", lookup) is True  # asked again at once
    assert lookup.calls == 2


async def test_a_waiter_that_goes_away_does_not_cancel_the_others_lookup() -> None:
    cache: DecisionCache[str, object] = DecisionCache(10, 10, clock=Clock())
    lookup = Lookups(value="user")
    lookup.gate = asyncio.Event()
    first = asyncio.ensure_future(cache.get("k", lookup))
    second = asyncio.ensure_future(cache.get("k", lookup))
    await asyncio.sleep(0)
    first.cancel()  # its client disconnected
    await asyncio.sleep(0)
    lookup.gate.set()
    assert await second == "user"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert lookup.calls == 1 and cache.cached("k") == (True, "user")


async def test_a_failure_nobody_waits_for_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    cache: DecisionCache[str, object] = DecisionCache(10, 10, clock=Clock())
    lookup = Lookups()
    lookup.gate, lookup.failure = asyncio.Event(), RuntimeError("down")
    waiter = asyncio.ensure_future(cache.get("k", lookup))
    await asyncio.sleep(0)
    waiter.cancel()
    lookup.gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    import gc

    gc.collect()
    assert reported == []
