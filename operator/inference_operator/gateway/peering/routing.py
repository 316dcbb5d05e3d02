"""Where each admission of a rate-limit group is decided, and what each local bucket and
organisation budget allows (fleet-limits design (a), docs/gateway.md "Peer admission").
A group is an endpoint's request-rate bucket or an organisation budget (an API key and
model class): both are routed alike.

- This replica owns the group: its own bucket (budget), at the group's whole rpm (limits)
  less 1/N for each ready peer that has no link to it (such a peer admits on its own
  share); a bucket started empty when ownership arrives (the old owner may have just
  granted a token), a budget at the level its share had (it refills to the whole).
- A peer owns it and the link to it is up: the owner is asked (links.py).
- Otherwise (the owner is unreachable, or of another version, or unknown yet): the local
  bucket at rpm/N, as with peer admission off, and counted in a metric.

With peer admission off there is no member: every group is local, at rpm/N."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import Cost, OrgBudget, OrgBudgets, Reservation
from inference_operator.gateway.peering import owners
from inference_operator.gateway.peering.links import Link, Links, Moved, Unanswered
from inference_operator.gateway.ratelimit import Bucket, Limiter
from inference_operator.labelled_metrics import Labelled

log = logging.getLogger(__name__)
T = TypeVar("T")
# How often an admission follows "moved" to a newer owner before it takes the local share.
MAX_HOPS = 3


class RateRouting:
    def __init__(self, limiter: Limiter, budgets: OrgBudgets, metrics: GatewayMetrics) -> None:
        self._limiter = limiter
        self._budgets = budgets
        self._metrics = metrics
        self.member: str | None = None  # this replica's name among peers; None: off
        self._links: Links | None = None
        self._members: frozenset[str] = frozenset()
        self._inbound: Counter[str] = Counter()  # peer -> its live links to this replica
        self._listeners: list[Callable[[], None]] = []

    def enable(self, member: str, links: Links) -> None:
        self.member, self._links = member, links
        self._limiter.divisor = self._budgets.divisor = self.divisor

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
        self._budgets.reshare()
        for listener in self._listeners:
            listener()

    # Admission.

    def try_acquire(self, bucket: Bucket) -> bool:
        """A token at once from the local bucket, where the local bucket decides."""
        route = self._route(bucket.group_id)
        if route == "peer" or not bucket.try_acquire():
            return False
        self._count(self._metrics.peer_admissions, route)
        return True

    async def acquire(self, bucket: Bucket, *, priority: bool, deadline: float | None) -> None:
        """A token: from the owner when a peer owns the group and can be asked, else from
        the local bucket. QueueFull or TurnTooLate as the deciding bucket says."""
        await self._decided(
            bucket.group_id, self._metrics.peer_admissions,
            lambda: bucket.acquire(priority=priority, deadline=deadline),
            lambda link: link.acquire(bucket, priority=priority, deadline=deadline))

    def try_reserve(self, budget: OrgBudget, cost: Cost, body_bytes: int
                    ) -> Reservation | None:
        """A reservation at once from the local budget, where the local budget decides."""
        route = self._route(budget.group_id)
        ticket = None if route == "peer" else budget.try_reserve(cost, body_bytes)
        if ticket is not None:
            self._count(self._metrics.peer_reservations, route)
        return ticket

    async def reserve(self, budget: OrgBudget, cost: Cost, body_bytes: int, *,
                      priority: bool) -> Reservation:
        """A reservation: of the owner's budget when a peer owns it and can be asked,
        else of the local one. QueueFull or TooLarge as the deciding budget says."""
        return await self._decided(
            budget.group_id, self._metrics.peer_reservations,
            lambda: budget.reserve(cost, body_bytes, priority=priority),
            lambda link: link.reserve(budget, cost, body_bytes, priority=priority))

    async def _decided(self, group: str, routes: Labelled,
                       local: Callable[[], Awaitable[T]],
                       remote: Callable[[Link], Awaitable[T]]) -> T:
        """What the group's owner decides when it is a peer that can be asked (following
        it when it moved), else what the local bucket or budget does; counted in
        ``routes`` by how it was decided."""
        for _ in range(MAX_HOPS):
            route = self._route(group)
            if route != "peer":
                result = await local()
                self._count(routes, route)
                return result
            assert self._links is not None
            link = self._links.live(self.owner_of(group) or "")
            if link is None:
                break
            try:
                result = await remote(link)
            except Moved:
                continue
            except Unanswered:
                break
            self._count(routes, "peer")
            return result
        result = await local()
        self._count(routes, "fallback")
        return result

    def _route(self, group: str) -> str | None:
        if self.member is None:
            return None
        owner = self.owner_of(group)
        if owner is None:
            return "fallback"
        if owner == self.member:
            return "owner"
        assert self._links is not None
        return "peer" if self._links.live(owner) is not None else "fallback"

    @staticmethod
    def _count(routes: Labelled, route: str | None) -> None:
        if route is not None:
            routes.labels(route).inc()
