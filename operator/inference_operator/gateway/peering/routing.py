"""Where each admission of a rate-limit group is decided, and what each local bucket
allows (fleet-limits design (a), docs/gateway.md "Peer admission").

- This replica owns the group: its own bucket, at the group's whole rpm less rpm/N for
  each ready peer that has no link to it (such a peer admits on its own share), started
  empty when ownership arrives (the old owner may have just granted a token).
- A peer owns it and the link to it is up: the owner is asked (links.py).
- Otherwise (the owner is unreachable, or of another version, or unknown yet): the local
  bucket at rpm/N, as with peer admission off, and counted in a metric.

With peer admission off there is no member: every group is local, at rpm/N."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.peering import owners
from inference_operator.gateway.peering.links import Links, Moved, Unanswered
from inference_operator.gateway.ratelimit import Bucket, Limiter

log = logging.getLogger(__name__)
# How often an admission follows "moved" to a newer owner before it takes the local share.
MAX_HOPS = 3


class RateRouting:
    def __init__(self, limiter: Limiter, metrics: GatewayMetrics) -> None:
        self._limiter = limiter
        self._metrics = metrics
        self.member: str | None = None  # this replica's name among peers; None: off
        self._links: Links | None = None
        self._members: frozenset[str] = frozenset()
        self._inbound: Counter[str] = Counter()  # peer -> its live links to this replica
        self._listeners: list[Callable[[], None]] = []

    def enable(self, member: str, links: Links) -> None:
        self.member, self._links = member, links
        self._limiter.divisor = self.divisor

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener`` is called after owners may have changed."""
        self._listeners.append(listener)

    # Membership, from the peers' EndpointSlices and the links that peers opened to us.

    def set_members(self, members: set[str]) -> None:
        if self.member is None or frozenset(members) == self._members:
            return
        previous, self._members = self._members, frozenset(members)
        assert self._links is not None
        self._links.update(self._members - {self.member})
        self._refresh(previous)

    def inbound_opened(self, peer: str) -> None:
        self._inbound[peer] += 1
        self._refresh()

    def inbound_closed(self, peer: str) -> None:
        self._inbound[peer] -= 1
        if self._inbound[peer] <= 0:
            del self._inbound[peer]
        self._refresh()

    def owner_of(self, group: str) -> str | None:
        return owners.owner(group, self._members) if self.member is not None else None

    def owns(self, group: str) -> bool:
        return self.member is not None and self.owner_of(group) == self.member

    def divisor(self, group: str) -> float:
        """What the group's local bucket divides its rpm by."""
        if not self.owns(group):
            return self._limiter.replicas
        members = len(self._members)
        unheard = sum(1 for m in self._members if m != self.member and not self._inbound[m])
        return members / (members - unheard)

    def _refresh(self, previous: frozenset[str] | None = None) -> None:
        """Every bucket to its divisor; with ``previous`` members, the groups whose owner
        changed counted, and those now owned here started empty."""
        for bucket in self._limiter.buckets():
            owned = self.owns(bucket.group_id)
            bucket.reshare(self.divisor(bucket.group_id))
            if previous is not None and owned != (
                    owners.owner(bucket.group_id, previous) == self.member):
                self._metrics.owner_changes.inc()
                if owned:
                    bucket.start_empty()
        for listener in self._listeners:
            listener()

    # Admission.

    def try_acquire(self, bucket: Bucket) -> bool:
        """A token at once from the local bucket, where the local bucket decides."""
        route = self._route(bucket)
        if route == "peer":
            return False
        if bucket.try_acquire():
            self._count(route)
            return True
        return False

    async def acquire(self, bucket: Bucket, *, priority: bool, deadline: float | None) -> None:
        """A token: from the owner when a peer owns the group and can be asked, else from
        the local bucket. QueueFull or TurnTooLate as the deciding bucket says."""
        for _ in range(MAX_HOPS):
            route = self._route(bucket)
            if route != "peer":
                await bucket.acquire(priority=priority, deadline=deadline)
                self._count(route)
                return
            assert self._links is not None
            link = self._links.live(self.owner_of(bucket.group_id) or "")
            if link is None:
                break
            try:
                await link.acquire(bucket, priority=priority, deadline=deadline)
            except Moved:
                continue
            except Unanswered:
                break
            self._count("peer")
            return
        await bucket.acquire(priority=priority, deadline=deadline)
        self._count("fallback")

    def _route(self, bucket: Bucket) -> str | None:
        if self.member is None:
            return None
        owner = self.owner_of(bucket.group_id)
        if owner is None:
            return "fallback"
        if owner == self.member:
            return "owner"
        assert self._links is not None
        return "peer" if self._links.live(owner) is not None else "fallback"

    def _count(self, route: str | None) -> None:
        if route is not None:
            self._metrics.peer_admissions.labels(route).inc()
