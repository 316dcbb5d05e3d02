"""The two HTTP listeners: public (read and inference) and admin (everything, behind a
bearer token). Every response carries ``X-Elastic-Product: Elasticsearch``, which the
official clients require, and every error has the Elasticsearch shape."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference_operator.gateway import errors, jsoncodec, routes, validation
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import UNKNOWN_ID
from inference_operator.gateway.routes import Action, Route
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.timeunits import parse_time_value

GATEWAY = web.AppKey("gateway", Gateway)
ADMIN_TOKEN = web.AppKey("admin_token", str)
MAX_BODY = 10 * 1024 * 1024
CLIENT_CLOSED = 499  # nginx's code for "the client went away", used as a metrics label
_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Proxies (nginx and friends) must pass every event on at once.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_DONE = b"event: message\ndata: [DONE]\n\n"


def build_app(gateway: Gateway, *, admin_token: str | None = None) -> web.Application:
    """The admin listener when ``admin_token`` is given, else the public one."""
    app = web.Application(client_max_size=MAX_BODY)
    app[GATEWAY] = gateway
    if admin_token is not None:
        app[ADMIN_TOKEN] = admin_token
    app.on_response_prepare.append(_product_header)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


async def _product_header(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Elastic-Product"] = "Elasticsearch"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=jsoncodec.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def _error(error: ESError) -> web.Response:
    return _json(error.body(), error.status, error.headers)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    admin = ADMIN_TOKEN in request.app
    try:
        if request.path in _PROBES:
            if request.method not in ("GET", "HEAD"):
                raise errors.method_not_allowed(request.path, request.method, ["GET"])
            return _PROBES[request.path](gateway)
        if admin and not _authorized(request):
            raise errors.unauthorized(request.path)
        route = routes.match(request.method, request.path, admin=admin)
        return await _HANDLERS[route.action](request, gateway, route)
    except ESError as error:
        return _error(error)


def _authorized(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), request.app[ADMIN_TOKEN].encode())


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("", "true")


def _healthz(gateway: Gateway) -> web.Response:
    return _json(gateway.health())


def _readyz(gateway: Gateway) -> web.Response:
    if gateway.synced:
        return _json({"ready": True, "boot_id": gateway.boot_id})
    return _json({"ready": False, "boot_id": gateway.boot_id,
                  "reason": "waiting for the first full sync"}, status=503)


def _metrics(gateway: Gateway) -> web.Response:
    response = web.Response(body=generate_latest(gateway.metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_PROBES = {"/healthz": _healthz, "/readyz": _readyz, "/metrics": _metrics}


async def _list(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    return _json(gateway.describe(None, route.task_type))


async def _get(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    return _json(gateway.describe(route.inference_id, route.task_type))


async def _create(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    # ``?replace=true`` (an extension for the operator) turns create into create-or-replace.
    assert route.inference_id is not None
    return _json(await gateway.create(route.inference_id, route.task_type, await request.read(),
                                      replace=_flag(request, "replace")))


async def _update(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return _json(await gateway.update(route.inference_id, route.task_type, await request.read()))


async def _delete(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    return _json(await gateway.delete(route.inference_id, route.task_type,
                                      dry_run=_flag(request, "dry_run")))


async def _sync(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    return _json(await gateway.sync(await request.read()))


async def _infer(request: web.Request, gateway: Gateway, route: Route) -> web.Response:
    assert route.inference_id is not None
    started = time.monotonic()
    label = UNKNOWN_ID
    status = 500
    try:
        timeout = parse_time_value(request.query.get("timeout"))
        body = validation.parse_inference(await request.read(), route.task_type or "completion")
        endpoint = gateway.resolve(route.inference_id, route.task_type)
        label = endpoint.inference_id
        result = await gateway.complete(endpoint, body, timeout)
        status = 200
        return _json(result)
    except ESError as error:
        status = error.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        _observe(gateway, label, "false", status, started)


async def _stream(request: web.Request, gateway: Gateway, route: Route) -> web.StreamResponse:
    assert route.inference_id is not None
    started = time.monotonic()
    label = UNKNOWN_ID
    # Request parsing fails as plain JSON, like a REST handler; failures of the action
    # itself are reported in the event stream, as Elasticsearch's SSE listener does.
    timeout = parse_time_value(request.query.get("timeout"))
    body = validation.parse_inference(await request.read(), route.task_type or "completion")
    status = 500
    try:
        endpoint = gateway.resolve(route.inference_id, route.task_type)
        label = endpoint.inference_id
        texts = await gateway.stream(endpoint, body, timeout)
    except ESError as error:
        status = error.status
        _observe(gateway, label, "true", status, started)
        response = web.Response(body=_event("error", error.body()), status=error.status,
                                headers={**_SSE_HEADERS, **error.headers})
        return response
    response = web.StreamResponse(status=200, headers=_SSE_HEADERS)
    try:
        await response.prepare(request)
        try:
            async for text in texts:
                await response.write(_event("message", {"completion": [{"delta": text}]}))
        except ESError as error:
            status = error.status
            await response.write(_event("error", error.body()))
        else:
            status = 200
            await response.write(_DONE)
        await response.write_eof()
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_CLOSED
        raise
    finally:
        await texts.aclose()
        _observe(gateway, label, "true", status, started)
    return response


def _event(name: str, data: Any) -> bytes:
    # No byte-order mark (Elasticsearch sends one per event; strict parsers choke on it).
    return b"event: %s\ndata: %s\n\n" % (name.encode(), jsoncodec.dumps(data))


def _observe(gateway: Gateway, inference_id: str, stream: str, status: int,
             started: float) -> None:
    metrics = gateway.metrics
    metrics.requests.labels(inference_id, stream, str(status)).inc()
    metrics.duration.labels(inference_id, stream).observe(time.monotonic() - started)


_HANDLERS = {
    Action.LIST: _list,
    Action.GET: _get,
    Action.CREATE: _create,
    Action.UPDATE: _update,
    Action.DELETE: _delete,
    Action.SYNC: _sync,
    Action.INFER: _infer,
    Action.STREAM: _stream,
}
