"""``ConfigPublisher`` over an in-memory store of the shard Secrets: a write per change
and no more, generations that survive a restart, and placements that never claim a
generation holds a record it does not hold."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections import Counter
from typing import Any

import pytest
from controller_fakes import FakeConfigStore

from inference_operator.api.gateway_config import (
    DATA_KEY,
    ConfigFormatError,
    Shard,
    Shards,
)
from inference_operator.controller.publisher import ConfigMissing, ConfigPublisher, Placement

SHARDS = Shards("gateway-config", 2)
NS = "gateway-ns"


def body(max_tokens: int = 64, key: str = "fake-key") -> dict[str, Any]:
    return {"service": "anthropic",
            "service_settings": {"api_key": key, "model_id": "claude-sonnet-4-5",
                                 "rate_limit": {}},
            "task_settings": {"max_tokens": max_tokens}}


def ids_in(shard: str, count: int) -> list[str]:
    """``count`` ids that all live in ``shard``."""
    candidates = (f"ep-{n}" for n in itertools.count())
    return list(itertools.islice((i for i in candidates if SHARDS.of(i) == shard), count))


A, B, C = ids_in(SHARDS.name(0), 3)
OTHER = ids_in(SHARDS.name(1), 1)[0]


class HeldStore(FakeConfigStore):
    """Each write waits for ``release`` (once set, writes pass at once)."""

    def __init__(self, shards: Shards) -> None:
        super().__init__(shards)
        self.release = asyncio.Event()
        self.in_flight = asyncio.Event()

    async def write_config(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        self.in_flight.set()
        await self.release.wait()
        return await super().write_config(namespace, name, data)


def generation(store: FakeConfigStore, shard: str) -> int:
    return Shard.decode(store.data[shard]).generation


async def loaded(store: FakeConfigStore) -> ConfigPublisher:
    publisher = ConfigPublisher(store, NS, SHARDS)
    await publisher.load()
    return publisher


async def test_each_change_is_one_write_and_an_unchanged_put_none() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)

    await publisher.put_endpoint(A, "completion", body())
    await publisher.put_endpoint(OTHER, "completion", body())
    assert store.writes == [SHARDS.of(A), SHARDS.of(OTHER)]

    await publisher.put_endpoint(A, "completion", body())
    await publisher.put_endpoint(OTHER, "completion", body())
    assert len(store.writes) == 2

    await publisher.put_endpoint(A, "completion", body(max_tokens=7))
    assert store.writes[2:] == [SHARDS.of(A)]
    assert store.served()[A]["task_settings"] == {"max_tokens": 7}
    assert store.served()[A]["task_type"] == "completion"
    assert generation(store, SHARDS.of(A)) == 2


async def test_a_restart_writes_nothing_and_continues_the_generations() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    for inference_id in (A, B, OTHER):
        await publisher.put_endpoint(inference_id, "completion", body())
    await publisher.put_endpoint(A, "completion", body(max_tokens=7))
    writes, data = list(store.writes), dict(store.data)

    restarted = await loaded(store)
    placements = {i: await restarted.put_endpoint(i, "completion", body())
                  for i in (B, OTHER)}
    placements[A] = await restarted.put_endpoint(A, "completion", body(max_tokens=7))

    assert store.writes == writes and store.data == data
    assert restarted.published() == {A, B, OTHER}
    # Every loaded record is where the shard's current generation is.
    assert placements == {i: Placement(SHARDS.of(i), generation(store, SHARDS.of(i)))
                          for i in (A, B, OTHER)}
    await restarted.put_endpoint(C, "completion", body())
    assert generation(store, SHARDS.of(C)) == 4


async def test_a_restart_over_a_missing_shard_loads_the_others() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    await publisher.put_endpoint(OTHER, "completion", body())
    del store.data[SHARDS.of(A)]

    restarted = await loaded(store)

    assert restarted.published() == {OTHER}
    with pytest.raises(ConfigMissing, match=f"{NS}/{SHARDS.of(A)}"):
        await restarted.put_endpoint(A, "completion", body())


async def test_concurrent_puts_to_one_shard_share_writes() -> None:
    store = HeldStore(SHARDS)
    publisher = await loaded(store)
    ids = ids_in(SHARDS.name(0), 20)

    puts = [asyncio.ensure_future(publisher.put_endpoint(i, "completion", body()))
            for i in ids]
    await store.in_flight.wait()  # the first write holds the shard; the rest pile up
    store.release.set()
    placements = await asyncio.gather(*puts)

    assert len(store.writes) <= 2
    assert set(store.served()) == set(ids)
    assert all(p.generation <= generation(store, p.shard) for p in placements)


async def test_a_placement_advances_only_for_endpoints_whose_record_changed() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    shard = SHARDS.of(A)

    assert await publisher.put_endpoint(A, "completion", body()) == Placement(shard, 1)
    assert await publisher.put_endpoint(B, "completion", body()) == Placement(shard, 2)
    assert await publisher.put_endpoint(B, "completion", body(7)) == Placement(shard, 3)
    await publisher.delete_endpoint(C)  # not there: nothing written
    await publisher.delete_endpoint(B)

    assert generation(store, shard) == 4
    assert publisher.placement(A) == Placement(shard, 1)
    assert await publisher.put_endpoint(A, "completion", body()) == Placement(shard, 1)
    assert publisher.placement(B) is None




async def test_a_record_changed_while_its_write_is_in_flight_waits_for_the_next() -> None:
    store = HeldStore(SHARDS)
    publisher = await loaded(store)
    shard = SHARDS.of(A)

    first = asyncio.ensure_future(publisher.put_endpoint(A, "completion", body(1)))
    await store.in_flight.wait()  # generation 1, with max_tokens 1, is being written
    second = asyncio.ensure_future(publisher.put_endpoint(A, "completion", body(2)))
    await asyncio.sleep(0)
    assert publisher.placement(A) is None  # what is in memory is in no generation yet
    store.release.set()

    # Generation 1 holds max_tokens 1, not the current record: both callers are told
    # where the current one is.
    assert await asyncio.gather(first, second) == [Placement(shard, 2)] * 2
    assert store.writes == [shard, shard]
    assert store.served()[A]["task_settings"] == {"max_tokens": 2}


async def test_delete_and_retain() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    for inference_id in (A, B, OTHER):
        await publisher.put_endpoint(inference_id, "completion", body())

    await publisher.delete_endpoint(A)
    await publisher.delete_endpoint(A)  # already gone: no write
    assert set(store.served()) == {B, OTHER}
    assert len(store.writes) == 4

    assert await publisher.retain([OTHER, "never-published"]) == [B]
    assert await publisher.retain([OTHER]) == []
    assert set(store.served()) == publisher.published() == {OTHER}
    assert len(store.writes) == 5


async def test_a_retain_writes_each_shard_once() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    stale = ids_in(SHARDS.name(0), 5) + ids_in(SHARDS.name(1), 5)
    for inference_id in stale:
        await publisher.put_endpoint(inference_id, "completion", body())
    store.writes.clear()

    assert await publisher.retain(stale[:1]) == sorted(stale[1:])

    assert sorted(store.writes) == SHARDS.names()
    assert set(store.served()) == set(stale[:1])


async def test_a_missing_shard_secret_raises_and_is_written_once_it_exists() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    shard = SHARDS.of(A)
    del store.data[shard]

    with pytest.raises(ConfigMissing, match=f"{NS}/{shard} does not exist"):
        await publisher.put_endpoint(A, "completion", body())
    assert publisher.placement(A) is None
    await publisher.put_endpoint(OTHER, "completion", body())  # other shards unaffected

    store.data[shard] = {}  # the installer creates it, empty
    assert await publisher.put_endpoint(A, "completion", body()) == Placement(shard, 1)
    assert A in store.served()


async def test_a_failed_write_is_written_by_the_next_call() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    await publisher.put_endpoint(A, "completion", body())
    store.fail = RuntimeError("API server away")

    with pytest.raises(RuntimeError):
        await publisher.delete_endpoint(A)
    store.fail = None
    await publisher.delete_endpoint(A)  # nothing left to change, yet still unwritten

    assert store.served() == {}


def test_shards_are_stable_and_spread() -> None:
    shards = Shards("gateway-config", 8)
    ids = [f"endpoint-{n}" for n in range(5000)]
    counts = Counter(map(shards.of, ids))

    assert set(counts) == set(shards.names())
    mean = len(ids) / shards.count
    assert all(0.75 * mean <= count <= 1.25 * mean for count in counts.values()), counts
    # Fixed by sha256, not by the process's hash seed: an upgrade moves no endpoint.
    assert [shards.of(i) for i in ("my-endpoint", "ep", "claude-chat")] == [
        "gateway-config-0", "gateway-config-2", "gateway-config-7"]
    assert Shards("gateway-config", 1).of("ep") == "gateway-config-0"
    with pytest.raises(ValueError):
        Shards("gateway-config", 0)


def test_a_shard_round_trips() -> None:
    shard = Shard(7, ({"inference_id": "b", "task_type": "completion", **body()},
                      {"inference_id": "a", "task_type": "completion", **body(3)}))

    decoded = Shard.decode(shard.encode())

    assert decoded.generation == 7
    assert sorted(decoded.endpoints, key=lambda r: r["inference_id"]) == sorted(
        shard.endpoints, key=lambda r: r["inference_id"])
    assert Shard.decode(None) == Shard.decode({}) == Shard(0, ())
    # The same content encodes to the same bytes, so rewriting it changes nothing.
    assert Shard(7, tuple(reversed(shard.endpoints))).encode() == shard.encode()


def encoded(content: Any) -> dict[str, str]:
    return {DATA_KEY: base64.b64encode(json.dumps(content).encode()).decode()}


@pytest.mark.parametrize("data", [
    {DATA_KEY: "not base64!"},
    {DATA_KEY: base64.b64encode(b"not json").decode()},
    {DATA_KEY: base64.b64encode(b"\xff\xfe").decode()},
    encoded(["a list"]),
    encoded({"version": 2, "generation": 1, "endpoints": []}),
    encoded({"version": 1, "endpoints": []}),
    encoded({"version": 1, "generation": "1", "endpoints": []}),
    encoded({"version": 1, "generation": 1, "endpoints": {}}),
    encoded({"version": 1, "generation": 1, "endpoints": [{"task_type": "completion"}]}),
], ids=["base64", "json", "utf-8", "not an object", "version", "no generation",
        "generation type", "endpoints type", "endpoint without id"])
def test_a_shard_this_version_cannot_read_is_a_format_error(data: dict[str, str]) -> None:
    with pytest.raises(ConfigFormatError):
        Shard.decode(data)


async def test_an_endpoint_put_again_while_a_retain_writes_is_kept() -> None:
    """A full sync drops what no resource held when it looked; a resource that takes
    one of those ids meanwhile (its put comes after the look) keeps it."""
    store = HeldStore(SHARDS)
    store.release.set()
    publisher = await loaded(store)
    for inference_id in (A, B):
        await publisher.put_endpoint(inference_id, "completion", body())
    store.release.clear()
    store.in_flight.clear()

    retain = asyncio.ensure_future(publisher.retain([]))
    await store.in_flight.wait()  # dropping A is being written
    put = asyncio.ensure_future(publisher.put_endpoint(B, "completion", body()))
    await asyncio.sleep(0)
    store.release.set()
    placement = await put
    await retain

    assert B in store.served()
    assert publisher.placement(B) == placement


@pytest.mark.parametrize("tampered", ["emptied", "recreated", "edited"])
async def test_a_shard_changed_by_someone_else_is_rewritten_at_the_resync(tampered: str) -> None:
    store = FakeConfigStore(SHARDS)
    publisher = ConfigPublisher(store, NS, SHARDS)
    await publisher.load()
    await publisher.put_endpoint(A, "completion", body())
    await publisher.put_endpoint(A, "completion", body(max_tokens=7))
    name = SHARDS.name(0)
    written = generation(store, name)
    if tampered == "emptied":
        store.data[name] = {}
    elif tampered == "recreated":
        store.data[name] = Shard(0, ()).encode()
    else:
        store.data[name] = Shard(written, ({"inference_id": "intruder"},)).encode()

    assert await publisher.repair() == [name]

    assert set(store.served()) == {A}
    assert generation(store, name) == written + 1  # news to every gateway
    assert publisher.placement(A) == Placement(name, written + 1)
    assert await publisher.repair() == []  # nothing to repair twice
