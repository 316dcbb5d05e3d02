"""Peer admission's decisions, on virtual time: who owns a group (rendezvous hashing),
what each replica's bucket or organisation budget for it allows (the owner the whole rpm
or limit less the shares of peers it cannot hear from; the others 1/N), and a new owner's
empty start."""

from __future__ import annotations

from collections import Counter

import pytest
from controller_fakes import FakeClock

from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import OrgBudgets
from inference_operator.gateway.peering import owners
from inference_operator.gateway.peering.routing import RateRouting
from inference_operator.gateway.ratelimit import Limiter

PEERS = [owners.member(f"10.0.0.{n}", 9300) for n in range(1, 4)]


def test_every_replica_computes_the_same_owner_whatever_the_order_it_saw_its_peers() -> None:
    groups = [owners.group_id(f"key-{n}", "claude-sonnet-4", 60) for n in range(50)]
    assert ([owners.owner(g, PEERS) for g in groups]
            == [owners.owner(g, list(reversed(PEERS))) for g in groups])


def test_groups_spread_over_the_peers_and_a_peer_leaving_moves_only_its_own() -> None:
    groups = [owners.group_id(f"key-{n}", "claude-sonnet-4", 60) for n in range(3000)]
    before = {g: owners.owner(g, PEERS) for g in groups}
    assert all(800 <= count <= 1200 for count in Counter(before.values()).values())
    after = {g: owners.owner(g, PEERS[:2]) for g in groups}
    moved = [g for g in groups if before[g] != after[g]]
    assert moved and all(before[g] == PEERS[2] for g in moved)


def test_a_group_id_never_shows_the_key() -> None:
    group = owners.group_id("sk-ant-secret-key", "claude-sonnet-4", 60)
    assert "secret" not in group and len(group) == 32
    assert group != owners.group_id("sk-ant-secret-key", "claude-sonnet-4", 61)


def test_an_ipv6_member_is_dialled_in_brackets() -> None:
    assert owners.member("fd00::1", 9300) == "[fd00::1]:9300"


class StandingLinks:
    """The asking side's links, as ``Links`` reports them: up to the peers named."""

    def __init__(self, up: set[str]) -> None:
        self.up = up
        self.peers: set[str] = set()

    def update(self, peers: frozenset[str]) -> None:
        self.peers = set(peers)

    def live(self, peer: str) -> object | None:
        return object() if peer in self.up else None


def routing_as(member: str, clock: FakeClock, linked_to_me: set[str],
               metrics: GatewayMetrics | None = None,
               budgets: OrgBudgets | None = None) -> tuple[RateRouting, Limiter]:
    limiter = Limiter(clock)
    budgets = budgets or OrgBudgets(clock, 10)
    routing = RateRouting(limiter, budgets, metrics or GatewayMetrics())
    routing.enable(member, StandingLinks(set(PEERS)))  # type: ignore[arg-type]
    for peer in linked_to_me:
        routing.inbound_opened(peer)
    limiter.set_replicas(3)
    budgets.reshare(3)
    routing.set_members(set(PEERS))
    return routing, limiter


def owned_and_not(routing: RateRouting) -> tuple[str, str]:
    """A key whose group this replica owns, and one whose group it does not."""
    keys = (f"key-{n}" for n in range(1000))
    mine = theirs = None
    for key in keys:
        if routing.owns(owners.group_id(key, "m", 600)):
            mine = mine or key
        else:
            theirs = theirs or key
        if mine and theirs:
            return mine, theirs
    raise AssertionError("no split")


@pytest.mark.parametrize(("linked_to_me", "owner_interval"), [
    (set(PEERS[1:]), 0.1),  # every peer asks: the whole 600 rpm here
    ({PEERS[1]}, 0.15),  # one does not (it admits on 200 rpm): 400 rpm here
    (set(), 0.3),  # none does: each its third, as without peer admission
])
async def test_the_owner_holds_the_limit_less_the_shares_of_peers_that_cannot_ask(
        linked_to_me: set[str], owner_interval: float) -> None:
    routing, limiter = routing_as(PEERS[0], FakeClock(), linked_to_me)
    mine, theirs = owned_and_not(routing)
    assert limiter.bucket(mine, "m", 600).interval == pytest.approx(owner_interval)
    # Not the owner: rpm/N, for when the owner cannot be asked.
    assert limiter.bucket(theirs, "m", 600).interval == pytest.approx(0.3)


@pytest.mark.parametrize(("linked_to_me", "owner_share"), [
    (set(PEERS[1:]), 1.0), ({PEERS[1]}, 2 / 3), (set(), 1 / 3)])
async def test_an_organisation_budgets_owner_holds_its_limits_as_a_buckets_does(
        linked_to_me: set[str], owner_share: float) -> None:
    budgets = OrgBudgets(FakeClock(), 10)
    routing, _ = routing_as(PEERS[0], FakeClock(), linked_to_me, budgets=budgets)
    by_owner = {routing.owns(b.group_id): b for b in (
        budgets.budget(f"key-{n}", "claude-sonnet-4-5") for n in range(40))}
    assert by_owner[True].share == pytest.approx(owner_share)
    assert by_owner[False].share == pytest.approx(1 / 3)  # for when the owner cannot be asked
    routing.inbound_opened(PEERS[1])
    routing.inbound_opened(PEERS[2])
    assert by_owner[True].share == pytest.approx(1.0)


async def test_a_peer_that_links_up_gives_its_share_back_to_the_owner() -> None:
    routing, limiter = routing_as(PEERS[0], FakeClock(), set())
    mine, _ = owned_and_not(routing)
    bucket = limiter.bucket(mine, "m", 600)
    routing.inbound_opened(PEERS[1])
    assert bucket.interval == pytest.approx(0.15)
    routing.inbound_opened(PEERS[2])
    assert bucket.interval == pytest.approx(0.1)
    routing.inbound_closed(PEERS[2])
    assert bucket.interval == pytest.approx(0.15)


async def test_a_new_owner_grants_nothing_for_one_interval() -> None:
    clock, metrics = FakeClock(), GatewayMetrics()
    routing, limiter = routing_as(PEERS[0], clock, set(PEERS[1:]), metrics)
    # A group owned by the peer that will leave, idle here (its bucket full).
    key = next(f"key-{n}" for n in range(1000)
               if owners.owner(owners.group_id(f"key-{n}", "m", 600), PEERS) == PEERS[2]
               and owners.owner(owners.group_id(f"key-{n}", "m", 600), PEERS[:2]) == PEERS[0])
    bucket = limiter.bucket(key, "m", 600)
    routing.set_members(set(PEERS[:2]))
    assert routing.owns(bucket.group_id)
    assert not routing.try_acquire(bucket)  # the old owner may have granted just now
    await clock.advance(0.1)
    assert routing.try_acquire(bucket)
    assert metrics.registry.get_sample_value("inference_gateway_owner_changes_total") == 1
