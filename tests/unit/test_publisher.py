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
    record_bytes,
    shard_bytes,
)
from inference_operator.controller.publisher import (
    ConfigMissing,
    ConfigPublisher,
    ConfigurationFull,
    NamespaceQuotaExceeded,
    Placement,
)

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


async def test_a_failed_write_is_taken_back_and_its_retry_writes_it() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    await publisher.put_endpoint(A, "completion", body())
    store.fail = RuntimeError("API server away")

    with pytest.raises(RuntimeError):
        await publisher.delete_endpoint(A)
    assert publisher.published() == {A}  # as the Secret still says
    store.fail = None
    assert await publisher.delete_endpoint(A)  # the caller's retry

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


class RefusingStore(FakeConfigStore):
    """Refuses a write whose data exceed ``limit`` bytes, as the API server refuses a
    Secret over 1 MiB, and counts the refusals."""

    def __init__(self, shards: Shards, limit: int) -> None:
        super().__init__(shards)
        self.limit = limit
        self.refused = 0

    async def write_config(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        if len(base64.b64decode(data[DATA_KEY])) > self.limit:
            self.refused += 1
            raise RuntimeError("Secret data too long")
        return await super().write_config(namespace, name, data)


def sized(inference_id: str, key_length: int) -> dict[str, Any]:
    """The record ``put_endpoint`` makes of ``body`` with a key this long."""
    return {"inference_id": inference_id, "task_type": "completion",
            **body(key="k" * key_length)}


@pytest.mark.parametrize("size", [1, 300, 5000])
def test_a_shards_measure_is_what_its_encoding_takes_at_most(size: int) -> None:
    records = tuple(sized(i, size) for i in ids_in(SHARDS.name(0), 3))
    encoded_size = len(base64.b64decode(Shard(2**62, records).encode()[DATA_KEY]))

    assert encoded_size <= shard_bytes(sum(map(record_bytes, records))) <= encoded_size + 24


FIT = [
    # (case, key lengths already in the shard (A, B), A's new key length, it fits)
    ("a new record that fits exactly", (None, 100), 100, True),
    ("a new record a byte too big", (None, 100), 101, False),
    ("a replacement measured without the record it replaces", (60, 100), 100, True),
    ("a replacement that grows past the limit", (60, 100), 101, False),
]


@pytest.mark.parametrize(("existing", "new_key", "fits"),
                         [row[1:] for row in FIT], ids=[row[0] for row in FIT])
async def test_a_record_is_measured_before_it_joins_its_shard(
        existing: tuple[int | None, int], new_key: int, fits: bool) -> None:
    # The limit: A with a 100-character key next to B with a 100-character one, or the
    # same bytes split otherwise.
    limit = shard_bytes(record_bytes(sized(A, 100)) + record_bytes(sized(B, 100)))
    store = RefusingStore(SHARDS, limit)
    publisher = ConfigPublisher(store, NS, SHARDS, shard_limit=limit)
    await publisher.load()
    a_key, b_key = existing
    await publisher.put_endpoint(B, "completion", body(key="k" * b_key))
    if a_key is not None:
        await publisher.put_endpoint(A, "completion", body(key="k" * a_key))
    before, writes = store.served(), len(store.writes)

    put = publisher.put_endpoint(A, "completion", body(key="k" * new_key))
    if fits:
        await put
        assert store.served()[A]["service_settings"]["api_key"] == "k" * new_key
    else:
        with pytest.raises(ConfigurationFull, match=f"shard {SHARDS.of(A)} has no room"):
            await put
        # Refused before anything changed: nothing written, nothing in memory.
        assert (store.served(), len(store.writes)) == (before, writes)
        assert publisher.published() == set(before)
    assert store.refused == 0  # the API server never saw a shard too big


FAILURES = [
    # (case, what the write meets)
    ("the API server refuses the content", RuntimeError("Secret data too long")),
    ("the API server is away", ConnectionError("refused")),
    ("the Secret was deleted", None),
]


@pytest.mark.parametrize("failure", [row[1] for row in FAILURES], ids=[row[0] for row in FAILURES])
@pytest.mark.parametrize("change", ["create", "replace", "delete"])
async def test_a_failed_write_takes_back_its_change_and_the_next_change_goes_through(
        failure: Exception | None, change: str) -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    for inference_id in (B, C):
        await publisher.put_endpoint(inference_id, "completion", body())
    if change != "create":
        await publisher.put_endpoint(A, "completion", body())
    shard = SHARDS.of(A)
    written, placement = store.served(), publisher.placement(A)

    if failure is None:
        saved = store.data.pop(shard)
    else:
        store.fail = failure
    with pytest.raises(ConfigMissing if failure is None else type(failure)):
        if change == "delete":
            await publisher.delete_endpoint(A)
        else:
            await publisher.put_endpoint(A, "completion", body(max_tokens=7))
    assert publisher.published() == set(written)  # memory says what the Secret holds
    assert publisher.placement(A) == placement
    if failure is None:
        store.data[shard] = saved
    store.fail = None

    # Another team's revocation: written alone, without the failed change.
    await publisher.delete_endpoint(B)

    assert store.served() == {i: r for i, r in written.items() if i != B}
    assert publisher.placement(A) == (None if placement is None else
                                      Placement(shard, placement.generation))


class FailingOnce(HeldStore):
    """The first write, once released, fails."""

    async def write_config(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        self.in_flight.set()
        await self.release.wait()
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        return await super().write_config(namespace, name, data)


async def test_a_change_made_while_a_failing_write_is_in_flight_is_kept() -> None:
    store = FailingOnce(SHARDS)
    publisher = await loaded(store)
    store.fail = RuntimeError("API server away")
    failing = asyncio.ensure_future(publisher.put_endpoint(A, "completion", body()))
    await store.in_flight.wait()
    later = asyncio.ensure_future(publisher.put_endpoint(B, "completion", body()))
    await asyncio.sleep(0)
    store.release.set()

    with pytest.raises(RuntimeError):
        await failing
    # Not in the failed write: kept, and written by the next.
    assert await later == Placement(SHARDS.of(B), 1)
    assert set(store.served()) == {B}


@pytest.mark.parametrize(("namespaces", "refused"), [
    (["team-a", "team-a", "team-a"], [False, False, True]),
    (["team-a", "team-b", "team-a", "team-b"], [False, False, False, False]),
    (["team-a", "team-a", "team-b", "team-a", "team-b"], [False, False, False, True, False]),
], ids=["third of one namespace", "two namespaces at the cap", "one over, the other under"])
async def test_a_namespace_publishes_at_most_its_cap(namespaces: list[str],
                                                     refused: list[bool]) -> None:
    store = FakeConfigStore(SHARDS)
    publisher = ConfigPublisher(store, NS, SHARDS, max_per_namespace=2)
    await publisher.load()

    outcomes = []
    for n, namespace in enumerate(namespaces):
        try:
            await publisher.put_endpoint(f"ep-{n}", "completion", body(),
                                         owner=(namespace, f"ep-{n}"))
            outcomes.append(False)
        except NamespaceQuotaExceeded as error:
            assert f"namespace {namespace!r} already has 2 endpoint(s)" in str(error)
            outcomes.append(True)

    assert outcomes == refused
    assert set(store.served()) == {f"ep-{n}" for n, r in enumerate(refused) if not r}


async def test_a_namespace_at_its_cap_may_change_its_endpoints_and_replace_one_gone() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = ConfigPublisher(store, NS, SHARDS, max_per_namespace=2)
    await publisher.load()
    for inference_id in (A, B):
        await publisher.put_endpoint(inference_id, "completion", body(), owner=("t", inference_id))

    await publisher.put_endpoint(A, "completion", body(max_tokens=7), owner=("t", A))
    with pytest.raises(NamespaceQuotaExceeded):
        await publisher.put_endpoint(C, "completion", body(), owner=("t", C))
    await publisher.delete_endpoint(B)
    await publisher.put_endpoint(C, "completion", body(), owner=("t", C))

    # After a restart the cap counts what the Secrets hold.
    restarted = ConfigPublisher(store, NS, SHARDS, max_per_namespace=2)
    await restarted.load()
    with pytest.raises(NamespaceQuotaExceeded):
        await restarted.put_endpoint(B, "completion", body(), owner=("t", B))
    assert set(store.served()) == {A, C}


async def test_a_changed_shard_count_moves_each_record_to_its_shard_at_the_first_sync() -> None:
    store = FakeConfigStore(SHARDS)
    publisher = await loaded(store)
    ids = [f"ep-{n}" for n in range(12)]
    for inference_id in ids:
        await publisher.put_endpoint(inference_id, "completion", body())
    more = Shards(SHARDS.base_name, 3)
    store.data[more.name(2)] = {}  # the installer creates the new one

    restarted = ConfigPublisher(store, NS, more)
    await restarted.load()
    await restarted.repair()
    await restarted.retain(ids)

    found = {name: {r["inference_id"] for r in Shard.decode(store.data[name]).endpoints}
             for name in more.names()}
    assert found == {name: {i for i in ids if more.of(i) == name} for name in more.names()}
    assert all(restarted.placement(i) is not None for i in ids)
