"""Helpers shared by the gateway and emulator tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from inference_operator.emulator.app import Emulator
from inference_operator.emulator.script import FAULTS, Latency
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.server import GatewayServer

ADMIN_TOKEN = "test-admin-token"
API_KEY = "sk-ant-test-KEY-7f3a9c1e5b"
MODEL = "claude-sonnet-4-5"
SEED_BODY: dict[str, Any] = {
    "service": "anthropic",
    "service_settings": {"api_key": API_KEY, "model_id": MODEL},
    "task_settings": {"max_tokens": 1024},
}


def seed_body(requests_per_minute: int | None = None) -> dict[str, Any]:
    """A fresh copy of the seed body, optionally with a rate limit."""
    body = json.loads(json.dumps(SEED_BODY))
    if requests_per_minute is not None:
        body["service_settings"]["rate_limit"] = {"requests_per_minute": requests_per_minute}
    return body


# Fast enough for tests, same shape as the default (1 s .. 5 s).
FAST_RETRY = RetryPolicy(initial_delay=0.02, max_delay=0.1)


@dataclass
class RunningEmulator:
    state: Emulator
    url: str

    def fail(self, *faults: dict[str, Any]) -> None:
        self.state.script.add(FAULTS.validate_python(list(faults)))

    def latency(self, first_token: float = 0.0, per_token: float = 0.0) -> None:
        self.state.script.latency = Latency(first_token=first_token, per_token=per_token)

    def requests(self) -> list[Any]:
        return [e for e in self.state.log if e.path == "/v1/messages"]


@dataclass
class RunningGateway:
    server: GatewayServer
    session: aiohttp.ClientSession

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.server.admin_port}"

    async def call(self, method: str, path: str, body: Any = None, *, admin: bool = False,
                   token: str | None = ADMIN_TOKEN, raw: bytes | None = None
                   ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or text)."""
        headers = {"Authorization": f"Bearer {token}"} if admin and token else {}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = (self.admin if admin else self.public) + path
        async with self.session.request(method, url, data=data, headers=headers) as response:
            text = await response.text()
            try:
                payload = json.loads(text)
            except json.JSONDecodeError:
                payload = text
            return response.status, dict(response.headers), payload

    async def put(self, inference_id: str = "anthropic_completion",
                  body: dict[str, Any] | None = None, task_type: str = "completion") -> Any:
        status, _, payload = await self.call(
            "PUT", f"/_inference/{task_type}/{inference_id}", body or SEED_BODY, admin=True)
        assert status == 200, payload
        return payload


GatewayFactory = Callable[..., Awaitable[RunningGateway]]


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event", "message"), fields.get("data", "")))
    return events
