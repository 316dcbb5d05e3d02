"""Where the standalone gateway listens when nobody says: on loopback, because its default
``--auth none`` lets whoever reaches the listener spend every endpoint's key. Exposing it
without checking callers is allowed (trusted networks) but said in the log."""

from __future__ import annotations

import logging

import pytest
from gateway_support import ADMIN_TOKEN, Gateways, RunningEmulator

from inference_operator.cli import gateway as gateway_cli
from inference_operator.cli.main import build_parser


async def _listening(emulator: RunningEmulator, *flags: str) -> list[str]:
    args = build_parser().parse_args(["gateway", "--port", "0", "--admin-port", "0",
                                      "--anthropic-base-url", emulator.url, *flags])
    async with Gateways(emulator.url) as gateways:
        running = await gateways.start(
            config=gateway_cli.gateway_config(args, admin_token=ADMIN_TOKEN))
        server = running.server
        hosts = [site.name for runner in server._runners for site in runner.sites]
        async with running.session.get(f"http://127.0.0.1:{server.port}/healthz") as answer:
            assert answer.status == 200
    return hosts


async def test_the_standalone_gateway_listens_on_loopback_by_default(
        emulator: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    hosts = await _listening(emulator)
    assert hosts and all(name.startswith("http://127.0.0.1:") for name in hosts), hosts
    assert "anybody who reaches" not in caplog.text


async def test_exposing_it_without_caller_checks_is_logged(
        emulator: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        hosts = await _listening(emulator, "--host", "0.0.0.0")
    assert any(name.startswith("http://0.0.0.0:") for name in hosts), hosts
    assert "--auth none on 0.0.0.0: anybody who reaches this address" in caplog.text
