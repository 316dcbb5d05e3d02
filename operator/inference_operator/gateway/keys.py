"""What the listeners' parts share through aiohttp's application and request: set by
build_app and the handlers (http.py), read by the middlewares (middlewares.py)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from inference_operator.gateway.auth.caller import Access, Caller
from inference_operator.gateway.metrics import Usage
from inference_operator.gateway.routes import Route
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.tracing import RequestTrace

GATEWAY = web.AppKey("gateway", Gateway)
ADMIN_TOKEN = web.AppKey("admin_token", str)  # only on the admin listener
# The public listener's callers (absent: --auth none, anybody); whether to access-log.
ACCESS = web.AppKey("access", Access)
ACCESS_LOG = web.AppKey("access_log", bool)
# The probes a listener answers unauthenticated, by path (probes.py).
Probe = Callable[[Gateway], web.Response]
PROBES = web.AppKey("probes", dict[str, Probe])

# What a handler tells the middlewares: the route, once matched; the caller, once
# authenticated; the endpoint's id for the metrics, once resolved; the tokens used; a
# stream's response, once its errors are events; errors in OpenAI's shape (the
# chat_completion route), not Elasticsearch's.
ROUTE = web.RequestKey("route", Route)
CALLER = web.RequestKey("caller", Caller)
INFERENCE_ID = web.RequestKey("inference_id", str)
USAGE = web.RequestKey("usage", Usage)
EVENTS = web.RequestKey("events", web.StreamResponse)
UNIFIED = web.RequestKey("unified", bool)
# The request's spans, when tracing is on: started and ended by a middleware, added to by
# the handler and the pipeline.
TRACE = web.RequestKey("trace", RequestTrace)
# What the middlewares tell each other: the status of the error an answer was made of
# (not the error: its traceback would hold the request's frames in a cycle); the status
# the request was answered with (499 until one is made).
FAILURE_STATUS = web.RequestKey("failure_status", int)
STATUS = web.RequestKey("status", int)
