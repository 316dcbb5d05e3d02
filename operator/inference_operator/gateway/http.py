"""The two HTTP listeners: public (read and inference, for the callers ``--auth`` lets
in) and admin (everything, behind its own bearer token). Every response carries
``X-Elastic-Product: Elasticsearch``, which the official clients require, and every error
has the Elasticsearch shape."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest

from inference_operator.api.settings import TaskType
from inference_operator.gateway import (
    accesslog,
    errors,
    jsoncodec,
    openapi,
    routes,
    tasks,
    upstream,
)
from inference_operator.gateway.auth.caller import ADMIN, ANONYMOUS, Access, Caller
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import UNKNOWN_ID, Usage
from inference_operator.gateway.request_memory import Held
from inference_operator.gateway.routes import Action, Route
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.tasks import Task
from inference_operator.gateway.timeunits import TimeValue, parse_time_value
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


GATEWAY = web.AppKey("gateway", Gateway)
ADMIN_TOKEN = web.AppKey("admin_token", str)
LIMITS = web.AppKey("limits", Limits)
OPENAPI = web.AppKey("openapi", bytes)
# The public listener's callers (absent: --auth none, anybody); whether to access-log.
ACCESS = web.AppKey("access", Access)
ACCESS_LOG = web.AppKey("access_log", bool)
# The probes a listener answers unauthenticated, by path (see _probes).
Probe = Callable[[Gateway], web.Response]
PROBES = web.AppKey("probes", dict[str, Probe])
# What a handler tells the middleware (_answer): the route, once matched; the caller,
# once authenticated; the endpoint's id for the metrics, once resolved; the tokens used;
# a stream's response, once its errors are events.
ROUTE = web.RequestKey("route", Route)
CALLER = web.RequestKey("caller", Caller)
INFERENCE_ID = web.RequestKey("inference_id", str)
USAGE = web.RequestKey("usage", Usage)
EVENTS = web.RequestKey("events", web.StreamResponse)
# Errors in OpenAI's shape (the chat_completion route), not Elasticsearch's.
UNIFIED = web.RequestKey("unified", bool)
CLIENT_CLOSED = 499  # nginx's code for "the client went away", used as a metrics label
# The routes whose requests are measured, with their metrics' "stream" label.
_STREAM_LABEL = {Action.INFER: "false", Action.STREAM: "true"}
_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Proxies (nginx and friends) must pass every event on at once.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_DONE = b"event: message\ndata: [DONE]\n\n"


def build_app(gateway: Gateway, *, admin_token: str | None = None,
              limits: Limits | None = None, access: Access | None = None,
              access_log: bool = False) -> web.Application:
    """The admin listener when ``admin_token`` is given, else the public one, whose
    callers ``access`` checks (None: nobody is checked)."""
    limits = limits or Limits()
    # Bodies are read by _body, which stops them at the limit; client_max_size does the
    # same for any reader of aiohttp's own (request.read()).
    app = web.Application(client_max_size=limits.max_body_size, middlewares=[_answer])
    app[GATEWAY] = gateway
    app[LIMITS] = limits
    app[ACCESS_LOG] = access_log
    if admin_token is not None:
        app[ADMIN_TOKEN] = admin_token
    elif access is not None:
        app[ACCESS] = access
    app[PROBES] = _probes(metrics=access is None)
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
    if request.app[GATEWAY].draining:
        # Shutting down: a keep-alive client's next request goes to another replica.
        response.headers["Connection"] = "close"
        response.force_close()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=jsoncodec.dumps(body), status=status, headers=headers,
                        content_type="application/json")


@web.middleware
async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route's failures, answered in one place in the Elasticsearch shape; the
    inference routes' request metrics (status 499 when the client went away), per
    endpoint and per caller; the access log."""
    started = time.monotonic()
    status = CLIENT_CLOSED  # unless an answer is made below
    try:
        try:
            response = await handler(request)
        except ESError as error:
            failure = error
        except web.HTTPException as error:  # aiohttp's own, e.g. from reading the body
            failure = ESError(error.status, "status_exception", error.reason)
        except ConnectionError:  # the client went away: nobody to answer
            raise
        except Exception:
            # A bug: answered without the exception's text (no traceback in a response);
            # the log has it.
            log.exception("unhandled error on %s %s", request.method, request.path)
            failure = errors.internal(request.path)
        else:
            status = response.status
            return response
        response = await _error(request, failure)
        status = failure.status
        return response
    finally:
        elapsed = time.monotonic() - started
        route = request.get(ROUTE)
        if route is not None and route.action in _STREAM_LABEL:
            inference_id = request.get(INFERENCE_ID, UNKNOWN_ID)
            stream = _STREAM_LABEL[route.action]
            metrics = request.app[GATEWAY].metrics
            metrics.requests.labels(inference_id, stream, str(status)).inc()
            metrics.duration.labels(inference_id, stream).observe(elapsed)
            caller = request.get(CALLER)
            if caller is not None:
                metrics.count_call(inference_id, caller, status, request.get(USAGE) or Usage())
        if request.app[ACCESS_LOG] and request.path not in request.app[PROBES]:
            accesslog.write(listener="admin" if ADMIN_TOKEN in request.app else "public",
                            caller=request.get(CALLER), method=request.method,
                            path=request.path, inference_id=request.get(INFERENCE_ID),
                            status=status, usage=request.get(USAGE), latency=elapsed)


