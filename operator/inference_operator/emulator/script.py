"""What the emulator does to the next requests: scripted faults and latency knobs.

Faults are queued and each one is used up by the next ``POST /v1/messages``, in order,
so a test can say "429, then 529, then succeed" and get exactly that."""

from __future__ import annotations

from collections import deque
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, description="how many requests this fault applies to")


class ErrorFault(_Fault):
    """An HTTP error response with the real error body."""

    kind: Literal["error"] = "error"
    status: int = Field(ge=400, le=599)
    error_type: str | None = Field(default=None, description="defaults to the status's type")
    message: str = "Emulated error"
    retry_after: str | None = Field(default=None, description="value of the retry-after header")
    headers: dict[str, str] = Field(default_factory=dict)


class DropFault(_Fault):
    """The connection closes before any response byte."""

    kind: Literal["drop"] = "drop"


class StreamErrorFault(_Fault):
    """A streaming reply that sends ``after`` deltas, then an ``event: error``."""

    kind: Literal["stream_error"] = "stream_error"
    after: int = Field(default=1, ge=0)
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


class StreamDropFault(_Fault):
    """A streaming reply that sends ``after`` deltas, then loses the connection."""

    kind: Literal["stream_drop"] = "stream_drop"
    after: int = Field(default=1, ge=0)


class StreamTruncateFault(_Fault):
    """A streaming reply that sends ``after`` deltas, then ends the body cleanly, without
    ``message_stop``: what a proxy that gives up on a long response produces."""

    kind: Literal["stream_truncate"] = "stream_truncate"
    after: int = Field(default=1, ge=0)


class MalformedFault(_Fault):
    """A 200 whose body is not JSON (``body``), for either kind of request: a broken
    proxy or load balancer page in front of the API."""

    kind: Literal["malformed"] = "malformed"
    body: str = '{"id": "msg_'
    content_type: str = "application/json"


Fault = Annotated[
    ErrorFault | DropFault | StreamErrorFault | StreamDropFault | StreamTruncateFault
    | MalformedFault,
    Field(discriminator="kind"),
]
FAULTS = TypeAdapter(list[Fault])


class Latency(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_token: float = Field(default=0.0, ge=0, description="seconds before the response starts")
    per_token: float = Field(default=0.0, ge=0, description="seconds between text deltas")


class Script:
    def __init__(self, latency: Latency) -> None:
        self.latency = latency
        self._faults: deque[Fault] = deque()

    def add(self, faults: list[Fault]) -> None:
        for fault in faults:
            self._faults.extend([fault] * fault.count)

    def take(self) -> Fault | None:
        return self._faults.popleft() if self._faults else None

    def pending(self) -> int:
        return len(self._faults)

    def clear(self) -> None:
        self._faults.clear()
