"""Config mode without Kubernetes: ``ShardSet.apply`` replaces one shard's content
(dropped, new, changed and unchanged endpoints), refuses a shard with an invalid endpoint
as a whole without ever naming its key, reports per-shard generations and readiness, and
loads 5,000 endpoints fast and small."""

from __future__ import annotations

import copy
import gc
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inference_devkit import procfs
from inference_operator.anthropic.client import Upstream
from inference_operator.api.gateway_config import Shard, Shards
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.shards import ShardRejected

SHARDS = Shards("cfg", 2)
KEY = "sk-ant-shard-KEY-4b9d0e2f"


def record(inference_id: str, *, key: str = KEY, rpm: int = 50,
           max_tokens: int = 1024) -> dict[str, Any]:
    """As the operator writes it: what Endpoint.stored() returns."""
    return {"inference_id": inference_id, "task_type": "completion", "service": "anthropic",
            "service_settings": {"api_key": key, "model_id": "claude-sonnet-4-5",
                                 "rate_limit": {"requests_per_minute": rpm}},
            "task_settings": {"max_tokens": max_tokens}}


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gateway = Gateway(Upstream("http://127.0.0.1:9"), shards=SHARDS.names())
    await gateway.start()
    yield gateway
    await gateway.close()


def ids(gateway: Gateway) -> list[str]:
    return [e.inference_id for e in gateway.registry.select(None, None)]


async def test_ready_once_every_shard_is_loaded(gateway: Gateway) -> None:
    assert gateway.readiness.reason() == "waiting for the configuration shard(s) cfg-0, cfg-1"
    assert gateway.health()["config"] == {"cfg-0": None, "cfg-1": None}

    await gateway.shards.apply("cfg-1", Shard(3, (record("a"),)))
    assert gateway.readiness.reason() == "waiting for the configuration shard(s) cfg-0"
    await gateway.shards.apply("cfg-0", Shard.decode(None))  # created empty: generation 0

    assert gateway.readiness.reason() is None
    health = gateway.health()
    assert (health["config"], health["endpoints"], health["replicas"]) == (
        {"cfg-0": 0, "cfg-1": 3}, 1, 1)
    gateway.readiness.begin_draining()
    assert gateway.readiness.reason() == "shutting down"


async def test_a_shard_replaces_what_it_held_and_keeps_unchanged_endpoints(
        gateway: Gateway) -> None:
    await gateway.shards.apply("cfg-0", Shard(1, (record("kept"), record("changed"),
                                                 record("dropped"))))
    await gateway.shards.apply("cfg-1", Shard(1, (record("other"),)))
    registry = gateway.registry
    kept, changed = registry.resolve("kept", None), registry.resolve("changed", None)

    await gateway.shards.apply("cfg-0", Shard(2, (record("kept"), record("new"),
                                                 record("changed", max_tokens=9))))

    assert ids(gateway) == ["changed", "kept", "new", "other"]
    assert gateway.registry.resolve("kept", None) is kept  # its bucket and all
    assert gateway.registry.resolve("changed", None) is not changed
    assert gateway.registry.resolve("changed", None).task_settings.max_tokens == 9
    assert gateway.health()["config"] == {"cfg-0": 2, "cfg-1": 1}


async def test_an_endpoint_moving_between_shards_stays_served(gateway: Gateway) -> None:
    await gateway.shards.apply("cfg-0", Shard(1, (record("moving"),)))
    await gateway.shards.apply("cfg-1", Shard(1, (record("moving"),)))  # added there first
    await gateway.shards.apply("cfg-0", Shard(2, ()))  # then dropped here

    assert ids(gateway) == ["moving"]
    await gateway.shards.apply("cfg-1", Shard(2, ()))
    assert ids(gateway) == []