async def _error(request: web.Request, error: ESError) -> web.StreamResponse:
    """JSON; or, once a stream's errors are events, one ``event: error``: the whole answer
    (with the error's status) before the stream started, its last event after."""
    stream = request.get(EVENTS)
    body = error.unified_body() if request.get(UNIFIED) else error.body()
    if stream is None:
        response: web.StreamResponse = _json(body, error.status, error.headers)
    else:
        event = _event("error", body)
        if not stream.prepared:
            stream.set_status(error.status)
            stream.headers.update(error.headers)
            stream.content_length = len(event)
            await stream.prepare(request)
        await stream.write(event)
        await stream.write_eof()
        response = stream
    if error.close_connection:
        response.force_close()
    return response


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


async def _body(request: web.Request) -> bytes:
    """The request body within the size limit and the body timeout. Not read with
    ``request.read()``, which keeps a copy for the request's whole life: a queued request
    keeps only what it sends upstream."""
    limits = request.app[LIMITS]
    _check_length(request)
    try:
        if request.content.is_eof():
            # The common case: the whole body came with the head, nothing to wait for,
            # so no timer is set up on the hot path.
            return await _read(request.content, limits.max_body_size)
        async with asyncio.timeout(limits.body_timeout):
            return await _read(request.content, limits.max_body_size)
    except TimeoutError:
        raise errors.body_timed_out(limits.body_timeout) from None


def _check_length(request: web.Request) -> int:
    """The most bytes the body can have: its Content-Length, else the limit; a body
    that says it is larger is refused before a byte of it is read."""
    limit = request.app[LIMITS].max_body_size
    length = request.content_length
    if length is not None and length > limit:
        raise errors.too_large(limit)
    return limit if length is None else length


async def _read(content: StreamReader, limit: int) -> bytes:
    body = bytearray()
    while chunk := await content.readany():
        body += chunk
        if len(body) > limit:  # a chunked body has no Content-Length to refuse it by
            raise errors.too_large(limit)
    return bytes(body)


# Query parameters each action reads; like Elasticsearch, any other is refused, so a typo
# (?timout=5s) is not silently ignored. Elasticsearch's universal output parameters are
# accepted and ignored (error_trace included: the gateway never sends a stack trace).
_PARAMETERS = {Action.INFER: {"timeout"}, Action.STREAM: {"timeout"},
               Action.DELETE: {"dry_run"}}
_IGNORED_PARAMETERS = frozenset({"pretty", "human", "error_trace", "filter_path"})


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


def _healthz(gateway: Gateway) -> web.Response:
    return _json(gateway.health())


def _readyz(gateway: Gateway) -> web.Response:
    reason = gateway.unready_reason()
    if reason is None:
        return _json({"ready": True})
    return _json({"ready": False, "reason": reason}, status=503)


