"""What peers say over their WebSocket, as JSON text messages.

The asking side sends ``{"op": "acquire", "id", "group", "rpm", "priority", "timeout"}``
(``timeout``: seconds left to the request's deadline, or null) and, when its caller gives
up, ``{"op": "cancel", "id"}``. The owner answers each acquire once with ``{"id",
"result"}``: ``granted``; ``queue_full`` or ``too_late`` with ``retry_after`` (the 429s a
local bucket gives); ``moved`` (not the owner: ask again); ``unknown`` (no such group here
yet: admit on the local share). The upgrade request carries the asking gateway's
ServiceAccount token (identity.py), its name and the protocol's version: replicas of
another version are refused (426), so peer admission is off between them while they run
together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PATH = "/peer/v1"
PROTOCOL = "1"
PROTOCOL_HEADER = "X-Inference-Peer-Protocol"
MEMBER_HEADER = "X-Inference-Peer"
# Messages are a few dozen bytes; anything longer is not a peer's.
MAX_MESSAGE = 1024
# A ping each second, the link closed when its pong is half a second late: a dead or
# frozen peer is noticed within about 1.5 s.
HEARTBEAT = 1.0

GRANTED, QUEUE_FULL, TOO_LATE, MOVED, UNKNOWN = (
    "granted", "queue_full", "too_late", "moved", "unknown")


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
