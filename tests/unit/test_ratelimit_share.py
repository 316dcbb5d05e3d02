"""The cluster-wide rate limit: with N replicas each bucket enforces rpm/N, and a change
of N applies to every bucket at once without a burst. Virtual time: instant and exact."""

from __future__ import annotations

import asyncio

import pytest

from inference_operator.gateway.ratelimit import Bucket, Limiter, TurnTooLate


class ManualClock:
    """Virtual time that moves only when told (``advance``), waking sleepers in order of
    their deadlines, so a test can act while a bucket's dispatcher is asleep."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        entry = (self.t + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    async def advance(self, seconds: float) -> None:
        target = self.t + seconds
        while True:
            await _settle()
            due = [s for s in self._sleepers if s[0] <= target and not s[1].done()]
            if not due:
                break
            deadline, future = min(due, key=lambda s: s[0])
            self.t = max(self.t, deadline)
            future.set_result(None)
        self.t = target
        await _settle()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _queue(bucket: Bucket, clock: ManualClock,
           count: int) -> tuple[list[float], list[asyncio.Task[None]]]:
    """``count`` requests queued at once; the times (since 1000) they are granted."""
    granted: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        granted.append(clock.now() - 1000)

    return granted, [asyncio.create_task(take()) for _ in range(count)]


async def test_each_replica_enforces_its_share() -> None:
    clock = ManualClock()
    limiter = Limiter(clock)
    limiter.set_replicas(3)
    bucket = limiter.bucket("k", "m", 60)  # 60 rpm across 3 replicas: 20 rpm each
    granted, _ = _queue(bucket, clock, 4)
    await clock.advance(100)

    assert bucket.interval == 3.0
    assert granted == [0, 3, 6, 9]


@pytest.mark.parametrize(("before", "after", "expected"), [
    # A larger share: the next token moves from 1 to 3 (last grant + 3), not 3.5.
    (1, 3, [0, 3, 6, 9]),
    # A smaller one wakes the dispatcher asleep until 3: the next token is now at 1.
    (3, 1, [0, 1, 2, 3]),
], ids=["larger", "smaller"])
async def test_a_new_share_applies_to_a_waiting_bucket_from_its_last_grant(
    before: int, after: int, expected: list[float]
) -> None:
    clock = ManualClock()
    limiter = Limiter(clock)
    limiter.set_replicas(before)
    bucket = limiter.bucket("k", "m", 60)  # one token a second on one replica
    granted, _ = _queue(bucket, clock, 4)
    await clock.advance(0.5)
    assert granted == [0]

    limiter.set_replicas(after)
    await clock.advance(100)

    assert granted == expected


async def test_a_new_share_never_makes_a_burst() -> None:
    clock = ManualClock()
    limiter = Limiter(clock)
    limiter.set_replicas(2)
    bucket = limiter.bucket("k", "m", 60)
    await bucket.acquire()  # at 0; then idle: the bucket is full again (one token)
    await clock.advance(10)

    limiter.set_replicas(1)
    granted, _ = _queue(bucket, clock, 3)
    await clock.advance(100)

    assert granted == [10, 11, 12]  # capacity is still one token: no catching up


async def test_replicas_count_at_least_one_and_reach_new_buckets() -> None:
    limiter = Limiter(ManualClock())
    old = limiter.bucket("k", "m", 120)
    limiter.set_replicas(0)  # no ready endpoint (this one not ready yet): alone
    assert limiter.replicas == 1 and old.interval == 0.5

    limiter.set_replicas(4)
    assert (old.interval, limiter.bucket("k2", "m", 120).interval) == (2.0, 2.0)
    assert limiter.bucket("k", "m", 120) is old


@pytest.mark.parametrize(("replicas", "spacing"), [(1, 0.1), (2, 0.2), (5, 0.5)])
async def test_spacing_over_many_grants_is_exact(replicas: int, spacing: float) -> None:
    clock = ManualClock()
    limiter = Limiter(clock)
    limiter.set_replicas(replicas)
    granted, _ = _queue(limiter.bucket("k", "m", 600), clock, 20)
    await clock.advance(100)

    assert granted == pytest.approx([n * spacing for n in range(20)])


@pytest.mark.parametrize(("queued", "seconds", "refused_for"), [
    # One token a second, the next at 1: the 4th waiter's turn is at 4.
    (3, 4.0, None),
    (3, 3.9, 4),
    (0, 0.5, 1),
    (0, 1.0, None),
])
async def test_a_request_whose_turn_comes_after_its_deadline_is_refused_at_once(
        queued: int, seconds: float, refused_for: int | None) -> None:
    clock = ManualClock()
    bucket = Limiter(clock).bucket("k", "m", 60)
    await bucket.acquire()  # at 0
    _, waiters = _queue(bucket, clock, queued)
    await clock.advance(0)
    late = asyncio.create_task(bucket.acquire(deadline=clock.now() + seconds))
    await clock.advance(0)
    if refused_for is None:
        assert not late.done()
        await clock.advance(seconds)
        assert late.done() and late.exception() is None
    else:
        with pytest.raises(TurnTooLate) as refused:
            await late
        assert refused.value.retry_after == refused_for
        assert bucket.queued() == queued
    for waiter in waiters:
        waiter.cancel()


async def test_a_retry_is_never_refused_for_its_deadline() -> None:
    clock = ManualClock()
    bucket = Limiter(clock).bucket("k", "m", 60)
    await bucket.acquire()
    retry = asyncio.create_task(bucket.acquire(priority=True, deadline=clock.now() + 0.1))
    await clock.advance(1)
    assert retry.done() and retry.exception() is None
