"""The owning side of peer admission: the peer listener's one route, a WebSocket per
asking peer, on which each acquire waits in the owner's own bucket and each reserve in
the owner's own organisation budget, in the same FIFO as this replica's own requests (so
the queue, its capacity and its 429s are the fleet's). A granted reservation is held per
link until the peer settles it, as this replica's own attempts settle theirs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from inference_operator.clock import Clock
from inference_operator.gateway.org_limits import (
    FAILURES,
    Cost,
    OrgBudgets,
    Ticket,
    TooLarge,
)
from inference_operator.gateway.peering import wire
from inference_operator.gateway.peering.identity import PeerIdentity
from inference_operator.gateway.peering.routing import RateRouting
from inference_operator.gateway.ratelimit import Limiter, QueueFull, TurnTooLate

log = logging.getLogger(__name__)


class _Pending:
    def __init__(self, socket: web.WebSocketResponse,
                 request: wire.Acquire | wire.Reserve) -> None:
        self.socket, self.request = socket, request
        self.task: asyncio.Task[None] | None = None


class PeerServer:
    def __init__(self, limiter: Limiter, budgets: OrgBudgets, routing: RateRouting,
                 identity: PeerIdentity, clock: Clock) -> None:
        self._limiter = limiter
        self._budgets = budgets
        # (socket, id) -> a granted reservation, until the peer settles it.
        self._tickets: dict[tuple[int, int], Ticket] = {}
        self._routing = routing
        self._identity = identity
        self._clock = clock
        self._pending: dict[tuple[int, int], _Pending] = {}  # (socket, id) -> acquire
        routing.on_change(self._moved)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(wire.PATH, self._link)
        return app

    async def _link(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get(wire.PROTOCOL_HEADER) != wire.PROTOCOL:
            return web.json_response(
                {"error": f"peer protocol {wire.PROTOCOL} only"}, status=426)
        if not await self._identity.is_peer(request.headers.get("Authorization")):
            return web.json_response({"error": "not a gateway of this fleet"}, status=401)
        peer = request.headers.get(wire.MEMBER_HEADER, "")
        socket = web.WebSocketResponse(heartbeat=wire.HEARTBEAT, max_msg_size=wire.MAX_MESSAGE)
        await socket.prepare(request)
        self._routing.inbound_opened(peer)
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    break
                self._received(socket, json.loads(message.data))
        except ValueError:
            log.warning("peer %s sent what is not the peer protocol: link closed", peer)
        finally:
            for key in [k for k in self._pending if k[0] == id(socket)]:
                pending = self._pending.pop(key)
                if pending.task is not None:
                    pending.task.cancel()
            # Left spent: whether those attempts were made, and what they used, is unknown.
            for key in [k for k in self._tickets if k[0] == id(socket)]:
                del self._tickets[key]
            self._routing.inbound_closed(peer)
            await socket.close()
        return socket

    def _received(self, socket: web.WebSocketResponse, message: Any) -> None:
        if not isinstance(message, dict):
            raise ValueError("not an object")
        if message.get("op") == "cancel":
            key = (id(socket), message.get("id"))
            pending = self._pending.pop(key, None)  # type: ignore[arg-type]
            if pending is not None and pending.task is not None:
                pending.task.cancel()
            # Granted as the caller gave up (its answer not sent yet, or crossing this).
            ticket = self._tickets.pop(key, None)  # type: ignore[arg-type]
            if ticket is not None:
                ticket.release()
            return
        if message.get("op") == "settle":
            self._settle(socket, *wire.parse_settle(message))
            return
        request: wire.Acquire | wire.Reserve
        if message.get("op") == "acquire":
            request = wire.Acquire.parse(message)
            admit = self._admit
        elif message.get("op") == "reserve":
            request = wire.Reserve.parse(message)
            admit = self._reserve
        else:
            raise ValueError("unknown op")
        pending = _Pending(socket, request)
        self._pending[(id(socket), request.id)] = pending
        pending.task = asyncio.create_task(admit(pending), name=f"peer {message['op']}")

    async def _admit(self, pending: _Pending) -> None:
        request = pending.request
        assert isinstance(request, wire.Acquire)
        bucket = self._limiter.by_group(request.group)

        async def acquire() -> dict[str, Any]:
            assert bucket is not None
            deadline = None if request.timeout is None else self._clock.now() + request.timeout
            try:
                await bucket.acquire(priority=request.priority, deadline=deadline)
            except QueueFull as full:
                return {"result": wire.QUEUE_FULL, "retry_after": full.retry_after}
            except TurnTooLate as late:
                return {"result": wire.TOO_LATE, "retry_after": late.retry_after}
            return {"result": wire.GRANTED}

        found = bucket is not None and bucket.requests_per_minute == request.rpm
        await self._reply(pending, await self._decided(pending, found, acquire))

    async def _reserve(self, pending: _Pending) -> None:
        request = pending.request
        assert isinstance(request, wire.Reserve)
        budget = self._budgets.by_group(request.group)
        key = (id(pending.socket), request.id)

        async def reserve() -> dict[str, Any]:
            assert budget is not None
            cost = Cost(*request.cost)
            try:
                budget.check(cost)
                self._tickets[key] = await budget.reserve(cost, request.body_bytes,
                                                          priority=request.priority)
            except QueueFull as full:
                return {"result": wire.QUEUE_FULL, "retry_after": full.retry_after}
            except TooLarge as error:
                return {"result": wire.TOO_LARGE, "limit": error.limit}
            return {"result": wire.GRANTED}

        reply = await self._decided(pending, budget is not None, reserve)
        if pending.socket.closed:  # the link's reservations went with it
            ticket = self._tickets.pop(key, None)
            if ticket is not None:
                ticket.release()
            return
        await self._reply(pending, reply)

    async def _decided(self, pending: _Pending, found: bool,
                       decide: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The answer to an acquire or a reserve: ``moved`` where this replica no longer
        owns the group, ``unknown`` where it has not ``found`` it, else what ``decide``
        says once the group's queue lets it."""
        request = pending.request
        try:
            if not self._routing.owns(request.group):
                return {"id": request.id, "result": wire.MOVED}
            if not found:
                return {"id": request.id, "result": wire.UNKNOWN}
            return {"id": request.id, **await decide()}
        finally:
            self._pending.pop((id(pending.socket), request.id), None)

    @staticmethod
    async def _reply(pending: _Pending, reply: dict[str, Any]) -> None:
        if not pending.socket.closed:
            with contextlib.suppress(ConnectionError):
                await pending.socket.send_json(reply)

    def _settle(self, socket: web.WebSocketResponse, id_: int, event: str,
                message: dict[str, Any]) -> None:
        key = (id(socket), id_)
        ticket = self._tickets.get(key)
        if ticket is None:  # never granted here, or settled already
            return
        if event == "answered":
            ticket.answered(message["headers"])
        elif event == "usage":
            ticket.usage(message.get("usage"))
        else:
            del self._tickets[key]
            if event == "ended":
                ticket.ended()
            elif event == "released":
                ticket.release()
            else:
                kind, retry_after = message.get("kind"), message.get("retry_after")
                if kind not in FAILURES or not (
                        retry_after is None or isinstance(retry_after, int | float)):
                    raise ValueError("malformed failure")
                ticket.failure(kind, retry_after, message["headers"])

    def _moved(self) -> None:
        """Acquires waiting for groups this replica no longer owns: answered ``moved``,
        so they ask the new owner."""
        for key, pending in list(self._pending.items()):
            if not self._routing.owns(pending.request.group) and pending.task is not None:
                del self._pending[key]
                pending.task.cancel()
                socket, request_id = pending.socket, pending.request.id
                if not socket.closed:
                    asyncio.get_running_loop().create_task(self._send(
                        socket, {"id": request_id, "result": wire.MOVED}))

    @staticmethod
    async def _send(socket: web.WebSocketResponse, reply: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError):
            await socket.send_json(reply)
