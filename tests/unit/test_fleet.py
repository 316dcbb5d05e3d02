"""``Fleet`` against real HTTP servers on 127.0.0.1 standing in for gateway replicas,
each answering ``/healthz`` with the configuration generations it serves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from inference_operator.controller import fleet as fleet_module
from inference_operator.controller.fleet import MISSES_ALLOWED, Coverage, Fleet
from inference_operator.controller.publisher import Placement

SHARD = "gateway-config-0"


class Replica:
    """A gateway replica's ``/healthz``: ``config`` is what it reports to serve."""

    def __init__(self, config: dict[str, int]) -> None:
        self.config = config
        self.hits = 0
        self.answering = True
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Replica:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def _healthz(self, _: web.Request) -> web.Response:
        self.hits += 1
        if not self.answering:
            return web.Response(status=503, text="starting")
        return web.json_response({"status": "ok", "config": self.config})

    def answer_later(self, delay: float, config: dict[str, int]) -> None:
        asyncio.get_running_loop().call_later(delay, setattr, self, "config", config)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


Replicas = Callable[..., Awaitable[list[Replica]]]


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    started: list[Replica] = []

    async def start(*configs: dict[str, int]) -> list[Replica]:
        new = [await Replica(config).start() for config in configs]
        started.extend(new)
        return new

    yield start
    for replica in started:
        await replica.stop()


@pytest.fixture
async def fleets() -> AsyncIterator[Callable[[list[str]], Fleet]]:
    made: list[Fleet] = []

    def make(addresses: list[str]) -> Fleet:
        async def listed() -> list[str]:
            return list(addresses)  # the live list: tests change it
        fleet = Fleet(listed)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        await fleet.close()


def at(generation: int, shard: str = SHARD) -> Placement:
    return Placement(shard, generation)


