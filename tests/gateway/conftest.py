"""Fixtures for the gateway and emulator tests: both run in-process on 127.0.0.1 with
ephemeral ports; no Kubernetes is involved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gateway_support import (
    ADMIN_TOKEN,
    FAST_RETRY,
    GatewayFactory,
    RunningEmulator,
    RunningGateway,
)

from inference_operator.emulator.app import Emulator, build_app
from inference_operator.gateway.server import GatewayConfig, GatewayServer


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    state = Emulator()
    runner = web.AppRunner(build_app(state), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield RunningEmulator(state, f"http://127.0.0.1:{runner.addresses[0][1]}")
    await runner.cleanup()


@pytest.fixture
async def make_gateway(emulator: RunningEmulator) -> AsyncIterator[GatewayFactory]:
    started: list[RunningGateway] = []
    session = aiohttp.ClientSession()

    async def make(**overrides: Any) -> RunningGateway:
        config = GatewayConfig(**{
            "admin_token": ADMIN_TOKEN, "anthropic_base_url": emulator.url,
            "host": "127.0.0.1", "port": 0, "admin_port": 0, "require_sync": False,
            "retry": FAST_RETRY, **overrides,
        })
        server = GatewayServer(config)
        await server.start()
        running = RunningGateway(server, session)
        started.append(running)
        return running

    yield make
    for running in started:
        await running.server.stop()
    await session.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> RunningGateway:
    return await make_gateway()


