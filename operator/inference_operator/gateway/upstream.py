"""Anthropic's Messages API on the gateway's hot path, and its failures
(:class:`UpstreamError`, which maps each to a retry verdict and an Elasticsearch error).

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
connections) is shared by every endpoint, and nothing is retried here: the gateway runs
its own capped policy (retry.py). Unlike it, each API key may hold only its share of the
pool, and the wait for a connection is bounded (upstream_slots.py)."""

from __future__ import annotations

import email.utils
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

import aiohttp

from inference_operator.gateway import jsoncodec
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.retry import NOT_RETRIED, Verdict
from inference_operator.gateway.upstream_slots import NoSlot, Release, Slots

# What anthropic 2.14.0 sends (``Authorization: Bearer`` and this version); the wire test
# fails when the installed SDK sends something else.
API_VERSION = "2026-10-21"
USER_AGENT = "inference-operator-gateway"
MAX_CONNECTIONS = 1000  # the SDK's default pool size
# A quarter of the pool: four keys must be saturated together before a fifth waits.
MAX_CONNECTIONS_PER_KEY = 250
CONNECTION_WAIT = 1.0  # seconds for a free connection, then 503
RETRYABLE_STATUSES = frozenset({429, 500, 529})
# Status for an error that arrives inside a 200 stream, by Anthropic error type
# (Elasticsearch's AnthropicStreamingProcessor); anything else is an upstream failure.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "overloaded_error": 529,
}
_STATUS_WORDS = {
    401: "an authentication error",
    403: "a permission denied error",
    529: "an Anthropic server is temporarily overloaded",
}


class UpstreamError(Exception):
    """A call to Anthropic that failed, and the one place that decides what the gateway
    makes of it: ``label`` for the upstream metrics, :meth:`verdict` for the retry policy
    and :meth:`es_error` for the client. An upstream 4xx keeps its status; any other
    failure is a 502 (Elasticsearch answers 400; we prefer the honest code). The message
    is Elasticsearch's: ``{what} for request from inference entity id [id]{detail}``."""

    def __init__(self, label: str, what: str, detail: str, *, status: int = 502,
                 verdict: Verdict = NOT_RETRIED, headers: dict[str, str] | None = None) -> None:
        super().__init__(what + detail)
        self.label = label
        self._what = what
        self._detail = detail
        self._status = status
        self._verdict = verdict
        self._headers = headers or {}

    def verdict(self) -> Verdict:
        return self._verdict

    def es_error(self, inference_id: str, api_key: str) -> ESError:
        reason = f"{self._what} for request from inference entity id [{inference_id}]{self._detail}"
        # Upstream messages are not ours: make sure none of them can carry the key out.
        if api_key:
            reason = reason.replace(api_key, "<redacted>")
        # On the chat path Elasticsearch types every upstream failure "anthropic_error".
        return ESError(self._status, "status_exception", reason, self._headers,
                       unified_type="anthropic_error")


class StatusError(UpstreamError):
    """An error answer: a non-2xx status, or an ``event: error`` inside a 200 stream
    (its status then comes from the Anthropic error type)."""

    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        self.status = status  # as received
        self.headers = headers
        self.body = body
        error = object_at(body, "error")
        if status < 300:
            status = _STREAM_ERROR_STATUS.get(str(error.get("type", "")), 500)
        detail = f" status [{status}]"
        if message := str(error.get("message", "")):
            detail += f". Error message: [{message}]"
        hint = retry_after(headers)
        super().__init__(
            str(status), _status_words(status, headers), detail,
            status=status if 400 <= status < 500 else 502,
            verdict=Verdict(True, hint) if status in RETRYABLE_STATUSES else NOT_RETRIED,
            headers={"Retry-After": str(max(1, round(hint)))}
            if status == 429 and hint is not None else None)


class ConnectionFailed(UpstreamError):
    """No answer: the connection failed, dropped or timed out before the answer was read."""

    def __init__(self, cause: str) -> None:
        super().__init__("connection_error", "Failed to reach the upstream service",
                         f": [{cause}]", verdict=Verdict(True))


class ConnectionLost(UpstreamError):
    """The connection failed while a stream was being read: too late to retry."""

    def __init__(self, cause: str) -> None:
        super().__init__("stream_error", "Lost the upstream response", f": [{cause}]")


class NoConnection(UpstreamError):
    """No connection came free within the wait (this key's share of the pool, or the
    whole pool, is in use): a 503 the caller may retry a little later. Not retried here:
    a retry would only wait again."""

    def __init__(self, cause: str, wait: float) -> None:
        super().__init__("no_connection", "No upstream connection came free",
                         f" within [{wait:g}s]: [{cause}]", status=503,
                         headers={"Retry-After": "1"})


