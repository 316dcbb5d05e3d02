"""A stream's write-progress timeout: a client that takes none of the output waiting for
it for ``seconds`` is cut (its connection aborted), so the stream's handler ends and
closes the upstream call, which stops Anthropic generating and frees the connection.

Only a write the client does not take waits: aiohttp's ``write()`` returns at once until
the transport's buffer is over its high-water mark, and the kernel's socket buffers (the
client's receive buffer and ours to send) absorb output before that. So a client that
stops reading is cut once those are full and ``seconds`` pass with nothing taken; a slow
upstream with a reading client is never cut (nothing waits to be written).

The gateway's send buffer of a stream's connection is set to a fixed, small size: the
kernel grows it up to ``net.ipv4.tcp_wmem``'s maximum (4 MiB by default) for a client
that does not read, which both delays the cut (the buffer fills first) and holds that
much kernel memory per stalled stream. A stream of tokens needs far less in flight.

One timer per stream, re-armed at most once per ``seconds``, rather than one per write:
a timer set and cancelled per event would be a measurable share of a stream's CPU."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from aiohttp import web

# The kernel doubles it. At 200 ms of round trip this still carries 640 KiB/s, far more
# than a stream of events needs.
SEND_BUFFER = 64 * 1024


class WriteProgress:
    def __init__(self, request: web.Request, response: web.StreamResponse, seconds: float,
                 on_cut: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = request.transport
        self._response = response
        self._seconds = seconds
        self._on_cut = on_cut
        self._waiting_since: float | None = None  # when the write in progress began
        self._timer: asyncio.TimerHandle | None = None
        sock = None if self._transport is None else self._transport.get_extra_info("socket")
        if sock is not None:
            # A client already gone leaves a closed socket: its stream ends at the first write.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    async def write(self, data: bytes) -> None:
        self._begin()
        await self._response.write(data)
        self._waiting_since = None

    async def write_eof(self) -> None:
        self._begin()
        await self._response.write_eof()
        self._waiting_since = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _begin(self) -> None:
        now = self._waiting_since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._seconds, self._check)

    def _check(self) -> None:
        self._timer = None
        since = self._waiting_since
        if since is None:  # nothing waits: the next write sets the timer again
            return
        if self._loop.time() - since < self._seconds:  # a later write, not yet overdue
            self._timer = self._loop.call_at(since + self._seconds, self._check)
            return
        self._on_cut()
        if self._transport is not None:
            # The pending write fails (or, with handler cancellation, the handler is
            # cancelled): either way the stream's cleanup closes the upstream call.
            self._transport.abort()
