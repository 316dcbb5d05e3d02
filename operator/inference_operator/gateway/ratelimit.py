"""Token buckets with no burst and a FIFO queue, one per (api key, model, rpm) group.

Capacity is 1 token, refilled at rpm/60 per second; the bucket starts full. A request
that finds no token waits in its group's FIFO queue (capacity 2000 by default). A
waiter that times out leaves the queue and uses no token.

With N gateway replicas behind one Service (``--peers-service``), each enforces its share:
rpm/N, i.e. one token every ``60 * N / rpm`` seconds, so the cluster as a whole stays
within rpm when the load is spread evenly (a Service spreads connections, not requests;
see docs/gateway.md). When N changes, every bucket's interval changes at once. With peer
admission on (gateway/peering/), a group's one owner holds its whole rpm (less the shares
of peers it cannot hear from) and the others ask it; what each bucket divides its rpm by
is then the owners' business (``Limiter.divisor``).

A queued request is granted at the instant its token exists, and the next token is
counted from that instant, not from when the event loop got round to waking up: timer
lateness therefore does not slow the long-run rate below rpm (see docs/gateway.md)."""

from __future__ import annotations

import asyncio
import itertools
import math
import weakref
from collections import deque
from collections.abc import Callable

from inference_operator.clock import Clock, MonotonicClock
from inference_operator.gateway.peering import owners

DEFAULT_QUEUE_CAPACITY = 2000


class QueueFull(Exception):
    def __init__(self, group: str, retry_after: int) -> None:
        super().__init__(group)
        self.group = group
        self.retry_after = retry_after


class TurnTooLate(Exception):
    """The queue's turn for a request would come after its deadline, in ``wait`` s."""

    def __init__(self, group: str, wait: float) -> None:
        super().__init__(group)
        self.group = group
        self.retry_after = max(1, math.ceil(wait))


class Bucket:
    def __init__(self, name: str, requests_per_minute: int, capacity: int, clock: Clock,
                 replicas: float = 1, group_id: str = "") -> None:
        self.name = name
        self.group_id = group_id  # what peers call it (gateway/peering/owners.py)
        self.requests_per_minute = requests_per_minute
        self.interval = 60.0 * replicas / requests_per_minute
        self._capacity = capacity
        self._clock = clock
        self._next_token = -math.inf
        # (enqueued at, future); the future is resolved when the waiter gets its token.
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._dispatcher: asyncio.Task[None] | None = None

    def queued(self) -> int:
        return len(self._waiters)

    def reshare(self, replicas: float) -> None:
        """Enforce rpm/replicas from now on. The next token moves by the change of the
        interval only, so it is the last grant plus the new interval, as if this share had
        always applied: never a burst (still one token at most), never a grant sooner
        than the new share allows."""
        interval = 60.0 * replicas / self.requests_per_minute
        if interval == self.interval:
            return
        self._next_token += interval - self.interval  # -inf (never used) stays -inf
        self.interval = interval
        if self._dispatcher is not None:
            # It may be asleep until the old next token: start one that sleeps until the
            # new one. The old one is cancelled while asleep, never in between a grant.
            self._dispatcher.cancel()
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"bucket {self.name}")

    def start_empty(self) -> None:
        """No token before one interval from now: a group's new owner, whose old owner
        may have granted one a moment ago."""
        self._next_token = max(self._next_token, self._clock.now() + self.interval)

    def try_acquire(self) -> bool:
        """Take a token if one is there and nobody waits for it; never waits."""
        return self._take(self._clock.now())

    def _take(self, now: float) -> bool:
        if not self._waiters and now >= self._next_token:
            self._next_token = now + self.interval
            return True
        return False

    async def acquire(self, *, priority: bool = False, deadline: float | None = None) -> None:
        """Wait for a token. ``priority`` (for retries) goes to the head of the queue and
        is never refused: the request was already admitted once. Otherwise TurnTooLate at
        once when its turn would come after ``deadline`` (a waiter ahead that leaves only
        brings it sooner), rather than a wait that ends in a timeout."""
        now = self._clock.now()
        if self._take(now):
            return
        if not priority:
            if 0 < self._capacity <= len(self._waiters):
                raise QueueFull(self.name, max(1, math.ceil(self.interval)))
            turn = max(self._next_token, now) + len(self._waiters) * self.interval
            if deadline is not None and turn > deadline:
                raise TurnTooLate(self.name, turn - now)
        entry = (now, asyncio.get_running_loop().create_future())
        if priority:
            self._waiters.appendleft(entry)
        else:
            self._waiters.append(entry)
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"bucket {self.name}")
        try:
            await entry[1]
        finally:
            if entry in self._waiters:  # cancelled or timed out while waiting
                self._waiters.remove(entry)

    async def _dispatch(self) -> None:
        try:
            while self._waiters:
                now = self._clock.now()
                if now < self._next_token:
                    await self._clock.sleep(self._next_token - now)
                    continue
                enqueued_at, future = self._waiters.popleft()
                if future.done():
                    continue
                self._next_token = max(self._next_token, enqueued_at) + self.interval
                future.set_result(None)
        finally:
            if self._dispatcher is asyncio.current_task():  # not when replaced (reshare)
                self._dispatcher = None


class Limiter:
    """Hands out the shared bucket of a group. Buckets are held by the endpoints that
    use them (and by requests in flight) and vanish with the last one."""

    def __init__(self, clock: Clock | None = None,
                 queue_capacity: int = DEFAULT_QUEUE_CAPACITY) -> None:
        self.clock = clock or MonotonicClock()
        self.queue_capacity = queue_capacity
        self._buckets: weakref.WeakValueDictionary[tuple[str, str, int], Bucket] = (
            weakref.WeakValueDictionary()
        )
        self._groups: weakref.WeakValueDictionary[str, Bucket] = weakref.WeakValueDictionary()
        self._ordinal = itertools.count(1)
        # How many gateways share each group's rpm (set from --peers-service).
        self.replicas = 1
        # What a group's bucket divides its rpm by: the replicas, unless peer admission
        # (gateway/peering/routing.py) says otherwise group by group.
        self.divisor: Callable[[str], float] = lambda group_id: self.replicas

    def set_replicas(self, replicas: int) -> None:
        replicas = max(1, replicas)
        if replicas == self.replicas:
            return
        self.replicas = replicas
        self.reshare()

    def reshare(self) -> None:
        """Every bucket to its divisor, after a change of what ``divisor`` answers."""
        for bucket in self.buckets():
            bucket.reshare(self.divisor(bucket.group_id))

    def buckets(self) -> list[Bucket]:
        return list(self._buckets.values())

    def by_group(self, group_id: str) -> Bucket | None:
        return self._groups.get(group_id)

    def bucket(self, api_key: str, model_id: str, requests_per_minute: int) -> Bucket:
        group = (api_key, model_id, requests_per_minute)
        bucket = self._buckets.get(group)
        if bucket is None:
            # The name is shown in errors and logs, so it must not derive from the key.
            name = f"{model_id}/{requests_per_minute}rpm#{next(self._ordinal)}"
            group_id = owners.group_id(api_key, model_id, requests_per_minute)
            bucket = Bucket(name, requests_per_minute, self.queue_capacity, self.clock,
                            self.divisor(group_id), group_id)
            self._buckets[group] = self._groups[group_id] = bucket
        return bucket
