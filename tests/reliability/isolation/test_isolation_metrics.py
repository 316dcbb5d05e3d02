"""The metrics never tell a caller what it may not see. With callers
checked (``--auth``), ``/metrics`` is served on the metrics listener only, never on the
public one; and a refused request counts under ``_unknown`` whatever id it named, so a
tenant probing ids learns nothing from the counts either."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.gateway_support import (
    ADMIN_TOKEN,
    Gateways,
    RunningEmulator,
    is_es_error,
    seed_body,
)
from inference_operator.gateway.auth.apikeys import hash_key
from inference_operator.gateway.server import GatewayServer

MINE, THEIRS, MISSING = "team-a-chat", "team-b-chat", "team-b-nonexistent"
KEY_A = "key-a-3f9d1c7e5b2a4d6f8e0c"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def tenant_gateway(emulator: RunningEmulator,
                         tmp_path: Path) -> AsyncIterator[GatewayServer]:
    """A standalone gateway with API keys: team A may call MINE only; THEIRS exists."""
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"api_keys": [
        {"id": "team-a", "key_hash": hash_key(KEY_A), "inference_ids": [MINE]}]}))
    gateways = Gateways(emulator.url)
    server = (await gateways.start(auth="api-keys", api_keys_file=keys, metrics_port=0)).server
    async with aiohttp.ClientSession() as admin:
        for inference_id in (MINE, THEIRS):
            async with admin.put(
                    f"http://127.0.0.1:{server.admin_port}/_inference/completion/{inference_id}",
                    json=seed_body(), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as answer:
                assert answer.status == 200, await answer.text()
    yield server
    await gateways.close()


def _api_key(key_id: str, key: str) -> str:
    return "ApiKey " + base64.b64encode(f"{key_id}:{key}".encode()).decode()


async def _call(session: aiohttp.ClientSession, server: GatewayServer, inference_id: str,
                authorization: str) -> int:
    async with session.post(
            f"http://127.0.0.1:{server.port}/_inference/completion/{inference_id}",
            json={"input": "hi"}, headers={"Authorization": authorization}) as answer:
        return answer.status


async def _requests_by_id(session: aiohttp.ClientSession,
                          server: GatewayServer) -> dict[tuple[str, str], float]:
    """inference_gateway_requests_total by (inference_id, status), from the metrics
    listener."""
    async with session.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as answer:
        assert answer.status == 200
        text = await answer.text()
    return {(s.labels["inference_id"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "inference_gateway_requests_total"}


async def test_with_auth_the_public_listener_serves_no_metrics(
        tenant_gateway: GatewayServer, session: aiohttp.ClientSession) -> None:
    public = f"http://127.0.0.1:{tenant_gateway.port}"
    for authorization in ({}, {"Authorization": _api_key("team-a", KEY_A)}):
        async with session.get(public + "/metrics", headers=authorization) as answer:
            body = await answer.json()
            assert answer.status == 400 and is_es_error(body, 400), body
            assert "inference_gateway" not in await answer.text()
    # The probes stay open to the kubelet; the public document no longer lists /metrics.
    for probe in ("/healthz", "/readyz"):
        async with session.get(public + probe) as answer:
            assert answer.status == 200
    async with session.get(public + "/_inference/_openapi",
                           headers={"Authorization": _api_key("team-a", KEY_A)}) as answer:
        assert "/metrics" not in (await answer.json())["paths"]
    # Prometheus scrapes the metrics listener, which serves nothing else.
    metrics = f"http://127.0.0.1:{tenant_gateway.metrics_port}"
    async with session.get(metrics + "/metrics") as answer:
        assert answer.status == 200 and "inference_gateway_endpoints 2.0" in await answer.text()
    async with session.get(metrics + "/_inference") as answer:
        assert answer.status == 404


async def test_a_refused_probe_is_not_counted_under_the_id_it_named(
        tenant_gateway: GatewayServer, session: aiohttp.ClientSession) -> None:
    team_a = _api_key("team-a", KEY_A)
    # Team A probes an id that exists and one that does not: the same 403 for both...
    assert await _call(session, tenant_gateway, THEIRS, team_a) == 403
    assert await _call(session, tenant_gateway, MISSING, team_a) == 403
    # ... and an unknown key the same ids: 401.
    assert await _call(session, tenant_gateway, THEIRS, _api_key("team-a", "wrong")) == 401
    assert await _call(session, tenant_gateway, MISSING, _api_key("team-a", "wrong")) == 401
    # ... and what it may call, counted under its id.
    assert await _call(session, tenant_gateway, MINE, team_a) == 200
    counts = await _requests_by_id(session, tenant_gateway)
    # Every refusal under _unknown: the counts do not tell THEIRS from MISSING.
    assert counts == {("_unknown", "403"): 2, ("_unknown", "401"): 2, (MINE, "200"): 1}
    async with session.get(f"http://127.0.0.1:{tenant_gateway.metrics_port}/metrics") as answer:
        assert THEIRS not in await answer.text()


async def test_without_auth_the_public_listener_keeps_metrics(
        emulator: RunningEmulator, session: aiohttp.ClientSession) -> None:
    """--auth none (every caller may call everything): /metrics stays where earlier
    releases served it, for scrapers configured then, and on the metrics listener."""
    async with Gateways(emulator.url) as gateways:
        server = (await gateways.start(metrics_port=0)).server
        for port in (server.port, server.metrics_port):
            async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                assert answer.status == 200
                assert "inference_gateway_endpoints" in await answer.text()
