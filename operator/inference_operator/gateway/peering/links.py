"""The asking side of peer admission: one WebSocket to each ready peer, opened as soon as
the peer is seen and kept open (heartbeats; reopened with backoff when it drops), on
which any number of admissions wait at once, each cancellable (wire.py): tokens of an
endpoint's bucket, and reservations of an organisation budget, settled over the same
link as their attempt goes (RemoteTicket)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from inference_operator.anthropic.errors import AnthropicError
from inference_operator.clock import Clock
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import (
    SPEND_LIMITED,
    Cost,
    OrgBudget,
    TooLarge,
    failure_of,
    ratelimit_headers,
)
from inference_operator.gateway.peering import wire
from inference_operator.gateway.ratelimit import Bucket, QueueFull, TurnTooLate

log = logging.getLogger(__name__)
RECONNECT_MIN, RECONNECT_MAX = 0.2, 2.0
CONNECT_TIMEOUT = 2.0


class Unanswered(Exception):
    """The owner cannot decide (no link, or it has no such group yet): admit on the local
    share instead."""


class Moved(Exception):
    """The peer asked no longer owns the group: ask its new owner."""


class Link:
    def __init__(self, peer: str, links: Links) -> None:
        self.peer = peer
        self._links = links
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._ids = itertools.count(1)
        self.task = asyncio.create_task(self._run(), name=f"peer link {peer}")

    @property
    def up(self) -> bool:
        return self._socket is not None and not self._socket.closed

    async def acquire(self, bucket: Bucket, *, priority: bool, deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.0, deadline - self._links.clock.now())
        reply = await self._ask(lambda id_: wire.Acquire(
            id_, bucket.group_id, bucket.requests_per_minute, priority, timeout).message())
        result = reply.get("result")
        wait = _retry_after(reply)
        if result == wire.GRANTED:
            return
        if result == wire.QUEUE_FULL:
            raise QueueFull(bucket.name, max(1, int(wait)))
        if result == wire.TOO_LATE:
            raise TurnTooLate(bucket.name, wait)
        self._unanswered(result)

    async def reserve(self, budget: OrgBudget, cost: Cost, body_bytes: int, *,
                      priority: bool) -> RemoteTicket:
        """A reservation of the owner's budget, to be settled through the ticket."""
        reply = await self._ask(lambda id_: wire.Reserve(
            id_, budget.group_id, (cost.requests, cost.input_tokens, cost.output_tokens),
            body_bytes, priority).message())
        result = reply.get("result")
        granted = reply.get("id")
        if result == wire.GRANTED and isinstance(granted, int):
            return RemoteTicket(self, granted, budget, self._links.clock.now())
        if result == wire.QUEUE_FULL:
            raise QueueFull(budget.name, max(1, int(_retry_after(reply))))
        limit = reply.get("limit")
        if result == wire.TOO_LARGE and isinstance(limit, int):
            raise TooLarge(cost.output_tokens, limit, budget.model_class)
        self._unanswered(result)
        raise AssertionError("unreachable")

    def _unanswered(self, result: object) -> None:
        if result == wire.MOVED:
            raise Moved(self.peer)
        raise Unanswered(self.peer)

    async def _ask(self, message: Callable[[int], dict[str, Any]]) -> dict[str, object]:
        """Send the message made for a new id; the owner's one answer to it."""
        socket = self._socket
        if socket is None or socket.closed:
            raise Unanswered(self.peer)
        id_ = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[id_] = answer
        try:
            await socket.send_json(message(id_))
            return await answer
        except asyncio.CancelledError:
            # The caller gave up: the owner takes it out of its queue. A token granted as
            # this message crosses it is lost, never one too many; a reservation the
            # owner gives back.
            if not socket.closed:
                with contextlib.suppress(Exception):
                    await socket.send_json({"op": "cancel", "id": id_})
            raise
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            raise Unanswered(self.peer) from None
        finally:
            self._waiting.pop(id_, None)

    def settle(self, id_: int, event: str, **fields: Any) -> None:
        """Tell the owner how a reservation's attempt went; nothing to wait for. With the
        link gone the owner has dropped the reservation already."""
        socket = self._socket
        if socket is not None and not socket.closed:
            self._links.send_later(socket, {"op": "settle", "id": id_, "event": event,
                                            **fields})

    async def _run(self) -> None:
        pause = RECONNECT_MIN
        while True:
            try:
                # The token file is read again each time (kubelet rotates it), off the loop.
                headers = await asyncio.to_thread(self._links.headers)
                async with self._links.session.ws_connect(
                        f"http://{self.peer}{wire.PATH}", headers=headers,
                        heartbeat=wire.HEARTBEAT, max_msg_size=wire.MAX_MESSAGE) as socket:
                    self._socket, pause = socket, RECONNECT_MIN
                    log.info("peer link to %s up", self.peer)
                    await self._read(socket)
                log.warning("peer link to %s closed: its groups admit on the local share "
                            "until it is back", self.peer)
            except asyncio.CancelledError:
                raise
            except aiohttp.WSServerHandshakeError as refused:
                log.warning("peer %s refused the link (%d%s): its groups admit on the local "
                            "share", self.peer, refused.status,
                            ", another protocol version" if refused.status == 426 else "")
            except (OSError, aiohttp.ClientError, TimeoutError) as error:
                log.debug("peer link to %s: %s", self.peer, type(error).__name__)
            finally:
                self._socket = None
                for answer in self._waiting.values():
                    if not answer.done():
                        answer.set_exception(ConnectionError(self.peer))
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(RECONNECT_MAX, pause * 2)

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            reply = json.loads(message.data)
            answer = self._waiting.get(reply.get("id")) if isinstance(reply, dict) else None
            if answer is not None and not answer.done():
                answer.set_result(reply)


