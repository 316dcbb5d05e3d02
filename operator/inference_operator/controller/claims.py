"""Who holds an ``inference_id`` when several resources claim it.

Ids are unique across the gateway. The oldest claim wins (creation time, then
namespace/name), so the verdict never depends on the order events arrive in, and the
next in line takes over by itself when the holder goes away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Claim:
    created: str  # RFC 3339 in UTC from the API server: sorts as text
    namespace: str
    name: str

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}"


def effective_inference_id(body: Mapping[str, Any]) -> str:
    spec = body.get("spec") or {}
    return spec.get("inference_id") or body["metadata"]["name"]


def claim_of(body: Mapping[str, Any]) -> Claim:
    metadata = body["metadata"]
    return Claim(metadata.get("creationTimestamp") or "", metadata["namespace"], metadata["name"])


def holder(claims: Iterable[Claim]) -> Claim | None:
    return min(claims, default=None)
