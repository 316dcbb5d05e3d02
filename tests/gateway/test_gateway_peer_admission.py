"""Peer admission against the real kube-apiserver: three config-mode gateways in this
process, each with its peer listener on loopback, their Service's EndpointSlices written
by the test (one slice per gateway: each names its own peer port; an FQDN slice, as the
API server refuses a loopback address in an IPv4 one, but not "127.0.0.1" as a name). Each
rate-limit group has one owner; the others ask it over a WebSocket, and admit on rpm/N
while they cannot. The emulator counts what reaches Anthropic."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from auth_support import run, token
from gateway_support import GatewayFactory, RunningEmulator, RunningGateway, metric
from kube_support import ShardWriter, record
from lightkube import AsyncClient
from lightkube.resources import core_v1
from lightkube.resources.discovery_v1 import EndpointSlice
from test_gateway_org_limits import ENDPOINTS, OUTPUT_PER_MINUTE, drive

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.waiting import poll_async
from inference_operator.emulator.limits import OrgLimits
from inference_operator.gateway.org_limits import OUTPUT
from inference_operator.gateway.peering import identity, wire

RPM = 600  # one token every 0.1 s for the fleet
SERVICE = "gateways"
COMPLETION = "/_inference/completion/alpha"


@dataclass
class Fleet:
    gateways: list[RunningGateway]
    admin: AsyncClient
    namespace: str

    def owner(self) -> RunningGateway:
        """The gateway that owns alpha's group, in the first gateway's view."""
        routing = self.gateways[0].server.gateway.routing
        bucket = self.gateways[0].server.gateway.registry.resolve("alpha", None).bucket
        member = routing.owner_of(bucket.group_id)
        return next(g for g in self.gateways if g.server.gateway.routing.member == member)

    async def publish(self, ready: list[bool]) -> None:
        """The gateways' EndpointSlices, as the EndpointSlice controller would write them."""
        for index, (gateway, is_ready) in enumerate(zip(self.gateways, ready, strict=True)):
            body = EndpointSlice.from_dict({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{SERVICE}-{index}",
                             "labels": {"kubernetes.io/service-name": SERVICE}},
                "addressType": "FQDN",
                "ports": [{"name": "http", "port": 9200},
                          {"name": "peer", "port": gateway.server.peer_port}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": is_ready},
                               "targetRef": {"kind": "Pod", "namespace": self.namespace,
                                             "name": f"gateway-{index}"}}]})
            try:
                await self.admin.create(body, namespace=self.namespace)
            except Exception:
                await self.admin.replace(body, namespace=self.namespace)


async def links_up(gateway: RunningGateway) -> float:
    return await metric(gateway.session, gateway.metrics, "inference_gateway_peer_links",
                        'state="up"')


@pytest.fixture
async def peer_token(kubectl: Kubectl, namespace: str, tmp_path: Path) -> Path:
    """The gateways' ServiceAccount token for the peers' audience, as kubelet projects it."""
    await run(kubectl, "create", "serviceaccount", "gateway", "-n", namespace)
    path = tmp_path / "peer-token"
    written = await token(kubectl, namespace, "gateway", identity.AUDIENCE)
    await asyncio.to_thread(path.write_text, written)
    return path


async def form(config_gateway: GatewayFactory, admin: AsyncClient, namespace: str,
               peer_token: Path, count: int) -> Fleet:
    """``count`` gateways of a fleet on the shards written, linked up and ready."""
    await admin.create(core_v1.Service.from_dict({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
        "spec": {"ports": [{"name": "http", "port": 9200}]}}), namespace=namespace)
    gateways = [await config_gateway(peers_service=SERVICE, peer_port=0,
                                     peer_address="127.0.0.1", peer_token_file=peer_token)
                for _ in range(count)]
    fleet = Fleet(gateways, admin, namespace)
    await fleet.publish([True] * count)

    async def formed() -> bool:
        return all([await links_up(g) == count - 1 for g in gateways]
                   + [g.server.gateway.limiter.replicas == count for g in gateways]
                   + [(await g.call("GET", "/readyz"))[0] == 200 for g in gateways])

    await poll_async(formed, timeout=10, interval=0.05, message="the fleet never linked up")
    return fleet


@pytest.fixture
async def fleet(config_gateway: GatewayFactory, admin: AsyncClient, shards: ShardWriter,
                namespace: str, emulator: RunningEmulator, peer_token: Path) -> Fleet:
    alpha = record("alpha")
    alpha["service_settings"]["rate_limit"]["requests_per_minute"] = RPM
    await shards.write(0, 1, alpha)
    await shards.write(1, 1)
    return await form(config_gateway, admin, namespace, peer_token, 3)


async def pinned(gateway: RunningGateway, seconds: float) -> dict[int, int]:
    """One client, one keep-alive connection, one request after the other."""
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            async with session.post(gateway.public + COMPLETION,
                                    json={"input": "hi"}) as answer:
                await answer.read()
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
    return statuses


