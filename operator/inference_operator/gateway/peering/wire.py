"""What peers say over their WebSocket, as JSON text messages.

The asking side sends ``{"op": "acquire", "id", "group", "rpm", "priority", "timeout"}``
(``timeout``: seconds left to the request's deadline, or null) for a token of an
endpoint's request-rate bucket, ``{"op": "reserve", "id", "group", "cost", "bytes",
"priority"}`` for a reservation of an organisation budget (``cost``: requests, input and
output tokens; ``bytes``: the request's size, which input is estimated from) and, when
its caller gives up, ``{"op": "cancel", "id"}``. The owner answers each once with
``{"id", "result"}``: ``granted``; ``queue_full`` or ``too_late`` with ``retry_after``
(the 429s a local bucket or budget gives); ``too_large`` with ``limit`` (a reservation no
minute holds: 400); ``moved`` (not the owner: ask again); ``unknown`` (no such group here
yet: admit on the local share). A granted reservation is then settled by ``{"op":
"settle", "id", ...}`` messages, unanswered, as its attempt goes: ``answered`` (the
answer's ``anthropic-ratelimit-*`` headers), ``usage``, ``ended``, ``released`` or
``failure`` (``kind``, ``retry_after``, ``headers``): the owner applies them to the
reservation as it would its own (org_limits.Ticket). A cancel gives back a reservation
granted meanwhile; a link that closes leaves its open reservations spent (a minute's
refill takes them back).

The upgrade request carries the asking gateway's ServiceAccount token (identity.py), its
name and the protocol's version: replicas of another version are refused (426), so peer
admission is off between them while they run together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PATH = "/peer/v1"
PROTOCOL = "2"
PROTOCOL_HEADER = "X-Inference-Peer-Protocol"
MEMBER_HEADER = "X-Inference-Peer"
# Messages are a few dozen bytes, a settle with Anthropic's rate-limit headers a few
# hundred; anything longer is not a peer's.
MAX_MESSAGE = 4096
MAX_HEADERS = 16
# A ping each second, the link closed when its pong is half a second late: a dead or
# frozen peer is noticed within about 1.5 s.
HEARTBEAT = 1.0

GRANTED, QUEUE_FULL, TOO_LATE, TOO_LARGE, MOVED, UNKNOWN = (
    "granted", "queue_full", "too_late", "too_large", "moved", "unknown")
SETTLE_EVENTS = ("answered", "usage", "ended", "released", "failure")


@dataclass(frozen=True)
class Acquire:
    id: int
    group: str
    rpm: int
    priority: bool
    timeout: float | None

    def message(self) -> dict[str, Any]:
        return {"op": "acquire", "id": self.id, "group": self.group, "rpm": self.rpm,
                "priority": self.priority, "timeout": self.timeout}

    @classmethod
    def parse(cls, message: dict[str, Any]) -> Acquire:
        """ValueError when malformed."""
        id_, group, rpm = message.get("id"), message.get("group"), message.get("rpm")
        priority, timeout = message.get("priority"), message.get("timeout")
        if not (isinstance(id_, int) and isinstance(group, str) and len(group) == 32
                and isinstance(rpm, int) and rpm > 0 and isinstance(priority, bool)
                and (timeout is None or isinstance(timeout, int | float))):
            raise ValueError("malformed acquire")
        return cls(id_, group, rpm, priority, None if timeout is None else float(timeout))


def _group(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Reserve:
    id: int
    group: str
    cost: tuple[int, int, int]  # requests, input tokens, output tokens
    body_bytes: int
    priority: bool

    def message(self) -> dict[str, Any]:
        return {"op": "reserve", "id": self.id, "group": self.group, "cost": list(self.cost),
                "bytes": self.body_bytes, "priority": self.priority}

    @classmethod
    def parse(cls, message: dict[str, Any]) -> Reserve:
        """ValueError when malformed."""
        id_, group, cost = message.get("id"), message.get("group"), message.get("cost")
        body_bytes, priority = message.get("bytes"), message.get("priority")
        if not (isinstance(id_, int) and _group(group) and isinstance(cost, list)
                and len(cost) == 3 and all(map(_count, cost)) and _count(body_bytes)
                and isinstance(priority, bool)):
            raise ValueError("malformed reserve")
        return cls(id_, group, (cost[0], cost[1], cost[2]), body_bytes, priority)


def parse_settle(message: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """(reservation id, event, message): ValueError when malformed."""
    id_, event = message.get("id"), message.get("event")
    headers = message.get("headers", {})
    if not (isinstance(id_, int) and event in SETTLE_EVENTS and isinstance(headers, dict)
            and len(headers) <= MAX_HEADERS
            and all(isinstance(v, str) for v in headers.values())):
        raise ValueError("malformed settle")
    return id_, event, message
