"""A streamed Message: Anthropic's server-sent events, read as the SDK reads them."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from inference_operator.anthropic.errors import ConnectionLost, MalformedReply, StatusError
from inference_operator.anthropic.replies import json_object, json_or_text
from inference_operator.anthropic.slots import Release


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
                                      json_or_text(data.encode()))
                if data:
                    yield json_object(data, "an event")
                stopped = stopped or name == "message_stop"
        except aiohttp.ClientError as error:
            raise ConnectionLost(type(error).__name__) from error
        # Read to the end (so the connection goes back to the pool), then: a clean end of
        # the body before message_stop means the answer was cut short (a proxy or the
        # upstream gave up), which must not reach the caller as a complete one.
        if not stopped:
            raise MalformedReply("the stream ended before message_stop")

    def close(self) -> None:
        # Closing (rather than releasing) drops the connection of an unfinished stream, so
        # the upstream stops generating for a caller that went away.
        self._response.close()
        self._release()


async def _server_sent_events(content: aiohttp.StreamReader
                              ) -> AsyncIterator[tuple[str | None, str]]:
    """(event, data) per SSE event (WHATWG event-stream rules, ``\\n`` or ``\\r\\n``
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