async def test_an_endpoint_that_leaves_every_shard_leaves_the_metrics(
        gateway: Gateway) -> None:
    def series(inference_id: str) -> list[str]:
        return [sample.name for metric in gateway.metrics.registry.collect()
                for sample in metric.samples
                if sample.labels.get("inference_id") == inference_id]

    await gateway.shards.apply("cfg-0", Shard(1, (record("moving"), record("gone"))))
    for inference_id in ("moving", "gone"):
        gateway.metrics.requests.labels(inference_id, "false", "200").inc()
    await gateway.shards.apply("cfg-1", Shard(1, (record("moving"),)))
    await gateway.shards.apply("cfg-0", Shard(2, ()))

    assert series("gone") == []
    assert series("moving")  # still served, from the other shard: still counted


@pytest.mark.parametrize(("bad", "reason"), [
    ({"service_settings": {"api_key": KEY, "model_id": ""}}, "[model_id] must be a non-empty"),
    ({"service": "openai"}, "Unknown service [openai]"),
    ({"inference_id": "Not_Valid"}, "Invalid inference_id"),
    ({"task_settings": {"max_tokens": KEY}}, "cannot be converted to a [Integer]"),
    ({"extra": KEY}, "settings [extra] unknown"),
])
async def test_an_invalid_endpoint_refuses_the_whole_shard_without_its_key(
        gateway: Gateway, bad: dict[str, Any], reason: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await gateway.shards.apply("cfg-0", Shard(1, (record("a"),)))
    broken = {**record("b"), **copy.deepcopy(bad)}

    with pytest.raises(ShardRejected) as refused:
        await gateway.shards.apply("cfg-0", Shard(2, (record("c"), broken)))

    assert f"endpoint [{broken['inference_id']}]" in str(refused.value)
    assert reason in str(refused.value) and KEY not in str(refused.value)
    assert ids(gateway) == ["a"] and gateway.health()["config"]["cfg-0"] == 1
    assert not [r for r in caplog.records if KEY in r.getMessage()]


async def test_five_thousand_endpoints_in_eight_shards_load_small_and_reload_as_is() -> None:
    shards = Shards("cfg", 8)
    held: dict[str, list[dict[str, Any]]] = {name: [] for name in shards.names()}
    for n in range(5000):
        held[shards.of(f"team-{n}")].append(record(f"team-{n}", key=f"{KEY}-{n:05d}"))
    secrets = {name: Shard(1, tuple(records)).encode() for name, records in held.items()}
    del held
    gateway = Gateway(Upstream("http://127.0.0.1:9"), shards=shards.names())
    await gateway.start()
    try:
        gc.collect()
        rss = procfs.rss_mib(os.getpid())
        for name, data in secrets.items():
            await gateway.shards.apply(name, Shard.decode(data))
        gc.collect()
        grown = procfs.rss_mib(os.getpid()) - rss

        assert gateway.health()["endpoints"] == 5000 and gateway.readiness.reason() is None
        assert grown < 50, f"5,000 endpoints grew the gateway by {grown:.1f} MiB"
        # The same shards again: nothing to build, every endpoint (and its rate-limit
        # bucket) is the one already serving. How long loading takes is bench/'s to measure.
        serving = [gateway.registry.find(f"team-{n}") for n in range(0, 5000, 97)]
        for name, data in secrets.items():
            await gateway.shards.apply(name, Shard.decode(data))
        assert all(gateway.registry.find(f"team-{n}") is endpoint
                   for n, endpoint in zip(range(0, 5000, 97), serving, strict=True))
    finally:
        await gateway.close()


async def test_a_draining_replica_keeps_its_share_of_the_rate_limit(gateway: Gateway) -> None:
    gateway.sharing.set_replicas(3)
    gateway.readiness.begin_draining()
    # It has left the Service's ready endpoints, but still answers for the shutdown delay:
    # taking the full rpm then would let the fleet exceed the limit.
    gateway.sharing.set_replicas(2)
    assert gateway.limiter.replicas == 3
