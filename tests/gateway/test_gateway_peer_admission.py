"""Peer admission against the real kube-apiserver: three config-mode gateways in this
process, each with its peer listener on loopback, their Service's EndpointSlices written
by the test (one slice per gateway: each names its own peer port; an FQDN slice, as the
API server refuses a loopback address in an IPv4 one, but not "127.0.0.1" as a name). Each
rate-limit group has one owner; the others ask it over a WebSocket, and admit on rpm/N
while they cannot. The emulator counts what reaches Anthropic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
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

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.waiting import poll_async
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


@pytest.fixture
async def fleet(config_gateway: GatewayFactory, admin: AsyncClient, shards: ShardWriter,
                namespace: str, emulator: RunningEmulator, peer_token: Path
                ) -> AsyncIterator[Fleet]:
    alpha = record("alpha")
    alpha["service_settings"]["rate_limit"]["requests_per_minute"] = RPM
    await shards.write(0, 1, alpha)
    await shards.write(1, 1)
    await admin.create(core_v1.Service.from_dict({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
        "spec": {"ports": [{"name": "http", "port": 9200}]}}), namespace=namespace)
    gateways = [await config_gateway(peers_service=SERVICE, peer_port=0,
                                     peer_address="127.0.0.1", peer_token_file=peer_token)
                for _ in range(3)]
    fleet = Fleet(gateways, admin, namespace)
    await fleet.publish([True, True, True])

    async def formed() -> bool:
        return all([await links_up(g) == 2 for g in gateways]
                   + [g.server.gateway.limiter.replicas == 3 for g in gateways]
                   + [(await g.call("GET", "/readyz"))[0] == 200 for g in gateways])

    await poll_async(formed, timeout=10, interval=0.05, message="the fleet never linked up")
    yield fleet


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


