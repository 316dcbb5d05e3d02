"""The gateways' configuration as the operator writes it into the cluster: the contract
between the two.

The endpoint set (API keys included) is split over a fixed number of Secrets, the
shards, in the release namespace. Their names are known in advance, so each gateway's
RBAC can name them (``resourceNames``) and nothing else. A shard's ``endpoints.json``
holds a generation, raised by the operator on every change of that shard, and its
endpoints as the gateway's PUT bodies plus ``inference_id`` and ``task_type`` (the
records the standalone gateway's state file keeps). A gateway reports, per shard, the
generation it serves (``/healthz``), which is how the operator knows what is served.

A record may carry, besides the PUT body, ``"owner": {"namespace": NS, "name": NAME}``:
the InferenceEndpoint it was made from. With ``--auth kubernetes`` the gateway lets a
caller invoke the endpoint only if RBAC grants it verb ``invoke`` on
``inferenceendpoints`` NAME in NS (a SubjectAccessReview), and refuses every caller an
endpoint without an owner. The owner is never shown in the Elasticsearch API's answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1
DATA_KEY = "endpoints.json"
DEFAULT_SECRET_NAME = "inference-operator-gateway-config"
# Enough room for tens of thousands of endpoints below the API server's object size limit.
DEFAULT_SHARDS = 8
LABELS = {"app.kubernetes.io/component": "gateway-config"}

# A record's optional owner: {"namespace": NS, "name": NAME} of its InferenceEndpoint.
OWNER_KEY = "owner"
# The API server refuses a Secret whose data exceed 1 MiB; a shard that would, cannot be
# written at all, so the operator measures each record against it first.
SHARD_MAX_BYTES = 1024 * 1024
# ``endpoints.json`` without its records: the envelope, at the largest generation.
_ENVELOPE_BYTES = len(b'{"endpoints":[],"generation":-9223372036854775808,"version":%d}'
                      % FORMAT_VERSION)

Record = dict[str, Any]


def _dumps(content: Any) -> str:
    return json.dumps(content, separators=(",", ":"), sort_keys=True)


def record_bytes(record: Record) -> int:
    """What one record adds to its shard's ``endpoints.json``, its separator included."""
    return len(_dumps(record).encode()) + 1


def shard_bytes(record_sizes: int) -> int:
    """The size of an ``endpoints.json`` whose records' ``record_bytes`` sum to this; at
    least what ``Shard.encode`` writes."""
    return _ENVELOPE_BYTES + record_sizes


class ConfigFormatError(ValueError):
    """A shard that this version cannot read."""


@dataclass(frozen=True)
class Shards:
    """Which Secret holds which endpoint."""

    base_name: str = DEFAULT_SECRET_NAME
    count: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("there must be at least one configuration shard")

    def names(self) -> list[str]:
        return [self.name(index) for index in range(self.count)]

    def name(self, index: int) -> str:
        return f"{self.base_name}-{index}"

    def of(self, inference_id: str) -> str:
        """The shard of an id; stable across processes and versions (not ``hash()``)."""
        digest = hashlib.sha256(inference_id.encode()).digest()
        return self.name(int.from_bytes(digest[:8], "big") % self.count)


@dataclass(frozen=True)
class Shard:
    generation: int
    endpoints: tuple[Record, ...]

    def encode(self) -> dict[str, str]:
        """As a Secret's ``data``."""
        payload = _dumps(
            {"version": FORMAT_VERSION, "generation": self.generation,
             "endpoints": sorted(self.endpoints, key=lambda r: r["inference_id"])})
        return {DATA_KEY: base64.b64encode(payload.encode()).decode()}

    @classmethod
    def decode(cls, data: dict[str, str] | None) -> Shard:
        """From a Secret's ``data``; a Secret without it (created empty) is generation 0."""
        if not data or DATA_KEY not in data:
            return cls(0, ())
        try:
            content = json.loads(base64.b64decode(data[DATA_KEY]))
        except ValueError as error:
            raise ConfigFormatError(f"{DATA_KEY} is not base64 JSON: {error}") from None
        version = content.get("version") if isinstance(content, dict) else None
        if version != FORMAT_VERSION:
            raise ConfigFormatError(f"unsupported {DATA_KEY} version {version!r}")
        generation, endpoints = content.get("generation"), content.get("endpoints")
        if not isinstance(generation, int) or not isinstance(endpoints, list) or not all(
                isinstance(e, dict) and isinstance(e.get("inference_id"), str) for e in endpoints):
            raise ConfigFormatError(f"{DATA_KEY} lacks a generation or an endpoint list")
        return cls(generation, tuple(endpoints))


def empty_secret(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A shard as an installer creates it: no data, so re-applying it never wipes what
    the operator wrote (client-side and server-side apply both leave ``data`` alone)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**LABELS, **(labels or {})}}}