def _metrics(gateway: Gateway) -> web.Response:
    response = web.Response(body=generate_latest(gateway.metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_ALL_PROBES: dict[str, Probe] = {"/healthz": _healthz, "/readyz": _readyz,
                                 "/metrics": _metrics}


def _probes(*, metrics: bool) -> dict[str, Probe]:
    """The probes, with ``/metrics`` only where every caller may see it all: its series
    name endpoints and callers' namespaces, so with ``--auth`` on the public listener
    leaves it to the metrics listener (build_metrics_app); the admin listener (loopback by
    default) keeps it."""
    return _ALL_PROBES if metrics else {path: probe for path, probe in _ALL_PROBES.items()
                                        if probe is not _metrics}


def build_metrics_app(gateway: Gateway) -> web.Application:
    """The metrics listener (``--metrics-port``): ``GET /metrics`` and nothing else, not
    access-logged (Prometheus scrapes it forever)."""
    async def scrape(_: web.Request) -> web.Response:
        return _metrics(gateway)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def _openapi(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def _list(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    endpoints = gateway.select(None, route.task_type)
    access = request.app.get(ACCESS)
    if access is not None:  # only what the caller may invoke
        endpoints = await access.visible(request[CALLER], endpoints)
    return _json(gateway.render(endpoints))


async def _get(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    await _authorize(request, gateway, route)
    return _json(gateway.render(gateway.select(route.inference_id, route.task_type)))


async def _authorize(request: web.Request, gateway: Gateway, route: Route) -> None:
    """Whether the caller may invoke the endpoint the route names: checked before its
    body is read, and before a 404 would tell that it does not exist."""
    access = request.app.get(ACCESS)
    if access is None:
        return
    assert route.inference_id is not None
    endpoint = gateway.find(route.inference_id)
    await access.authorize(request[CALLER], route.inference_id, endpoint)
    # Only now: a refusal (401, 403) counts under UNKNOWN_ID, so /metrics never tells
    # which of the ids a caller probed exist.
    if endpoint is not None:
        request[INFERENCE_ID] = endpoint.inference_id


async def _create(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return _json(await gateway.create(route.inference_id, route.task_type, await _body(request)))


async def _update(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return _json(await gateway.update(route.inference_id, route.task_type, await _body(request)))


async def _delete(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return _json(await gateway.delete(route.inference_id, route.task_type,
                                      dry_run=_flag(request, "dry_run")))


async def _begin_inference(request: web.Request, gateway: Gateway,
                           route: Route) -> tuple[Task, TimeValue]:
    """The caller's access checked, then the task the request is for and its timeout.
    Refusals of access keep Elasticsearch's shape on every path, as its security layer
    answers them before the action; the chat action's own errors are OpenAI-shaped."""
    await _authorize(request, gateway, route)
    task_type = route.task_type
    if task_type in (None, "any"):
        assert route.inference_id is not None
        endpoint = gateway.find(route.inference_id)
        task_type = endpoint.task_type if endpoint is not None else TaskType.COMPLETION
    task = tasks.for_task_type(task_type)
    request[UNIFIED] = task.unified_errors
    return task, parse_time_value(request.query.get("timeout"))


def _resolve(request: web.Request, gateway: Gateway, route: Route) -> Endpoint:
    assert route.inference_id is not None
    endpoint = gateway.resolve(route.inference_id, route.task_type)
    request[INFERENCE_ID] = endpoint.inference_id
    return endpoint


def _reserve(request: web.Request, gateway: Gateway, route: Route) -> Held:
    """Room in the request memory budget for the body, before a byte of it is read."""
    assert route.inference_id is not None
    return gateway.reserve(route.inference_id, _check_length(request))


def _prepare(request: web.Request, gateway: Gateway, route: Route, task: Task, held: Held,
             raw: bytes, *, stream: bool = False) -> tuple[Endpoint, bytes]:
    """The body parsed, checked and translated into the upstream request's bytes, which
    are all the request keeps from here on (and what ``held`` counts): neither the body
    nor its parsed form waits in the queue."""
    with jsoncodec.no_collection():
        body = task.parse(raw)
        if stream:
            # From here on failures are events: request parsing fails as plain JSON, like
            # a REST handler; failures of the action itself are reported in the event
            # stream, as Elasticsearch's SSE listener does.
            request[EVENTS] = web.StreamResponse(headers=_SSE_HEADERS)
        endpoint = _resolve(request, gateway, route)
        encoded = upstream.encode(task.params(endpoint, body), stream=stream)
    held.resize(len(encoded))
    return endpoint, encoded


async def _infer(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    task, timeout = await _begin_inference(request, gateway, route)
    with _reserve(request, gateway, route) as held:
        endpoint, body = _prepare(request, gateway, route, task, held, await _body(request))
        usage = request[USAGE] = Usage()
        return _json(task.answer(await gateway.complete(endpoint, body, timeout, usage)))


async def _open_stream(request: web.Request, gateway: Gateway, route: Route, task: Task,
                       time_limit: TimeValue) -> tuple[Endpoint, AsyncGenerator[Any, None]]:
    """The upstream stream, open; its request's bytes are held (and counted) until then."""
    with _reserve(request, gateway, route) as held:
        endpoint, body = _prepare(request, gateway, route, task, held, await _body(request),
                                  stream=True)
        usage = request[USAGE] = Usage()
        return endpoint, await gateway.stream(endpoint, body, time_limit, usage)


async def _stream(request: web.Request, gateway: Gateway, route: Route) -> web.StreamResponse:
    started = time.monotonic()
    task, timeout = await _begin_inference(request, gateway, route)
    endpoint, events = await _open_stream(request, gateway, route, task, timeout)
    response = request[EVENTS]
    translate = task.translator()
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
            await writer.write(_event("message", data))
            # The role chunk of a chat carries no delta: the first one that does counts.
            if first_delta is not None and event.get("type") != "message_start":
                first_delta.observe(time.monotonic() - started)
                first_delta = None
        await writer.write(_DONE)
        await writer.write_eof()
    finally:
        writer.close()
        await events.aclose()
    return response


def _stalled(gateway: Gateway, inference_id: str, seconds: float) -> None:
    gateway.metrics.upstream.labels(inference_id, "client_stalled").inc()
    log.info("stream of [%s] cut: its client took nothing for %gs; upstream call closed",
             inference_id, seconds)


def _event(name: str, data: Any) -> bytes:
    # No byte-order mark (Elasticsearch sends one per event; strict parsers choke on it).
    return b"event: %s\ndata: %s\n\n" % (name.encode(), jsoncodec.dumps(data))


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