class MalformedReply(UpstreamError):
    """A 200 whose body is not what the Messages API sends: not a JSON object, an event
    that is not one, or a stream that ended without its ``message_stop``."""

    def __init__(self, what: str) -> None:
        super().__init__("malformed", "Received an invalid response", f": [{what}]")


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
            return _json_object(await _read(response), "the answer")


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

    async def create(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/messages`` of ``encode(params)``: the Message, as JSON. Encoded
        before the call, since the bytes are all a queued request keeps."""
        release = await self._take_slot()
        try:
            response = await self._send(body)
            async with response:
                raw = await _read(response)
        finally:
            release()
        return _json_object(raw, "the answer")

    async def stream(self, body: bytes) -> MessageStream:
        """``POST /v1/messages`` of ``encode(params, stream=True)``, open once the status
        is 200; its connection is given back when the stream is closed."""
        release = await self._take_slot()
        try:
            return MessageStream(await self._send(body), release)
        except BaseException:
            release()
            raise

    async def _take_slot(self) -> Release:
        try:
            return await self._slots.take(self._key_slots)
        except NoSlot as full:
            raise NoConnection(str(full), self._slots.wait) from None

    async def _send(self, body: bytes) -> aiohttp.ClientResponse:
        # Never follow a redirect: it would resend the key and the prompt to wherever
        # the Location points. A 3xx is an upstream failure (502) instead.
        return await _open(self._session.post(self._url, data=body, headers=self._headers,
                                              allow_redirects=False))


def encode(params: dict[str, Any], *, stream: bool = False) -> bytes:
    """A Messages API request's body; ``stream`` only when streaming, as Elasticsearch
    sends it."""
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
        raise StatusError(response.status, response.headers, _json_or_text(raw))
    return response


class MessageStream:
    """The events of a streamed Message, as the SDK yields them: ``ping`` and events
    without an ``event:`` line are skipped, ``event: error`` raises a StatusError."""

    def __init__(self, response: aiohttp.ClientResponse, release: Release) -> None:
        self._response = response
        # Once, on close() or else when the stream is dropped unread (a generator over
        # it that never started is closed without running its cleanup).
        self._release = weakref.finalize(self, release)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        stopped = False
        try:
            async for name, data in _server_sent_events(self._response.content):
                if name is None or name == "ping":
                    continue
                if name == "error":
                    raise StatusError(self._response.status, self._response.headers,
                                      _json_or_text(data.encode()))
                if data:
                    yield _json_object(data, "an event")
                stopped = stopped or name == "message_stop"
        except aiohttp.ClientError as error:
            raise ConnectionLost(type(error).__name__) from error
        # Read to the end (so the connection goes back to the pool), then: a clean end of
        # the body before message_stop means the answer was cut short (a proxy or the
        # upstream gave up), which must not reach the client as a complete one.
        if not stopped:
            raise MalformedReply("the stream ended before message_stop")

    def close(self) -> None:
        # Closing (rather than releasing) drops the connection of an unfinished stream, so
        # the upstream stops generating for a client that went away.
        self._response.close()
        self._release()


def _env_proxy(url: str) -> str | None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)


async def _server_sent_events(content: aiohttp.StreamReader
                              ) -> AsyncIterator[tuple[str | None, str]]:
    """(event, data) per SSE event (WHATWG event-stream rules, ``\n`` or ``\r\n``
    line ends): several ``data:`` lines join with newlines, comments and ``id``/``retry``
    are ignored, an event without a ``data:`` or ``event:`` field is not dispatched.

    Reads whatever arrived and splits it here: one await per network read rather than
    one per line (an event is two or three lines)."""
    name: str | None = None
    data: list[str] = []
    pending = b""
    async for chunk in content.iter_any():
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            try:
                line = raw.decode().rstrip("\r")
            except UnicodeDecodeError:
                raise MalformedReply("an event is not UTF-8") from None
            if not line:
                if name is not None or data:
                    yield name, "\n".join(data)
                name, data = None, []
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


async def _read(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except aiohttp.ClientError as error:
        raise ConnectionFailed(type(error).__name__) from error


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = jsoncodec.loads(raw)
    except ValueError:
        raise MalformedReply(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedReply(f"{what} is not a JSON object")
    return value


def _json_or_text(raw: bytes) -> Any:
    try:
        return jsoncodec.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms``, then ``retry-after`` in seconds or as an HTTP date."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _status_words(status: int, headers: Mapping[str, str]) -> str:
    if status == 429:
        return _rate_limit_prefix(headers)
    what = _STATUS_WORDS.get(status, "a server error" if status >= 500
                             else "a redirect" if status < 400 else "an unsuccessful")
    return f"Received {what} status code"


def object_at(holder: Any, name: str) -> dict[str, Any]:
    """``holder[name]`` if both are JSON objects, else an empty one: replies are read as
    leniently as the SDK reads them."""
    value = holder.get(name) if isinstance(holder, dict) else None
    return value if isinstance(value, dict) else {}


def _rate_limit_prefix(headers: Mapping[str, str]) -> str:
    def h(name: str) -> str:
        return headers.get(name) or "unknown"

    return (
        "Received a rate limit status code. "
        f"Token limit [{h('anthropic-ratelimit-tokens-limit')}], "
        f"remaining tokens [{h('anthropic-ratelimit-tokens-remaining')}], "
        f"tokens reset [{h('anthropic-ratelimit-tokens-reset')}]. "
        f"Request limit [{h('anthropic-ratelimit-requests-limit')}], "
        f"remaining requests [{h('anthropic-ratelimit-requests-remaining')}], "
        f"request reset [{h('anthropic-ratelimit-requests-reset')}]. "
        f"Retry after [{h('retry-after')}]"
    )
