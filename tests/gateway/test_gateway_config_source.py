"""Config mode against the real kube-apiserver: the gateway reads its endpoints from the
shard Secrets (api/gateway_config.py) by list and watch, follows every change within
seconds, keeps serving through a deleted or malformed shard, and needs no more than
get/list/watch on the shards by name; ``--peers-service`` counts the ready endpoints of
the gateways' Service. The gateway runs in-process with a kubeconfig; the emulator plays
Anthropic."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gateway_support import GatewayFactory, RunningEmulator, RunningGateway, gateway_process, metric
from kube_support import BASE, KEY_A, KEY_B, SHARDS, ShardWriter, connect_as, record, shard_reader
from lightkube import ApiError, AsyncClient
from lightkube.resources import core_v1
from lightkube.resources.core_v1 import Secret
from lightkube.resources.discovery_v1 import EndpointSlice

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.loopback import free_port
from inference_devkit.waiting import poll_async
from inference_operator.api.gateway_config import DATA_KEY
from resources import secret

COMPLETION = "/_inference/completion/{}"




async def eventually(check: Callable[[], Coroutine[Any, Any, Any]], seconds: float = 5.0,
                     message: str = "condition not met") -> Any:
    return await poll_async(check, timeout=seconds, interval=0.05, message=message)


async def complete(gateway: RunningGateway, inference_id: str) -> int:
    status, _, _ = await gateway.call("POST", COMPLETION.format(inference_id), {"input": "hi"})
    return status


async def test_ready_once_every_shard_exists_then_serves_and_follows_changes(
        config_gateway: GatewayFactory, shards: ShardWriter, emulator: RunningEmulator) -> None:
    emulator.state.api_keys = (KEY_A, KEY_B)
    await shards.write(0, 1, record("alpha"), record("beta"))
    gateway = await config_gateway()

    async def readiness() -> tuple[int, Any]:
        status, _, body = await gateway.call("GET", "/readyz")
        return status, body

    status, body = await readiness()
    assert status == 503 and body["reason"].endswith(SHARDS.name(1)), body
    await shards.put(1, None)  # created empty, as the installer does: generation 0
    await eventually(lambda: _is(readiness(), 200), message="not ready with every shard")

    assert await complete(gateway, "alpha") == 200
    _, _, health = await gateway.call("GET", "/healthz")
    assert health["config"] == {SHARDS.name(0): 1, SHARDS.name(1): 0}
    assert (health["endpoints"], health["replicas"]) == (2, 1)
    assert gateway.server.admin_port == 0  # no admin listener was started

    # A new key is used within 5 s (the emulator tells which of its keys came).
    await shards.write(0, 2, record("alpha", KEY_B), record("beta"))

    async def new_key_used() -> bool:
        await complete(gateway, "alpha")
        return emulator.requests()[-1].key_index == 1

    await eventually(new_key_used, message="the changed key was not used")
    # A removed endpoint answers 404 within 5 s; the other stays.
    await shards.write(0, 3, record("alpha", KEY_B))
    await eventually(lambda: _is(complete(gateway, "beta"), 404), message="beta still served")
    assert await complete(gateway, "alpha") == 200
    # An endpoint added to the other shard is served too.
    await shards.write(1, 1, record("gamma"))
    await eventually(lambda: _is(complete(gateway, "gamma"), 200), message="gamma not served")
    _, _, health = await gateway.call("GET", "/healthz")
    assert health["config"] == {SHARDS.name(0): 3, SHARDS.name(1): 1}


async def test_a_deleted_or_malformed_shard_keeps_what_was_served(
        config_gateway: GatewayFactory, shards: ShardWriter,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await shards.write(0, 1, record("alpha"))
    await shards.write(1, 1, record("beta"))
    gateway = await config_gateway()
    await eventually(lambda: _is(complete(gateway, "beta"), 200), message="never served")

    await shards.delete(1)

    async def deletion_seen() -> bool:
        return any("was deleted" in r.getMessage() for r in caplog.records)

    await eventually(deletion_seen, message="the deletion was not seen")
    assert await complete(gateway, "beta") == 200
    await shards.put(1, None)  # recreated empty by the installer: not yet written

    async def recreation_seen() -> bool:
        return any("has no endpoints.json" in r.getMessage() for r in caplog.records)

    await eventually(recreation_seen, message="the recreation was not seen")
    assert await complete(gateway, "beta") == 200

    broken = record("alpha")
    broken["service_settings"]["model_id"] = ""
    await shards.write(0, 2, record("new"), broken)  # one invalid endpoint: refused whole
    await shards.put(1, {DATA_KEY: base64.b64encode(b"{not json").decode()})

    async def both_refused() -> bool:
        return await metric(gateway.session, gateway.public,
                            "inference_gateway_config_rejected_total",
                            f'shard="{SHARDS.name(0)}"') == 1 and await metric(
            gateway.session, gateway.public, "inference_gateway_config_rejected_total",
            f'shard="{SHARDS.name(1)}"') == 1

    await eventually(both_refused, message="the malformed shards were not refused")
    assert [await complete(gateway, i) for i in ("alpha", "beta", "new")] == [200, 200, 404]
    _, _, health = await gateway.call("GET", "/healthz")
    assert health["config"] == {SHARDS.name(0): 1, SHARDS.name(1): 1}
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(SHARDS.name(0) in m and "endpoint [alpha]" in m for m in refusals), refusals
    assert any(SHARDS.name(1) in m for m in refusals), refusals
    assert not [r for r in caplog.records if KEY_A in r.getMessage()]

    await shards.write(0, 3, record("new"))  # fixed: served again at once
    await eventually(lambda: _is(complete(gateway, "new"), 200), message="fix not served")


async def test_the_command_in_config_mode(shards: ShardWriter, control_plane: Any,
                                         emulator: RunningEmulator, namespace: str,
                                         tmp_path: Path) -> None:
    """``inference-operator gateway --config-secret`` as a process, with KUBECONFIG."""
    await shards.write(0, 1, record("alpha"))
    await shards.write(1, 1)
    port = free_port()
    process = gateway_process(
        tmp_path / "gateway.log", "--host", "127.0.0.1", "--port", str(port),
        "--config-secret", BASE, "--config-shards", str(SHARDS.count), "--namespace", namespace,
        "--anthropic-base-url", emulator.url, "--shutdown-delay", "0",
        env={"KUBECONFIG": str(control_plane.kubeconfig)},
        health_url=f"http://127.0.0.1:{port}/readyz")
    await asyncio.to_thread(process.start)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}" + COMPLETION.format("alpha"),
                                    json={"input": "hi"}) as r:
                assert r.status == 200, await r.text()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert (await r.json())["config"] == {SHARDS.name(0): 1, SHARDS.name(1): 1}
    finally:
        await asyncio.to_thread(process.stop)
    assert process.popen is not None and process.popen.returncode == 0, process.log_tail()


async def test_resource_names_are_enough_and_nothing_else_is_readable(
        config_gateway: GatewayFactory, shards: ShardWriter, kubectl: Kubectl, namespace: str,
        service_account_kubeconfig: Callable[[str, str], Path],
        caplog: pytest.LogCaptureFixture) -> None:
    await shards.write(0, 1, record("alpha"))
    await shards.write(1, 1)
    other = secret("unrelated", KEY_B, data_key="api-key")
    await shards.api.create(Secret.from_dict(other), namespace=namespace)
    kubeconfig = await asyncio.to_thread(service_account_kubeconfig, namespace, "gateway")
    # Started before its Role exists: refused, retried with backoff, then served.
    gateway = await config_gateway(kubeconfig=kubeconfig)

    async def refused() -> bool:
        return any("answered 403" in r.getMessage() for r in caplog.records)

    await eventually(refused, message="the missing permission was not reported")
    assert (await gateway.call("GET", "/readyz"))[0] == 503
    await asyncio.to_thread(kubectl.apply, shard_reader(namespace), namespace)
    await eventually(lambda: _is(complete(gateway, "alpha"), 200), 15, "never served")
    await shards.write(0, 2, record("alpha"), record("beta"))  # the watch is allowed too
    await eventually(lambda: _is(complete(gateway, "beta"), 200), message="watch not allowed")

    identity = await connect_as(kubeconfig)

    async def listed(**selector: Any) -> list[Secret]:
        return [secret async for secret in identity.list(Secret, namespace=namespace,
                                                         **selector)]

    try:
        assert (await identity.get(Secret, SHARDS.name(0), namespace=namespace)).data
        for call in (identity.get(Secret, "unrelated", namespace=namespace), listed(),
                     listed(fields={"metadata.name": "unrelated"})):
            with pytest.raises(ApiError) as denied:
                await call
            assert denied.value.status.code == 403
    finally:
        await identity.close()


async def test_peers_share_the_rate_limit_by_ready_endpoints(
        config_gateway: GatewayFactory, admin: AsyncClient, shards: ShardWriter,
        namespace: str) -> None:
    await shards.write(0, 1, record("alpha"))
    await shards.write(1, 1)
    # No selector: its slices are ours to write.
    await admin.create(core_v1.Service.from_dict({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "gateways"},
        "spec": {"ports": [{"port": 9200}]}}), namespace=namespace)
    gateway = await config_gateway(peers_service="gateways")

    async def replicas() -> int:
        _, _, health = await gateway.call("GET", "/healthz")
        return health["replicas"]

    async def interval() -> float:
        return gateway.server.gateway.registry.resolve("alpha", None).bucket.interval

    await eventually(lambda: _is(complete(gateway, "alpha"), 200), message="never served")
    assert (await replicas(), await interval()) == (1, 0.01)

    def endpoint_slice(name: str, *endpoints: tuple[str, bool | None]) -> EndpointSlice:
        return EndpointSlice.from_dict({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "gateways"}},
            "addressType": "IPv4", "ports": [{"port": 9200}],
            "endpoints": [{"addresses": [address],
                           **({} if ready is None else {"conditions": {"ready": ready}})}
                          for address, ready in endpoints]})

    # Ready true or null (null is ready), one not ready; a second slice repeats one.
    await admin.create(endpoint_slice(
        "gateways-a", ("10.213.0.1", True), ("10.213.0.2", None), ("10.213.0.3", False),
        ("10.213.0.4", True)), namespace=namespace)
    await eventually(lambda: _is(replicas(), 3), message="not 3 replicas")
    assert await interval() == pytest.approx(0.03)  # 6000 rpm shared by three
    await admin.create(endpoint_slice(
        "gateways-b", ("10.213.0.1", True), ("10.213.0.5", False)), namespace=namespace)

    await admin.replace(endpoint_slice(
        "gateways-a", ("10.213.0.1", True), ("10.213.0.2", False), ("10.213.0.3", False),
        ("10.213.0.4", True)), namespace=namespace)
    await eventually(lambda: _is(replicas(), 2), message="not 2 replicas")
    assert await interval() == pytest.approx(0.02)
    await admin.delete(EndpointSlice, "gateways-a", namespace=namespace)
    await eventually(lambda: _is(replicas(), 1), message="not 1 replica")  # b's one
    assert await interval() == pytest.approx(0.01)
    assert await metric(gateway.session, gateway.public, "inference_gateway_replicas") == 1


async def _is(value: Coroutine[Any, Any, Any], expected: Any) -> bool:
    got = await value
    return (got[0] if isinstance(got, tuple) else got) == expected
