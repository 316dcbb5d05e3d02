"""The two HTTP listeners: public (read and inference, for the callers ``--auth`` lets
in) and admin (everything, behind its own bearer token); routing and the handlers. Every
response carries ``X-Elastic-Product: Elasticsearch``, which the official clients
require, and every error has the Elasticsearch shape (middlewares.py)."""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import Histogram

from inference_operator import jsoncodec
from inference_operator.anthropic.client import encode
from inference_operator.api.settings import TaskType
from inference_operator.gateway import errors, openapi, routes, translators
from inference_operator.gateway.auth.caller import ADMIN, ANONYMOUS, Access
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.keys import (
    ACCESS,
    ACCESS_LOG,
    ADMIN_TOKEN,
    CALLER,
    EVENTS,
    GATEWAY,
    INFERENCE_ID,
    PROBES,
    ROUTE,
    TRACE,
    UNIFIED,
    USAGE,
)
from inference_operator.gateway.metrics import Usage
from inference_operator.gateway.middlewares import MIDDLEWARES, traced
from inference_operator.gateway.pipeline import UpstreamRequest
from inference_operator.gateway.probes import probes
from inference_operator.gateway.request_body import check_length, read_body
from inference_operator.gateway.request_memory import Held
from inference_operator.gateway.responses import DONE, SSE_HEADERS, json_response, sse_event
from inference_operator.gateway.routes import Action, Route
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.timeunits import TimeValue, parse_time_value
from inference_operator.gateway.translators.base import Translator
from inference_operator.gateway.write_progress import WriteProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one request may cost the gateway before it is refused (docs/gateway.md,
    "Limits"). The header timeout is not here: it is aiohttp's keep-alive timer, set where
    the listener starts (server.py)."""

    max_body_size: int = 1024 * 1024  # an inference body is a prompt; 1 MiB is ~250k tokens
    body_timeout: float = 60.0  # nginx's client_body_timeout
    # A stream whose client takes nothing for this long is cut (gateway/write_progress.py).
    stream_write_timeout: float = 30.0


LIMITS = web.AppKey("limits", Limits)
OPENAPI = web.AppKey("openapi", bytes)


def build_app(gateway: Gateway, *, admin_token: str | None = None,
              limits: Limits | None = None, access: Access | None = None,
              access_log: bool = False) -> web.Application:
    """The admin listener when ``admin_token`` is given, else the public one, whose
    callers ``access`` checks (None: nobody is checked)."""
    limits = limits or Limits()
    # Bodies are read by _body, which stops them at the limit; client_max_size does the
    # same for any reader of aiohttp's own (request.read()).
    # The spans' middleware only when tracing is on: off, it costs no request anything.
    app = web.Application(client_max_size=limits.max_body_size,
                          middlewares=MIDDLEWARES if gateway.tracing is None
                          else (traced, *MIDDLEWARES))
    app[GATEWAY] = gateway
    app[LIMITS] = limits
    app[ACCESS_LOG] = access_log
    if admin_token is not None:
        app[ADMIN_TOKEN] = admin_token
    elif access is not None:
        app[ACCESS] = access
    app[PROBES] = probes(metrics=access is None)
    # Rendered once: the document depends only on the listener and its callers' checks.
    app[OPENAPI] = jsoncodec.dumps(openapi.document(admin=admin_token is not None,
                                                    **_documented_auth(app.get(ACCESS))))
    app.on_response_prepare.append(_product_header)
    # [\s\S], not ".": a decoded path may hold a newline (%0A), which "." would not match,
    # and aiohttp would answer its own plain-text 404.
    app.router.add_route("*", r"/{tail:[\s\S]*}", _dispatch)
    return app


def _documented_auth(access: Access | None) -> dict[str, str]:
    """The ``--auth`` mode (and kubernetes' audience) the public document declares, told
    by the checks server.py built for it (auth/kubernetes.py is not imported: it pulls in
    lightkube)."""
    from inference_operator.gateway.auth import API_KEYS, DEFAULT_AUDIENCE, KUBERNETES, NONE
    from inference_operator.gateway.auth.apikeys import ApiKeyAccess

    if access is None:
        return {"auth": NONE}
    if isinstance(access, ApiKeyAccess):
        return {"auth": API_KEYS}
    return {"auth": KUBERNETES, "audience": getattr(access, "audience", DEFAULT_AUDIENCE)}


async def _product_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Elastic-Product"] = "Elasticsearch"
    if request.app[GATEWAY].readiness.draining:
        # Shutting down: a keep-alive client's next request goes to another replica.
        response.headers["Connection"] = "close"
        response.force_close()


async def _dispatch(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    admin = ADMIN_TOKEN in request.app
    probe = request.app[PROBES].get(request.path)
    if probe is not None:
        if request.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed(request.path, request.method, ["GET"])
        return probe(gateway)
    if admin:
        if not _authorized(request):
            raise errors.unauthorized(request.path)
        request[CALLER] = ADMIN
    route = request[ROUTE] = routes.match(request.method, request.rel_url.raw_path,
                                          admin=admin)
    if not admin:
        access = request.app.get(ACCESS)
        request[CALLER] = ANONYMOUS if access is None else await access.authenticate(
            request.headers.get("Authorization"), request.path)
    if request.query_string:  # the hot path has none: no cost there
        _check_parameters(request, route)
    return await _HANDLERS[route.action](request, gateway, route)


# Query parameters each action reads; like Elasticsearch, any other is refused, so a typo
# (?timout=5s) is not silently ignored. Elasticsearch's universal output parameters are
# accepted and ignored (error_trace included: the gateway never sends a stack trace).
_PARAMETERS = {Action.INFER: {"timeout"}, Action.STREAM: {"timeout"},
               Action.DELETE: {"dry_run"}}
_IGNORED_PARAMETERS = frozenset({"pretty", "human", "error_trace", "filter_path"})


async def _body(request: web.Request) -> bytes:
    limits = request.app[LIMITS]
    return await read_body(request, limits.max_body_size, limits.body_timeout)


def _check_parameters(request: web.Request, route: Route) -> None:
    allowed = _PARAMETERS.get(route.action, set())
    unknown = sorted(set(request.query) - allowed - _IGNORED_PARAMETERS)
    if unknown:
        listed = ", ".join(f"[{name}]" for name in unknown)
        raise ESError(400, "illegal_argument_exception",
                      f"request [{request.path}] contains unrecognized "
                      f"parameter{'s' if len(unknown) > 1 else ''}: {listed}")


def _authorized(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    # Constant time (for tokens of the right length; a length difference returns early,
    # which tells an attacker only the length). surrogateescape: aiohttp decodes header
    # bytes that are not UTF-8 that way, and a strict encode() would raise on them.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode("utf-8", "surrogateescape"),
        request.app[ADMIN_TOKEN].encode())


def _flag(request: web.Request, name: str) -> bool:
    # Strict, as Elasticsearch parses boolean parameters: a typo must not mean "false".
    value = request.query.get(name, "false")
    if value not in ("", "true", "false"):
        raise ESError(400, "illegal_argument_exception",
                      f"Failed to parse value [{value}] as only [true] or [false] are allowed.")
    return value != "false"


async def _openapi(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def _list(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    endpoints = gateway.registry.select(None, route.task_type)
    access = request.app.get(ACCESS)
    if access is not None:  # only what the caller may invoke
        endpoints = await access.visible(request[CALLER], endpoints)
    return json_response(gateway.registry.render(endpoints))


async def _get(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    await _authorize(request, gateway, route)
    registry = gateway.registry
    return json_response(registry.render(registry.select(route.inference_id, route.task_type)))


async def _authorize(request: web.Request, gateway: Gateway, route: Route) -> None:
    """Whether the caller may invoke the endpoint the route names: checked before its
    body is read, and before a 404 would tell that it does not exist."""
    access = request.app.get(ACCESS)
    if access is None:
        return
    assert route.inference_id is not None
    endpoint = gateway.registry.find(route.inference_id)
    await access.authorize(request[CALLER], route.inference_id, endpoint)
    # Only now: a refusal (401, 403) counts under UNKNOWN_ID, so /metrics never tells
    # which of the ids a caller probed exist.
    if endpoint is not None:
        request[INFERENCE_ID] = endpoint.inference_id


async def _create(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return json_response(await gateway.registry.create(route.inference_id, route.task_type,
                                                       await _body(request)))


async def _update(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return json_response(await gateway.registry.update(route.inference_id, route.task_type,
                                                       await _body(request)))


async def _delete(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return json_response(await gateway.registry.delete(route.inference_id, route.task_type,
                                                       dry_run=_flag(request, "dry_run")))


async def _begin_inference(request: web.Request, gateway: Gateway,
                           route: Route) -> tuple[Translator, TimeValue]:
    """The caller's access checked, then the task the request is for and its timeout.
    Refusals of access keep Elasticsearch's shape on every path, as its security layer
    answers them before the action; the chat action's own errors are OpenAI-shaped."""
    await _authorize(request, gateway, route)
    task_type = route.task_type
    if task_type in (None, "any"):
        assert route.inference_id is not None
        endpoint = gateway.registry.find(route.inference_id)
        task_type = endpoint.task_type if endpoint is not None else TaskType.COMPLETION
    task = translators.for_task_type(task_type)
    request[UNIFIED] = task.unified_errors
    return task, parse_time_value(request.query.get("timeout"))


def _resolve(request: web.Request, gateway: Gateway, route: Route) -> Endpoint:
    assert route.inference_id is not None
    endpoint = gateway.registry.resolve(route.inference_id, route.task_type)
    request[INFERENCE_ID] = endpoint.inference_id
    return endpoint


def _reserve(request: web.Request, gateway: Gateway, route: Route) -> Held:
    """Room in the request memory budget for the body, before a byte of it is read."""
    assert route.inference_id is not None
    endpoint = gateway.registry.find(route.inference_id)
    # Retry-After: the endpoint's rate interval, when its queue moves.
    retry_after = 1 if endpoint is None else max(1, math.ceil(endpoint.bucket.interval))
    return gateway.request_memory.reserve(
        route.inference_id, check_length(request, request.app[LIMITS].max_body_size),
        retry_after)


def _prepare(request: web.Request, gateway: Gateway, route: Route, task: Translator,
             held: Held,
             raw: bytes, *, stream: bool = False) -> tuple[Endpoint, UpstreamRequest]:
    """The body parsed, checked and translated into the upstream request's bytes, which
    are all the request keeps from here on (and what ``held`` counts): neither the body
    nor its parsed form waits in the queue."""
    with jsoncodec.no_collection():
        # Translated in a call of its own, so the parsed body and the parameters are freed
        # before the collector is back: its first run would walk every object they hold.
        endpoint, upstream = _translate(request, gateway, route, task, raw, stream=stream)
    held.resize(len(upstream.body))
    return endpoint, upstream


def _translate(request: web.Request, gateway: Gateway, route: Route, task: Translator,
               raw: bytes, *, stream: bool) -> tuple[Endpoint, UpstreamRequest]:
    body = task.parse(raw)
    if stream:
        # From here on failures are events: request parsing fails as plain JSON, like
        # a REST handler; failures of the action itself are reported in the event
        # stream, as Elasticsearch's SSE listener does.
        request[EVENTS] = web.StreamResponse(headers=SSE_HEADERS)
    endpoint = _resolve(request, gateway, route)
    params = task.params(endpoint, body)
    trace = request.get(TRACE)
    if trace is not None:
        trace.params(params, stream=stream)
    return endpoint, UpstreamRequest(encode(params, stream=stream), params["max_tokens"])


async def _infer(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    task, timeout = await _begin_inference(request, gateway, route)
    with _reserve(request, gateway, route) as held:
        endpoint, body = _prepare(request, gateway, route, task, held, await _body(request))
        usage = request[USAGE] = Usage()
        message = await gateway.pipeline.complete(endpoint, task, body, timeout, usage,
                                                  request.get(TRACE))
        return json_response(task.answer(message))


async def _open_stream(request: web.Request, gateway: Gateway, route: Route, task: Translator,
                       time_limit: TimeValue) -> tuple[Endpoint, AsyncGenerator[Any, None]]:
    """The upstream stream, open; its request's bytes are held (and counted) until then."""
    with _reserve(request, gateway, route) as held:
        endpoint, body = _prepare(request, gateway, route, task, held, await _body(request),
                                  stream=True)
        usage = request[USAGE] = Usage()
        return endpoint, await gateway.pipeline.stream(endpoint, task, body, time_limit, usage,
                                                       request.get(TRACE))


async def _stream(request: web.Request, gateway: Gateway, route: Route) -> web.StreamResponse:
    started = time.monotonic()
    task, timeout = await _begin_inference(request, gateway, route)
    endpoint, events = await _open_stream(request, gateway, route, task, timeout)
    response = request[EVENTS]
    translate = task.events()
    first_delta: Histogram | None = gateway.metrics.first_delta.labels(endpoint.inference_id)
    seconds = request.app[LIMITS].stream_write_timeout
    writer = WriteProgress(request, response, seconds,
                           lambda: _stalled(gateway, endpoint.inference_id, seconds))
    try:
        await response.prepare(request)
        async for event in events:
            data = translate(event)
            if data is None:
                continue
            await writer.write(sse_event("message", data))
            # The role chunk of a chat carries no delta: the first one that does counts.
            if first_delta is not None and event.get("type") != "message_start":
                first_delta.observe(time.monotonic() - started)
                first_delta = None
        await writer.write(DONE)
        await writer.write_eof()
    finally:
        writer.close()
        await events.aclose()
    return response


def _stalled(gateway: Gateway, inference_id: str, seconds: float) -> None:
    gateway.metrics.upstream.labels(inference_id, "client_stalled").inc()
    log.info("stream of [%s] cut: its client took nothing for %gs; upstream call closed",
             inference_id, seconds)


_HANDLERS = {
    Action.LIST: _list,
    Action.GET: _get,
    Action.CREATE: _create,
    Action.UPDATE: _update,
    Action.DELETE: _delete,
    Action.INFER: _infer,
    Action.STREAM: _stream,
    Action.OPENAPI: _openapi,
}
