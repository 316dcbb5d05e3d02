"""The API key never leaves the gateway: not in a response, log line or metric."""

from __future__ import annotations

import logging

import pytest
from gateway_support import API_KEY, RunningEmulator, RunningGateway, seed_body


async def test_key_never_appears(gateway: RunningGateway, emulator: RunningEmulator,
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # everything, the SDK's debug output included
    seen: list[str] = []

    async def call(method: str, path: str, body=None, admin: bool = False) -> None:
        status, headers, payload = await gateway.call(method, path, body, admin=admin)
        seen.append(f"{status} {headers} {payload}")

    await call("PUT", "/_inference/completion/anthropic_completion",
               seed_body(requests_per_minute=60_000), admin=True)
    await call("PUT", "/_inference/completion/anthropic_completion", seed_body(), admin=True)
    for admin in (False, True):
        await call("GET", "/_inference", admin=admin)
        await call("GET", "/_inference/anthropic_completion", admin=admin)
    await call("POST", "/_inference/anthropic_completion", {"input": "hi"})
    await call("POST", "/_inference/anthropic_completion/_stream", {"input": "hi"})
    # An upstream that quotes the key back must not get it through us.
    emulator.fail({"kind": "error", "status": 401, "message": f"invalid x-api-key {API_KEY}"})
    await call("POST", "/_inference/anthropic_completion", {"input": "hi"})
    emulator.fail({"kind": "stream_error", "after": 1, "error_type": "authentication_error",
                   "message": f"bad key {API_KEY}"})
    await call("POST", "/_inference/anthropic_completion/_stream", {"input": "hi"})
    await call("POST", "/_inference/anthropic_completion/_update",
               {"service_settings": {"api_key": API_KEY + "-2"}}, admin=True)
    await call("DELETE", "/_inference/anthropic_completion", admin=True)
    await call("GET", "/metrics")
    await call("GET", "/healthz")

    assert "<redacted>" in " ".join(seen)
    assert not [s for s in seen if API_KEY in s]
    assert not [r for r in caplog.records if API_KEY in r.getMessage()]
    assert not [r for r in caplog.records if API_KEY in str(r.args)]
    # The gateway did send it upstream, as a bearer token (SDK 2.x).
    assert {e.auth for e in emulator.requests()} == {"bearer"}
