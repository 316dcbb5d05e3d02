"""Helpers shared by the gateway and emulator tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from openai.types.chat import ChatCompletionChunk
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from inference_devkit.devstack.processes import Service, Stack
from inference_operator.emulator.app import Emulator, build_app
from inference_operator.emulator.script import FAULTS, Latency
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.server import GatewayConfig, GatewayServer

ADMIN_TOKEN = "test-admin-token"
API_KEY = "fake-key-test-KEY-7f3a9c1e5b"
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
    runner: web.AppRunner | None = field(default=None, repr=False)

    def connections(self) -> int:
        """Connections open to the emulator now: the gateway's upstream connections."""
        assert self.runner is not None and self.runner.server is not None
        return len(self.runner.server.connections)

    def fail(self, *faults: dict[str, Any]) -> None:
        self.state.script.add(FAULTS.validate_python(list(faults)))

    def latency(self, first_token: float = 0.0, per_token: float = 0.0) -> None:
        self.state.script.latency = Latency(first_token=first_token, per_token=per_token)

    def requests(self) -> list[Any]:
        return [e for e in self.state.log if e.path == "/v1/messages"]


async def start_emulator() -> RunningEmulator:
    state = Emulator()
    runner = web.AppRunner(build_app(state), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return RunningEmulator(state, f"http://127.0.0.1:{runner.addresses[0][1]}", runner)


def gateway_config(upstream_url: str, **overrides: Any) -> GatewayConfig:
    """The tests' gateway: loopback, ephemeral ports, ready at once, fast retries; a
    metrics listener (also loopback) only when asked, with ``metrics_port=0``."""
    return GatewayConfig(**{
        "admin_token": ADMIN_TOKEN, "anthropic_base_url": upstream_url,
        "host": "127.0.0.1", "port": 0, "admin_port": 0,
        "metrics_host": "127.0.0.1",
        "retry": FAST_RETRY, **overrides,
    })


@dataclass
class RunningGateway:
    server: GatewayServer  # started: its ports are known
    session: aiohttp.ClientSession
    public: str = field(init=False)
    admin: str = field(init=False)
    metrics: str = field(init=False)  # where /metrics is: its own listener, else the public

    def __post_init__(self) -> None:
        self.public = f"http://127.0.0.1:{self.server.port}"
        self.admin = f"http://127.0.0.1:{self.server.admin_port}"
        self.metrics = metrics_url(self.server)

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


class Gateways:
    """One of the tests' two ways to start a gateway: in this process, a GatewayServer on
    loopback with ephemeral ports (``gateway_config``); the other is the real process
    (``start_gateway``). Whatever it started stops on ``close()``, or on leaving its
    ``async with``."""

    def __init__(self, upstream_url: str, session: aiohttp.ClientSession | None = None
                 ) -> None:
        """``session``: the clients' (default: one of its own, closed with it)."""
        self._upstream_url = upstream_url
        self._session = session
        self._own_session = session is None
        self._started: list[RunningGateway] = []

    async def start(self, *, config: GatewayConfig | None = None,
                    kube: Callable[[], Awaitable[Any]] | None = None,
                    tracer_provider: Any = None, **overrides: Any) -> RunningGateway:
        """``config``: instead of ``gateway_config(upstream, **overrides)``; ``kube``: how
        it reaches the API server, ``tracer_provider``: where its spans go (GatewayServer's)."""
        server = GatewayServer(config or gateway_config(self._upstream_url, **overrides),
                               kube=kube, tracer_provider=tracer_provider)
        await server.start()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._started.append(RunningGateway(server, self._session))
        return self._started[-1]

    async def close(self) -> None:
        for running in self._started:
            await running.server.stop()
        self._started.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Gateways:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE body. Lines end at "\n" only, as the gateway writes
    them (SSE allows no other separator inside a line; str.splitlines() would also split
    at U+0085 or U+2028, which JSON data may hold unescaped: fuzzing found that)."""
    events = []
    for block in text.strip("\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields.get("event", "message"), fields.get("data", "")))
    return events


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    """A chat answer's text, from its chunks."""
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tool_calls_of(chunks: list[ChatCompletionChunk]) -> list[dict[str, str]]:
    """The tool calls, put together from their deltas as OpenAI clients do (by index)."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            into = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            into["id"] += call.id or ""
            if call.function is not None:
                into["name"] += call.function.name or ""
                into["arguments"] += call.function.arguments or ""
    return [calls[index] for index in sorted(calls)]


def is_es_error(payload: Any, status: int | None = None) -> bool:
    """``{"error":{"root_cause":[{type,reason},…],"type","reason"},"status":N}``."""
    if not isinstance(payload, dict) or set(payload) != {"error", "status"}:
        return False
    error = payload["error"]
    if not isinstance(error, dict):
        return False
    causes = error.get("root_cause")
    return (isinstance(payload["status"], int) and status in (None, payload["status"])
            and isinstance(error.get("type"), str) and isinstance(error.get("reason"), str)
            and isinstance(causes, list) and len(causes) > 0
            and all(isinstance(c, dict) and isinstance(c.get("type"), str)
                    and isinstance(c.get("reason"), str) for c in causes))


def is_unified_error(payload: Any) -> bool:
    """OpenAI's ``{"error":{"code","message","type"[,"param"]}}`` (the chat action's)."""
    if not isinstance(payload, dict) or set(payload) != {"error"}:
        return False
    error = payload["error"]
    return (isinstance(error, dict) and {"code", "message", "type"} <= set(error)
            <= {"code", "message", "type", "param"}
            and all(isinstance(value, str) for value in error.values()))


def answer_problems(status: int, headers: Mapping[str, Any], body: bytes, *,
                    upstream_fault: bool = False, chat: bool = False) -> list[str]:
    """What is wrong with an answer by the rules every answer must follow: the product
    header, no 5xx, no traceback, every error (JSON, or SSE ``event: error``) in the
    Elasticsearch shape with the HTTP status (or, inside a 200 stream, its own).
    ``headers`` as any client gives them: any letter case, values or lists of values.
    ``upstream_fault``: a 502 (the upstream failed) is the expected answer. ``chat``: a
    chat_completion request, whose action errors are OpenAI-shaped instead (the REST
    layer's and access refusals keep Elasticsearch's)."""

    def shaped(payload: Any, status: int | None) -> bool:
        return is_es_error(payload, status) or (chat and is_unified_error(payload))

    headers = {k.lower(): v[0] if isinstance(v, list) else v for k, v in headers.items()}
    problems = []
    if headers.get("x-elastic-product") != "Elasticsearch":
        problems.append("no X-Elastic-Product: Elasticsearch header")
    if status >= 500 and not (upstream_fault and status == 502):
        problems.append(f"server error {status}")
    if b"Traceback (most recent call last)" in body or b'File "/' in body:
        problems.append("a traceback in the body")
    if headers.get("content-type", "").startswith("text/event-stream"):
        errors = [data for name, data in sse_events(body.decode(errors="replace"))
                  if name == "error"]
        if status >= 400 and len(errors) != 1:
            problems.append(f"{status} stream without exactly one error event")
        for data in errors:
            try:
                payload = json.loads(data)
            except ValueError:
                payload = None
            if not shaped(payload, status if status >= 400 else None):
                problems.append(f"error event not in the Elasticsearch shape: {data[:200]}")
    elif status >= 400:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not shaped(payload, status):
            problems.append(f"{status} not in the Elasticsearch shape: {body[:200]!r}")
    return problems


class ThreadedStack:
    """The emulator and a gateway on an event loop in a thread of their own, for
    synchronous clients (schemathesis, hypothesis) that would block a test's loop."""

    def __init__(self, kube: Callable[[], Awaitable[Any]] | None = None,
                 **overrides: Any) -> None:
        """``kube``: how the gateway reaches the API server (GatewayServer's)."""
        self._overrides = overrides
        self._kube = kube
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="gateway-stack")
        self.emulator: RunningEmulator | None = None
        self.gateways: Gateways | None = None
        self.server: GatewayServer | None = None

    def run(self, work: Awaitable[Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)  # type: ignore[arg-type]

    def __enter__(self) -> ThreadedStack:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.emulator = await start_emulator()
        self.gateways = Gateways(self.emulator.url)
        self.server = (await self.gateways.start(kube=self._kube, **self._overrides)).server

    def __exit__(self, *_: object) -> None:
        self.run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        if self.gateways is not None:
            await self.gateways.close()
        if self.emulator is not None and self.emulator.runner is not None:
            await self.emulator.runner.cleanup()

    @property
    def public(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def admin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.admin_port}"

    @property
    def metrics(self) -> str:
        assert self.server is not None
        return metrics_url(self.server)


def metrics_url(server: GatewayServer) -> str:
    """Where a started gateway serves /metrics: its metrics listener if it has one, else
    its public listener (--auth none only)."""
    return f"http://127.0.0.1:{server.metrics_port or server.port}"


# The in-process test gateway's settings (gateway_config), as the process's flags; and
# no shutdown delay, so stopping one (SIGTERM) takes no longer than its requests do.
PROCESS_FLAGS = ("--retry-initial-delay", "0.02",
                 "--retry-max-delay", "0.1")


async def start_gateway(stack: Stack, *extra: str) -> Service:
    """The tests' other way to start a gateway (besides ``Gateways``): ``inference-operator
    gateway`` as a real process (for SIGKILL, RSS, the command's own behaviour), on the
    stack's ports: started again on the same stack, it comes back where it was."""
    return await asyncio.to_thread(stack.start, stack.gateway(*PROCESS_FLAGS, *extra))


def gateway_process(log: Path, *argv: str, env: dict[str, str | None] | None = None,
                    health_url: str | None = None) -> Service:
    """The same real process with exactly ``argv``, as the installed
    ``inference-operator`` command a user runs; ``start()`` it (it waits for
    ``health_url`` if given)."""
    beside = Path(sys.executable).with_name("inference-operator")
    command = str(beside) if beside.exists() else shutil.which("inference-operator")
    assert command, "the inference-operator command is not installed"
    return Service("gateway", ["gateway", *argv], log, env=env or {}, health_url=health_url,
                   program=(command,))


async def metric(session: aiohttp.ClientSession, base: str, name: str,
                 labels: str = "") -> float:
    """One sample of ``GET /metrics``, e.g. ``metric(s, url, "x", 'listener="public"')``."""
    async with session.get(base + "/metrics") as response:
        text = await response.text()
    (wanted,) = _samples(f"{name}{{{labels}}} 0\n")
    for sample in _samples(text):
        if (sample.name, sample.labels) == (wanted.name, wanted.labels):
            return sample.value
    raise KeyError(f"{name}{{{labels}}}")


def _samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


async def raw_exchange(port: int, chunks: list[bytes], *, gap: float = 0.0,
                       limit: float = 15.0) -> tuple[bytes, float]:
    """Send ``chunks`` on a fresh connection (``gap`` seconds apart, stopping when the
    gateway closes it), then read until it closes: (everything read, seconds from
    connecting to the close). Bounded by ``limit``: TimeoutError if still open then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def send() -> None:
        for index, chunk in enumerate(chunks):
            if index and gap:
                await asyncio.sleep(gap)
            if writer.is_closing():
                return
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                return

    sender = asyncio.create_task(send())
    received = b""
    try:
        async with asyncio.timeout(limit):
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    break
                if not data:
                    break
                received += data
        return received, time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()


def split_http(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTP/1.1 answer read off the socket."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body
