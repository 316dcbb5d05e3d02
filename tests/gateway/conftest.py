"""Fixtures for the gateway and emulator tests: both run in-process on 127.0.0.1 with
ephemeral ports; the configuration Secrets and caller access use the session's API
server."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from auth_support import auth_gateway, reviewer, teams  # noqa: F401  (the auth tests' fixtures)
from gateway_support import (
    ADMIN_TOKEN,
    GatewayFactory,
    Gateways,
    RunningEmulator,
    RunningGateway,
    start_emulator,
)
from kube_support import BASE, SHARDS, ShardWriter, connect_as
from lightkube import AsyncClient

from inference_devkit.devstack.processes import Stack


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator()
    yield running
    assert running.runner is not None
    await running.runner.cleanup()


@pytest.fixture
async def make_gateway(emulator: RunningEmulator) -> AsyncIterator[GatewayFactory]:
    async with Gateways(emulator.url) as gateways:
        yield gateways.start


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> RunningGateway:
    return await make_gateway()


@pytest.fixture
async def process_stack(emulator: RunningEmulator, tmp_path: Path) -> AsyncIterator[Stack]:
    """Where ``start_gateway`` runs a real gateway process against the emulator; whatever
    it started is stopped at the end."""
    stack = Stack(tmp_path, api_keys=(), admin_token=ADMIN_TOKEN, anthropic_base_url=emulator.url)
    yield stack
    await asyncio.to_thread(stack.stop)


# For the tests of the configuration Secrets and caller access, against the session's
# real API server (tests/conftest.py).
@pytest.fixture
async def admin(control_plane: Any) -> AsyncIterator[AsyncClient]:
    api = await connect_as(control_plane.kubeconfig)
    yield api
    await api.close()


@pytest.fixture
def shards(admin: AsyncClient, namespace: str) -> ShardWriter:
    return ShardWriter(admin, namespace)


@pytest.fixture
async def config_gateway(emulator: RunningEmulator, control_plane: Any,
                         namespace: str) -> AsyncIterator[GatewayFactory]:
    """Factory: a gateway in config mode on ``namespace``'s shards, as the cluster admin
    unless given another kubeconfig."""
    async with Gateways(emulator.url) as gateways:
        async def start(kubeconfig: Path | None = None, **overrides: Any) -> RunningGateway:
            return await gateways.start(
                kube=functools.partial(connect_as, kubeconfig or control_plane.kubeconfig),
                admin_token="", config_secret=BASE, config_shards=SHARDS.count,
                namespace=namespace, **overrides)

        yield start

