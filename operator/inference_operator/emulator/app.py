"""The emulator's HTTP server: Anthropic's ``/v1/messages`` and ``/v1/models`` plus a
small control API under ``/_emulator/`` for scripting faults, latency and reading the
request log. See docs/emulator.md."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from inference_operator.emulator import wire
from inference_operator.emulator.limits import Admission, Organisation, OrgLimits
from inference_operator.emulator.script import (
    FAULTS,
    DropFault,
    ErrorFault,
    Latency,
    MalformedFault,
    Script,
    StreamDropFault,
    StreamErrorFault,
    StreamTruncateFault,
)

LOG_LIMIT = 10_000
# Headers that carry the key; the log records which one was used, never its value.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key"})


@dataclass
class LoggedRequest:
    seq: int
    received_at: float  # time.monotonic(): comparable across processes on one host
    method: str
    path: str
    auth: str | None  # "x-api-key", "bearer" or None
    key_index: int | None  # position in --api-key, when keys are configured
    headers: dict[str, str]
    body: Any = None
    stream: bool = False
    outcome: str = "pending"
    finished_at: float | None = None


@dataclass
class Emulator:
    api_keys: Sequence[str] = ()
    models: Sequence[str] = ()
    script: Script = field(default_factory=lambda: Script(Latency()))
    log: deque[LoggedRequest] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    limits: OrgLimits | None = None  # None: nothing is rate limited
    organisation: Organisation | None = field(init=False, default=None)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.set_limits(self.limits)

    def set_limits(self, limits: OrgLimits | None) -> None:
        """New limits, every bucket full."""
        self.limits = limits
        self.organisation = Organisation(limits) if limits is not None else None

    def knows_model(self, model_id: str) -> bool:
        # With no --model list every Claude-looking id exists, so examples just work.
        return model_id in self.models if self.models else model_id.startswith("claude-")

    def record(self, request: web.Request, auth: str | None,
               key_index: int | None) -> LoggedRequest:
        self._seq += 1
        entry = LoggedRequest(
            seq=self._seq,
            received_at=time.monotonic(),
            method=request.method,
            path=request.path,
            auth=auth,
            key_index=key_index,
            headers={k.lower(): v for k, v in request.headers.items()
                     if k.lower() not in _SECRET_HEADERS},
        )
        self.log.append(entry)
        return entry

    def authenticate(self, request: web.Request) -> tuple[str | None, int | None, bool]:
        """(which header carried a key, its index in --api-key, accepted)."""
        key, auth = request.headers.get("x-api-key"), "x-api-key"
        if not key:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key, auth = (token.strip(), "bearer") if scheme.lower() == "bearer" else (None, None)
        if not key:
            return None, None, False
        if not self.api_keys:
            return auth, None, True
        index = self.api_keys.index(key) if key in self.api_keys else None
        return auth, index, index is not None


EMULATOR = web.AppKey("emulator", Emulator)


def _error(status: int, message: str, error_type: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    body = wire.error_body(status, message, error_type)
    return web.json_response(
        body, status=status, headers={"request-id": body["request_id"], **(headers or {})}
    )


def _auth_error(request: web.Request,
                emulator: Emulator) -> tuple[LoggedRequest, web.Response | None]:
    auth, index, ok = emulator.authenticate(request)
    entry = emulator.record(request, auth, index)
    if ok:
        return entry, None
    entry.outcome = "401"
    message = "invalid x-api-key" if auth else "x-api-key header is required"
    return entry, _error(401, message)


async def messages(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    entry, denied = _auth_error(request, emulator)
    if denied:
        return denied
    try:
        entry.body = await request.json()
        body = wire.MessagesRequest.model_validate(entry.body)
    except (json.JSONDecodeError, ValidationError) as error:
        entry.outcome = "400"
        return _error(400, _describe(error))
    if problem := body.problem():
        entry.outcome = "400"
        return _error(400, problem)
    entry.stream = body.stream
    if not emulator.knows_model(body.model):
        entry.outcome = "404"
        return _error(404, f"model: {body.model}")
    reply = wire.Reply.for_request(body)
    admission = None
    if emulator.organisation is not None:
        decision = emulator.organisation.admit(body.model, reply.input_tokens, body.max_tokens)
        if not isinstance(decision, Admission):
            entry.outcome = str(decision.status)
            return web.json_response(decision.body, status=decision.status, headers={
                "request-id": decision.body["request_id"], **decision.headers})
        admission = decision
    limit_headers = admission.headers if admission is not None else {}

    fault = emulator.script.take()
    latency = emulator.script.latency
    try:
        await asyncio.sleep(latency.first_token)
        if isinstance(fault, ErrorFault):
            entry.outcome = str(fault.status)
            headers = {**limit_headers, **fault.headers}
            if fault.retry_after is not None:
                headers["retry-after"] = fault.retry_after
            return _error(fault.status, fault.message, fault.error_type, headers)
        if isinstance(fault, DropFault):
            entry.outcome = "dropped"
            return _drop(request)
        if isinstance(fault, MalformedFault):
            entry.outcome = "malformed"
            return web.Response(body=fault.body.encode(), content_type=fault.content_type,
                                headers={"request-id": wire.next_id("req")})
        if not body.stream:
            await asyncio.sleep(latency.per_token * reply.output_tokens)
            entry.outcome = "200"
            return web.json_response(reply.message(), headers={
                "request-id": wire.next_id("req"), **limit_headers})
        return await _stream(request, entry, reply, latency, fault, limit_headers)
    except asyncio.CancelledError:
        # The client went away (handler cancellation is on): tests assert on this.
        if entry.outcome == "pending":
            entry.outcome = "cancelled"
        raise
    finally:
        entry.finished_at = time.monotonic()
        if admission is not None:
            # What was not generated is refunded (a failed answer: all of it).
            admission.settle(reply.output_tokens if entry.outcome == "200" else 0)


async def _stream(request: web.Request, entry: LoggedRequest, reply: wire.Reply,
                  latency: Latency,
                  fault: StreamErrorFault | StreamDropFault | StreamTruncateFault | None,
                  limit_headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "request-id": wire.next_id("req"),
        **limit_headers,
    })
    await response.prepare(request)
    await response.write(b"".join(reply.stream_head()))
    for index, delta in enumerate(reply.stream_deltas()):
        if fault is not None and index == fault.after:
            return await _break_stream(request, response, entry, fault)
        if index:
            await asyncio.sleep(latency.per_token)
        await response.write(delta)
    if fault is not None:  # ``after`` beyond the reply's length: break at the end
        return await _break_stream(request, response, entry, fault)
    await response.write(b"".join(reply.stream_tail()))
    await response.write_eof()
    entry.outcome = "200"
    return response


async def _break_stream(request: web.Request, response: web.StreamResponse,
                        entry: LoggedRequest,
                        fault: StreamErrorFault | StreamDropFault | StreamTruncateFault
                        ) -> web.StreamResponse:
    if isinstance(fault, StreamDropFault):
        entry.outcome = "stream dropped"
        return _drop(request)
    if isinstance(fault, StreamTruncateFault):
        entry.outcome = "stream truncated"
        await response.write_eof()  # a clean end of the body, no message_stop
        return response
    entry.outcome = f"stream error {fault.error_type}"
    error = wire.error_body(500, fault.message, fault.error_type)
    await response.write(wire.sse("error", error))
    await response.write_eof()
    return response


def _drop(request: web.Request) -> web.StreamResponse:
    # Abort the socket: the client sees a connection reset, as with a real network fault.
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


# Where the real API words a pydantic error its own way (e.g. a string tool_choice).
_MESSAGES = {
    "model_attributes_type": "Input should be an object",
    "model_type": "Input should be an object",
}


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {_MESSAGES.get(e['type'], e['msg'])}"
            for e in error.errors()
        )
    return "The request body is not valid JSON."


async def get_model(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    entry, denied = _auth_error(request, emulator)
    if denied:
        return denied
    model_id = request.match_info["model_id"]
    if not emulator.knows_model(model_id):
        entry.outcome = "404"
        return _error(404, f"model: {model_id}")
    entry.outcome = "200"
    return web.json_response(wire.model_info(model_id))


async def list_models(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    entry, denied = _auth_error(request, emulator)
    if denied:
        return denied
    entry.outcome = "200"
    data = [wire.model_info(m) for m in emulator.models]
    return web.json_response({
        "data": data, "has_more": False,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    })


async def add_faults(request: web.Request) -> web.Response:
    try:
        faults = FAULTS.validate_python(await request.json())
    except (json.JSONDecodeError, ValidationError) as error:
        return web.json_response({"error": _describe(error)}, status=400)
    script = request.app[EMULATOR].script
    script.add(faults)
    return web.json_response({"pending": script.pending()})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[EMULATOR].script.clear()
    return web.json_response({"pending": 0})


async def get_latency(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR].script.latency.model_dump())


async def set_latency(request: web.Request) -> web.Response:
    try:
        latency = Latency.model_validate(await request.json())
    except (json.JSONDecodeError, ValidationError) as error:
        return web.json_response({"error": _describe(error)}, status=400)
    request.app[EMULATOR].script.latency = latency
    return web.json_response(latency.model_dump())


async def get_limits(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    if emulator.organisation is None:
        return web.json_response({"limits": None, "classes": {}})
    return web.json_response({"limits": emulator.organisation.limits.model_dump(),
                              "classes": emulator.organisation.state()})


async def set_limits(request: web.Request) -> web.Response:
    try:
        limits = OrgLimits.model_validate(await request.json())
    except (json.JSONDecodeError, ValidationError) as error:
        return web.json_response({"error": _describe(error)}, status=400)
    request.app[EMULATOR].set_limits(limits)
    return await get_limits(request)


async def clear_limits(request: web.Request) -> web.Response:
    request.app[EMULATOR].set_limits(None)
    return await get_limits(request)


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response([asdict(entry) for entry in request.app[EMULATOR].log])


async def clear_requests(request: web.Request) -> web.Response:
    request.app[EMULATOR].log.clear()
    return web.json_response([])


async def reset(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    emulator.script = Script(Latency())
    emulator.log.clear()
    emulator.set_limits(emulator.limits)  # the same limits, every bucket full again
    return web.json_response({"reset": True})


def build_app(emulator: Emulator) -> web.Application:
    app = web.Application()
    app[EMULATOR] = emulator
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id}", get_model)
    app.router.add_post("/_emulator/faults", add_faults)
    app.router.add_delete("/_emulator/faults", clear_faults)
    app.router.add_get("/_emulator/latency", get_latency)
    app.router.add_put("/_emulator/latency", set_latency)
    app.router.add_get("/_emulator/limits", get_limits)
    app.router.add_put("/_emulator/limits", set_limits)
    app.router.add_delete("/_emulator/limits", clear_limits)
    app.router.add_get("/_emulator/requests", get_requests)
    app.router.add_delete("/_emulator/requests", clear_requests)
    app.router.add_post("/_emulator/reset", reset)
    return app
