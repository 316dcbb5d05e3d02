"""The listeners' middlewares, one job each, outermost first (``MIDDLEWARES``): the
access log, the request metrics, the status a request was answered with (499 when its
client went away), and every failure answered in the Elasticsearch shape; outside them
all when tracing is on, the request's spans (``traced``)."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from inference_operator.gateway import accesslog, errors
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.keys import (
    ACCESS_LOG,
    ADMIN_TOKEN,
    CALLER,
    EVENTS,
    FAILURE_STATUS,
    GATEWAY,
    INFERENCE_ID,
    PROBES,
    ROUTE,
    STATUS,
    TRACE,
    UNIFIED,
    USAGE,
)
from inference_operator.gateway.metrics import UNKNOWN_ID, Usage
from inference_operator.gateway.responses import json_response, sse_event
from inference_operator.gateway.routes import Action

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's code for "the client went away", used as a metrics label
# The routes whose requests are measured, with their metrics' "stream" label.
_STREAM_LABEL = {Action.INFER: "false", Action.STREAM: "true"}


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's SERVER span (gateway/tracing.py), ended once it is answered: a
    stream's after its last event. The probes are not traced."""
    tracing = request.app[GATEWAY].tracing
    assert tracing is not None  # only installed when tracing is on (http.build_app)
    if request.path in request.app[PROBES]:
        return await handler(request)
    trace = request[TRACE] = tracing.request(request)
    try:
        return await handler(request)
    finally:
        trace.end(request.get(STATUS, CLIENT_CLOSED), request.get(ROUTE), request.get(CALLER),
                  request.get(INFERENCE_ID))


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request but the probes (gateway/accesslog.py), if the listener logs."""
    if not request.app[ACCESS_LOG] or request.path in request.app[PROBES]:
        return await handler(request)
    started = time.monotonic()
    try:
        return await handler(request)
    finally:
        accesslog.write(listener="admin" if ADMIN_TOKEN in request.app else "public",
                        caller=request.get(CALLER), method=request.method, path=request.path,
                        inference_id=request.get(INFERENCE_ID),
                        status=request.get(STATUS, CLIENT_CLOSED), usage=request.get(USAGE),
                        latency=time.monotonic() - started)


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The inference routes' request metrics, per endpoint and per caller."""
    started = time.monotonic()
    try:
        return await handler(request)
    finally:
        route = request.get(ROUTE)
        if route is not None and route.action in _STREAM_LABEL:
            status = request.get(STATUS, CLIENT_CLOSED)
            inference_id = request.get(INFERENCE_ID, UNKNOWN_ID)
            stream = _STREAM_LABEL[route.action]
            metrics = request.app[GATEWAY].metrics
            metrics.requests.labels(inference_id, stream, str(status)).inc()
            metrics.duration.labels(inference_id, stream).observe(time.monotonic() - started)
            caller = request.get(CALLER)
            if caller is not None:
                metrics.count_call(inference_id, caller, status, request.get(USAGE) or Usage())


@web.middleware
async def answered_status(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The status the request was answered with, for the two above: 499 unless an answer
    was made (its client went away: the handler was cancelled, or its connection lost)."""
    request[STATUS] = CLIENT_CLOSED
    response = await handler(request)
    # An error after a stream started is answered with the error's status as an event.
    request[STATUS] = request.get(FAILURE_STATUS, response.status)
    return response


@web.middleware
async def elasticsearch_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route's failures, answered in one place in the Elasticsearch shape."""
    try:
        return await handler(request)
    except ESError as error:
        failure = error
    except web.HTTPException as error:  # aiohttp's own, e.g. from reading the body
        failure = ESError(error.status, "status_exception", error.reason)
    except ConnectionError:  # the client went away: nobody to answer
        raise
    except Exception:
        # A bug: answered without the exception's text (no traceback in a response); the
        # log has it.
        log.exception("unhandled error on %s %s", request.method, request.path)
        failure = errors.internal(request.path)
    request[FAILURE_STATUS] = failure.status
    return await _error(request, failure)


async def _error(request: web.Request, error: ESError) -> web.StreamResponse:
    """JSON; or, once a stream's errors are events, one ``event: error``: the whole answer
    (with the error's status) before the stream started, its last event after."""
    stream = request.get(EVENTS)
    body = error.unified_body() if request.get(UNIFIED) else error.body()
    if stream is None:
        response: web.StreamResponse = json_response(body, error.status, error.headers)
    else:
        event = sse_event("error", body)
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


MIDDLEWARES: tuple[Middleware, ...] = (access_log, request_metrics, answered_status,
                                       elasticsearch_errors)
