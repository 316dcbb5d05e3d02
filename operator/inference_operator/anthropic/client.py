"""Anthropic's Messages API on the gateway's hot path, and its Models API for the
operator's key check; every failure is an ``AnthropicError`` (errors.py).

Why not the ``anthropic`` SDK here: a call through it costs several times the CPU of this
client, more than the gateway's whole added-latency budget, and importing it a large share
of the memory budget (measured by every ``make bench``; the figures are in
docs/benchmarks.md, "Why not the SDK on the hot path"). The wire format is small: the body
is JSON the gateway builds anyway, the answer a JSON Message, streaming is SSE with an
``event:`` line per event. What we took from the SDK is pinned by tests against the
installed SDK (tests/gateway/test_gateway_wire.py): the auth and version headers it
sends, and the text, usage and errors it reads from the same replies. The operator's
key check (controller/upstream.py) uses this client too, for the Models API: the SDK's
import alone would be about a third of the operator's memory budget.

Like the SDK client the gateway used before, one connection pool (up to 1,000
connections) is shared by every endpoint, and nothing is retried here: the caller runs
its own capped policy. Unlike it, each API key may hold only its share of the pool, and
the wait for a connection is bounded (slots.py)."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from inference_operator import jsoncodec
from inference_operator.anthropic.errors import (
    ConnectionFailed,
    NoConnection,
    StatusError,
)
from inference_operator.anthropic.replies import json_object, json_or_text
from inference_operator.anthropic.slots import NoSlot, Release, Slots
from inference_operator.anthropic.stream import MessageStream

# What anthropic 2.14.0 sends (``Authorization: Bearer`` and this version); the wire test
# fails when the installed SDK sends something else.
API_VERSION = "2026-10-21"
USER_AGENT = "inference-operator-gateway"
MAX_CONNECTIONS = 1000  # the SDK's default pool size
# A quarter of the pool: four keys must be saturated together before a fifth waits.
MAX_CONNECTIONS_PER_KEY = 250
CONNECTION_WAIT = 1.0  # seconds for a free connection, then 503
HeadersCallback = Callable[[Mapping[str, str]], None]


class Upstream:
    def __init__(self, base_url: str, connect_timeout: float = 5.0,
                 read_timeout: float = 600.0, *,
                 connections_per_key: int = MAX_CONNECTIONS_PER_KEY,
                 connection_wait: float = CONNECTION_WAIT) -> None:
        self.base_url = base_url
        self.slots = Slots(MAX_CONNECTIONS, connections_per_key, connection_wait)
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._models_url = base_url.rstrip("/") + "/v1/models/"
        # The request's own deadline (?timeout=) bounds the call; the read timeout only
        # has to outlast the gaps of long streams.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # The session must be created inside the running loop. HTTP(S)_PROXY/NO_PROXY are
        # honoured as the SDK (httpx) did, looked up once here instead of per request.
        # No cookie jar: the Messages API needs none, and filtering cookies showed in the
        # request path's profile (docs/benchmarks.md).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
            cookie_jar=aiohttp.DummyCookieJar(), timeout=self._timeout,
            skip_auto_headers=("User-Agent",), proxy=_env_proxy(self._url))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def client(self, api_key: str) -> Client:
        if self._session is None:
            raise RuntimeError("Upstream.start() has not run")
        return Client(self._session, self._url, api_key, self.slots)

    async def retrieve_model(self, api_key: str, model_id: str) -> dict[str, Any]:
        """``GET /v1/models/{model_id}``: the model's description, as JSON; a StatusError
        for an error answer (401 bad key, 404 no such model), ConnectionFailed without
        one."""
        if self._session is None:
            raise RuntimeError("Upstream.start() has not run")
        url = self._models_url + urllib.parse.quote(model_id, safe="")
        response = await _open(self._session.get(url, headers=_headers(api_key),
                                                 allow_redirects=False))
        async with response:
            return json_object(await _read(response), "the answer")


def _headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "anthropic-version": API_VERSION,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


class Client:
    """One endpoint's view of the upstream: the shared pool plus its key's headers and
    connection share, built once rather than per request."""

    def __init__(self, session: aiohttp.ClientSession, url: str, api_key: str,
                 slots: Slots) -> None:
        self._session = session
        self._url = url
        self._headers = _headers(api_key)
        self._slots = slots
        self._key_slots = slots.for_key(api_key)

    async def create(self, body: bytes, headers: dict[str, str] | None = None,
                     on_headers: HeadersCallback | None = None) -> dict[str, Any]:
        """``POST /v1/messages`` of ``encode(params)``: the Message, as JSON. Encoded
        before the call, since the bytes are all a queued request keeps. ``headers``:
        more to send (the trace context, when propagated); ``on_headers``: told the
        answer's headers (its rate-limit state) once its status is 200."""
        release = await self._take_slot()
        try:
            response = await self._send(body, headers, on_headers)
            async with response:
                raw = await _read(response)
        finally:
            release()
        return json_object(raw, "the answer")

    async def stream(self, body: bytes, headers: dict[str, str] | None = None,
                     on_headers: HeadersCallback | None = None) -> MessageStream:
        """``POST /v1/messages`` of ``encode(params, stream=True)``, open once the status
        is 200; its connection is given back when the stream is closed."""
        release = await self._take_slot()
        try:
            return MessageStream(await self._send(body, headers, on_headers), release)
        except BaseException:
            release()
            raise

    async def _take_slot(self) -> Release:
        try:
            return await self._slots.take(self._key_slots)
        except NoSlot as full:
            raise NoConnection(str(full), self._slots.wait) from None

    async def _send(self, body: bytes, extra: dict[str, str] | None,
                    on_headers: HeadersCallback | None) -> aiohttp.ClientResponse:
        # Ours last: nothing extra replaces the key or the version.
        headers = {**extra, **self._headers} if extra else self._headers
        # Never follow a redirect: it would resend the key and the prompt to wherever
        # the Location points. A 3xx is a StatusError instead.
        response = await _open(self._session.post(self._url, data=body, headers=headers,
                                                  allow_redirects=False))
        if on_headers is not None:
            on_headers(response.headers)
        return response


def encode(params: dict[str, Any], *, stream: bool = False) -> bytes:
    """A Messages API request's body; its ``stream`` field only when streaming."""
    return jsoncodec.dumps({**params, "stream": True} if stream else params)


async def _open(request: Awaitable[aiohttp.ClientResponse]) -> aiohttp.ClientResponse:
    """The response of a 2xx; a StatusError for an error answer, ConnectionFailed for a
    transport failure before any answer (as the SDK's APIConnectionError)."""
    try:
        response = await request
    except aiohttp.ClientError as error:
        raise ConnectionFailed(type(error).__name__) from error
    if response.status >= 300:
        async with response:
            raw = await _read(response)
        raise StatusError(response.status, response.headers, json_or_text(raw))
    return response


def _env_proxy(url: str) -> str | None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)


async def _read(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except aiohttp.ClientError as error:
        raise ConnectionFailed(type(error).__name__) from error