async def test_a_pinned_client_on_a_replica_that_does_not_own_the_group_gets_the_whole_limit(
        fleet: Fleet, emulator: RunningEmulator) -> None:
    owner = fleet.owner()
    other = next(g for g in fleet.gateways if g is not owner)
    # Without peer admission it would get rpm/3: 10 in these 3 s.
    statuses = await pinned(other, 3.0)
    assert set(statuses) == {200}, statuses
    assert 29 <= statuses[200] <= 32, statuses
    asked = await metric(other.session, other.metrics, "inference_gateway_peer_admissions_total",
                         'route="peer"')
    assert asked >= 29


async def test_every_replica_flooded_at_once_stays_within_the_limit(
        fleet: Fleet, emulator: RunningEmulator) -> None:
    before = len(emulator.requests())
    started = time.monotonic()

    async def flood(gateway: RunningGateway) -> None:
        async with aiohttp.ClientSession() as session:
            async def caller() -> None:
                while time.monotonic() - started < 3.0:
                    async with session.post(gateway.public + COMPLETION + "?timeout=-1",
                                            json={"input": "hi"}) as answer:
                        await answer.read()

            await asyncio.gather(*(caller() for _ in range(4)))

    await asyncio.gather(*(flood(g) for g in fleet.gateways))
    sent = len(emulator.requests()) - before
    elapsed = time.monotonic() - started
    # The fleet's one bucket: at most one token per 0.1 s, plus the first.
    assert sent <= elapsed * RPM / 60 + 1, (sent, elapsed)
    assert sent >= 0.9 * 3.0 * RPM / 60, (sent, elapsed)


async def test_when_the_owner_dies_the_others_admit_on_their_share_then_elect_a_new_owner(
        fleet: Fleet, emulator: RunningEmulator) -> None:
    owner = fleet.owner()
    survivors = [g for g in fleet.gateways if g is not owner]
    await owner.server.stop()  # its links drop at once, as with a killed Pod's

    async def fell_back() -> bool:
        return all([await links_up(g) == 1 for g in survivors])

    await poll_async(fell_back, timeout=5, interval=0.05, message="links to the dead owner stay")
    # Still served, at rpm/3 each (the slices still count three): one at once, then one
    # each 0.3 s, the last perhaps granted after the second ends.
    statuses = await pinned(survivors[0], 1.0)
    assert set(statuses) == {200} and statuses[200] <= 5, statuses
    assert await metric(survivors[0].session, survivors[0].metrics,
                        "inference_gateway_peer_admissions_total", 'route="fallback"') >= 1

    # The EndpointSlice controller takes the dead Pod out: one of the two owns the group.
    await fleet.publish([g is not owner for g in fleet.gateways])
    fleet.gateways = [*survivors, owner]

    async def elected() -> bool:
        return all(g.server.gateway.limiter.replicas == 2 for g in survivors)

    await poll_async(elected, timeout=5, interval=0.05, message="no new owner")
    new_owner = fleet.owner()
    assert new_owner is not owner
    assert await metric(new_owner.session, new_owner.metrics,
                        "inference_gateway_owner_changes_total") >= 1
    other = next(g for g in survivors if g is not new_owner)
    statuses = await pinned(other, 2.0)
    assert set(statuses) == {200} and 19 <= statuses[200] <= 22, statuses


@pytest.mark.parametrize(("credentials", "status"), [
    ("none", 401),
    ("not-a-token", 401),
    ("another account", 401),  # a valid token, for the audience, of another ServiceAccount
    ("caller audience", 401),  # the gateway's own account, for callers' audience
    ("another version", 426),
    ("peer", 101),
])
async def test_the_peer_listener_admits_only_gateways_of_its_account_and_version(
        fleet: Fleet, kubectl: Kubectl, namespace: str, peer_token: Path, credentials: str,
        status: int) -> None:
    headers = {wire.MEMBER_HEADER: "127.0.0.1:1", wire.PROTOCOL_HEADER: wire.PROTOCOL}
    if credentials == "not-a-token":
        headers["Authorization"] = "Bearer not-a-token"
    elif credentials == "another account":
        await run(kubectl, "create", "serviceaccount", "app", "-n", namespace)
        headers["Authorization"] = "Bearer " + await token(
            kubectl, namespace, "app", identity.AUDIENCE)
    elif credentials == "caller audience":
        headers["Authorization"] = "Bearer " + await token(kubectl, namespace, "gateway")
    elif credentials in ("another version", "peer"):
        headers["Authorization"] = f"Bearer {await asyncio.to_thread(peer_token.read_text)}"
        if credentials == "another version":
            headers[wire.PROTOCOL_HEADER] = "0"
    port = fleet.gateways[0].server.peer_port
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(f"http://127.0.0.1:{port}{wire.PATH}",
                                          headers=headers) as socket:
                await socket.close()
                got = 101
        except aiohttp.WSServerHandshakeError as refused:
            got = refused.status
    assert got == status