async def test_coverage_counts_the_replicas_serving_a_generation_or_later(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    servers = await replicas({SHARD: 2, "gateway-config-1": 5}, {SHARD: 1}, {})
    fleet = fleets([s.url for s in servers])
    assert fleet.coverage(at(1)) == Coverage(0, 0)  # nothing polled yet

    assert await fleet.refresh() is True

    assert fleet.coverage(at(0)) == Coverage(2, 3)  # the one without the shard serves none
    assert fleet.coverage(at(1)) == Coverage(2, 3)
    assert fleet.coverage(at(2)) == Coverage(1, 3)
    assert fleet.coverage(at(3)) == Coverage(0, 3)
    assert fleet.coverage(at(5, "gateway-config-1")) == Coverage(1, 3)
    assert fleet.coverage(at(1, "gateway-config-7")) == Coverage(0, 3)
    assert fleet.coverage(at(2)).describe() == "1/3 gateway replicas"
    assert not fleet.coverage(at(2)).complete


async def test_a_replica_that_stops_answering_is_kept_a_few_polls_then_dropped(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    steady, flaky = await replicas({SHARD: 1}, {SHARD: 1})
    fleet = fleets([steady.url, flaky.url])
    changes: list[Coverage] = []
    fleet.on_change = lambda: changes.append(fleet.coverage(at(1)))
    await fleet.refresh()
    assert changes == [Coverage(2, 2)]

    await flaky.stop()
    for _ in range(MISSES_ALLOWED):  # one slow answer flips no status
        assert await fleet.refresh() is False
        assert fleet.coverage(at(1)) == Coverage(2, 2)
    assert await fleet.refresh() is True

    assert fleet.coverage(at(1)) == Coverage(1, 1)
    assert changes == [Coverage(2, 2), Coverage(1, 1)]


async def test_a_replica_that_answers_again_gets_its_misses_back(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    steady, flaky = await replicas({SHARD: 1}, {SHARD: 1})
    fleet = fleets([steady.url, flaky.url])
    await fleet.refresh()

    for _ in range(2):
        flaky.answering = False  # answers, but no configuration report (e.g. a 503)
        for _ in range(MISSES_ALLOWED):
            await fleet.refresh()
        assert fleet.coverage(at(1)) == Coverage(2, 2)
        flaky.answering = True
        await fleet.refresh()
        assert fleet.coverage(at(1)) == Coverage(2, 2)

    flaky.answering = False
    for _ in range(MISSES_ALLOWED + 1):
        await fleet.refresh()
    assert fleet.coverage(at(1)) == Coverage(1, 1)
    flaky.answering = True
    await fleet.refresh()
    assert fleet.coverage(at(1)) == Coverage(2, 2)


async def test_a_replica_gone_from_the_address_list_is_dropped_at_once(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    first, second = await replicas({SHARD: 1}, {SHARD: 1})
    addresses = [first.url, second.url]
    fleet = fleets(addresses)
    await fleet.refresh()

    addresses.remove(second.url)  # its Pod is no longer ready
    assert await fleet.refresh() is True

    assert fleet.coverage(at(1)) == Coverage(1, 1)


async def test_on_change_is_called_only_when_what_is_served_changed(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    (server,) = await replicas({SHARD: 1})
    fleet = fleets([server.url])
    calls: list[None] = []
    fleet.on_change = lambda: calls.append(None)

    await fleet.refresh()
    await fleet.refresh()
    await fleet.refresh()
    assert len(calls) == 1

    server.config = {SHARD: 2}
    await fleet.refresh()
    await fleet.refresh()
    assert len(calls) == 2


async def test_a_listing_that_fails_keeps_what_was_known(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    (server,) = await replicas({SHARD: 1})
    healthy = True

    async def listed() -> list[str]:
        if not healthy:
            raise ConnectionError("API server away")
        return [server.url]

    fleet = Fleet(listed)
    try:
        await fleet.refresh()
        healthy = False
        assert await fleet.refresh() is False
        assert fleet.coverage(at(1)) == Coverage(1, 1)
    finally:
        await fleet.close()


async def test_wait_for_returns_as_soon_as_every_replica_serves_the_generation(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    early, late = await replicas({SHARD: 1}, {SHARD: 1})
    fleet = fleets([early.url, late.url])
    await fleet.refresh()
    loop = asyncio.get_running_loop()
    early.answer_later(0.1, {SHARD: 2})
    late.answer_later(0.3, {SHARD: 2})

    started = loop.time()
    coverage = await fleet.wait_for(at(2), within=5.0)
    took = loop.time() - started

    assert coverage == Coverage(2, 2)
    assert 0.25 <= took < 0.3 + 1.0, took  # not the 5 s it may wait


async def test_wait_for_gives_up_after_its_time_and_never_waits_for_no_replica(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    (server,) = await replicas({SHARD: 1})
    fleet = fleets([server.url])
    await fleet.refresh()
    loop = asyncio.get_running_loop()

    started = loop.time()
    assert await fleet.wait_for(at(2), within=0.2) == Coverage(0, 1)
    assert 0.2 <= loop.time() - started < 1.0

    nobody = fleets([])
    await nobody.refresh()
    started = loop.time()
    assert await nobody.wait_for(at(2), within=5.0) == Coverage(0, 0)
    assert loop.time() - started < 0.05


async def test_concurrent_waits_share_their_polls(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    first, second = await replicas({SHARD: 1}, {SHARD: 1})
    fleet = fleets([first.url, second.url])
    await fleet.refresh()
    first.config = second.config = {SHARD: 2}  # served already, not yet polled
    first.hits = second.hits = 0

    coverages = await asyncio.gather(*(fleet.wait_for(at(2), 5.0) for _ in range(20)))

    assert coverages == [Coverage(2, 2)] * 20
    assert (first.hits, second.hits) == (1, 1)  # one poll for twenty waiters


async def test_concurrent_waits_over_a_slow_rollout_poll_once_per_round(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet_module, "QUICK_POLL_DELAY", 0.05)
    (server,) = await replicas({SHARD: 1})
    fleet = fleets([server.url])
    await fleet.refresh()
    server.hits = 0
    server.answer_later(0.5, {SHARD: 2})
    loop = asyncio.get_running_loop()

    started = loop.time()
    waits: list[Any] = [fleet.wait_for(at(2), 5.0) for _ in range(20)]
    await asyncio.gather(*waits)
    took = loop.time() - started

    # Each round is one delay and one poll, whoever waits.
    assert server.hits <= took / fleet_module.QUICK_POLL_DELAY + 1
    assert server.hits >= 2


async def test_the_first_replica_is_waited_for_at_start_up(
    replicas: Replicas, fleets: Callable[[list[str]], Fleet],
) -> None:
    (replica,) = await replicas({SHARD: 1})
    addresses: list[str] = []
    fleet = fleets(addresses)
    # The sidecar's gateway, restarted with the operator, is ready a moment later.
    asyncio.get_running_loop().call_later(0.3, addresses.append, replica.url)

    assert await fleet.wait_for_replica(5.0, interval=0.05) is True
    assert fleet.coverage(at(1)) == Coverage(1, 1)
    assert await fleets([]).wait_for_replica(0.2, interval=0.05) is False