class Links:
    def __init__(self, member: str, token: Callable[[], str], clock: Clock,
                 metrics: GatewayMetrics) -> None:
        """``token``: this gateway's peer token as it is now (kubelet rotates it)."""
        self.clock = clock
        self._member = member
        self._token = token
        self._links: dict[str, Link] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        metrics.peer_links.labels("up").set_function(
            lambda: sum(link.up for link in self._links.values()))
        metrics.peer_links.labels("down").set_function(
            lambda: sum(not link.up for link in self._links.values()))

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}", wire.MEMBER_HEADER: self._member,
                wire.PROTOCOL_HEADER: wire.PROTOCOL}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Never through a proxy from the environment: peers are in-cluster.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT))
        return self._session

    def update(self, peers: set[str] | frozenset[str]) -> None:
        for gone in set(self._links) - set(peers):
            self._links.pop(gone).task.cancel()
        for peer in set(peers) - set(self._links):
            self._links[peer] = Link(peer, self)

    def send_later(self, socket: aiohttp.ClientWebSocketResponse,
                   message: dict[str, Any]) -> None:
        """Send without waiting (settles are called from code that does not await)."""
        task = asyncio.get_running_loop().create_task(_send(socket, message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def live(self, peer: str) -> Link | None:
        link = self._links.get(peer)
        return link if link is not None and link.up else None

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.task.cancel()
        for link in links:
            with contextlib.suppress(asyncio.CancelledError):
                await link.task
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _send(socket: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
        await socket.send_json(message)


def _retry_after(reply: Mapping[str, object]) -> float:
    retry_after = reply.get("retry_after")
    return float(retry_after) if isinstance(retry_after, int | float) else 1.0


class RemoteTicket:
    """A reservation the budget's owner among the peers holds: what the attempt's answer
    says goes to the owner (wire.py, settle), and what it tells of the organisation to the
    budget here too, which admits on its own share when the owner cannot be asked, and
    shows the spend limit in this replica's metrics."""

    def __init__(self, link: Link, id_: int, local: OrgBudget, sent_at: float) -> None:
        self._link, self._id, self._local, self._sent_at = link, id_, local, sent_at
        self._settled = False

    def answered(self, headers: Mapping[str, str]) -> None:
        ratelimit = ratelimit_headers(headers)
        self._local.answered(ratelimit, self._sent_at)
        self._link.settle(self._id, "answered", headers=ratelimit)

    def usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._link.settle(self._id, "usage", usage={
                name: value for name, value in usage.items()
                if name in ("input_tokens", "cache_creation_input_tokens", "output_tokens")
                and isinstance(value, int)})

    def ended(self) -> None:
        self._end("ended")

    def release(self) -> None:
        self._end("released")

    def failed(self, error: AnthropicError) -> None:
        kind, retry_after, headers = failure_of(error)
        if headers:
            self._local.observe(headers, self._sent_at)
        if kind == SPEND_LIMITED:
            self._local.spend_limited()
        self._end("failure", kind=kind, retry_after=retry_after, headers=headers)

    def _end(self, event: str, **fields: Any) -> None:
        if not self._settled:
            self._settled = True
            self._link.settle(self._id, event, **fields)