@pytest.fixture
async def org_fleet(config_gateway: GatewayFactory, admin: AsyncClient, shards: ShardWriter,
                    namespace: str, emulator: RunningEmulator, peer_token: Path) -> Fleet:
    """Two gateways of a fleet serving test_gateway_org_limits' endpoints on one key, the
    emulator enforcing its organisation's limits."""
    emulator.state.set_limits(OrgLimits(requests_per_minute=100_000,
                                        input_tokens_per_minute=10_000_000,
                                        output_tokens_per_minute=OUTPUT_PER_MINUTE))
    emulator.latency(per_token=0.001)  # streams hold their reservation a while
    records = []
    for inference_id, model, max_tokens in ENDPOINTS:
        written = record(inference_id)
        written["service_settings"].update(model_id=model,
                                           rate_limit={"requests_per_minute": 100_000})
        written["task_settings"]["max_tokens"] = max_tokens
        records.append(written)
    await shards.write(0, 1, *records)
    await shards.write(1, 1)
    return await form(config_gateway, admin, namespace, peer_token, 2)


async def test_a_load_on_a_replica_that_does_not_own_the_budget_gets_the_whole_org_limit(
        org_fleet: Fleet, emulator: RunningEmulator) -> None:
    """The organisation budget decided by its owner: a load pinned to the other replica
    reserves from it, so it uses nearly all of the binding limit (on its own share it
    would use half) and Anthropic refuses none."""
    first = org_fleet.gateways[0].server.gateway
    owner = first.routing.owner_of(first.registry.resolve("team-a", None).budget.group_id)
    loaded = next(g for g in org_fleet.gateways if g.server.gateway.routing.member != owner)
    outcomes, statuses, used = await drive(emulator, [loaded], 16)
    assert "429" not in outcomes, f"{outcomes.count('429')} upstream 429s of {len(outcomes)}"
    assert set(statuses) == {200}
    assert used >= 0.9, f"{used:.0%} of the output limit used"
    # Each attempt reserved from the owner; none on the local share.
    async def reservations(route: str) -> float:
        return await metric(loaded.session, loaded.metrics,
                            "inference_gateway_peer_reservations_total", f'route="{route}"')
    assert await reservations("peer") >= len(outcomes)
    assert await reservations("fallback") == 0


async def test_the_owner_settles_a_peers_reservation_as_it_says_and_keeps_a_dropped_ones(
        org_fleet: Fleet, peer_token: Path) -> None:
    """On the wire: a reservation's unused output comes back when its peer says it ended,
    all of it when its caller gave up; one whose link closed before it was settled stays
    spent (its attempt may have run)."""
    first = org_fleet.gateways[0].server.gateway
    owner = next(g for g in org_fleet.gateways if g.server.gateway.routing.member
                 == first.routing.owner_of(first.registry.resolve("team-a", None)
                                           .budget.group_id))
    status, _, _ = await owner.call("POST", "/_inference/completion/team-a", {"input": "hi"})
    assert status == 200  # the limits learned
    budget = owner.server.gateway.registry.resolve("team-a", None).budget

    def output_level() -> float:
        budget.utilisation()  # refilled to now
        return budget.levels[OUTPUT].level

    async def refilled_to(level: float) -> bool:
        return output_level() > level

    await poll_async(lambda: refilled_to(OUTPUT_PER_MINUTE - 100), timeout=10)
    headers = {"Authorization": f"Bearer {await asyncio.to_thread(peer_token.read_text)}",
               wire.MEMBER_HEADER: "127.0.0.1:1", wire.PROTOCOL_HEADER: wire.PROTOCOL}
    url = f"http://127.0.0.1:{owner.server.peer_port}{wire.PATH}"
    reserve = wire.Reserve(1, budget.group_id, (1, 10, 3_000), 30, False).message()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers) as socket:
            await socket.send_json(reserve)
            assert await socket.receive_json(timeout=5) == {"id": 1, "result": "granted"}
            assert output_level() < OUTPUT_PER_MINUTE - 2_500
            await socket.send_json({"op": "settle", "id": 1, "event": "usage",
                                    "usage": {"output_tokens": 100}})
            await socket.send_json({"op": "settle", "id": 1, "event": "ended"})
            await poll_async(lambda: refilled_to(OUTPUT_PER_MINUTE - 300), timeout=2,
                             message="the unused output never came back")
            # Granted as its caller gave up: the cancel gives all of it back.
            await socket.send_json({**reserve, "id": 3})
            assert (await socket.receive_json(timeout=5))["result"] == "granted"
            await socket.send_json({"op": "cancel", "id": 3})
            await poll_async(lambda: refilled_to(OUTPUT_PER_MINUTE - 300), timeout=2,
                             message="a cancelled reservation was never given back")
            await socket.send_json({**reserve, "id": 2})
            assert (await socket.receive_json(timeout=5))["result"] == "granted"
        after_close = output_level()
        await asyncio.sleep(0.2)
        assert after_close < OUTPUT_PER_MINUTE - 2_500  # nothing given back for it
