"""Who owns a rate-limit group: rendezvous (highest random weight) hashing over the ready
gateways, each named by the address and peer port its Service's EndpointSlice gives.
Every replica computes the same owner from the same view, with no ring to keep, and a
change of membership moves only the groups of the replica that came or went (about 1/N
of them), as gubernator's consistent hashing does."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def group_id(api_key: str, model_id: str, requests_per_minute: int) -> str:
    """A group's name among peers: a digest, so the key never leaves the pod (128 bits:
    no two groups meet). An organisation budget's is its model class's, at rpm 0."""
    material = f"{len(api_key)}:{api_key}\0{model_id}\0{requests_per_minute}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def member(address: str, port: int) -> str:
    """A gateway's name among peers, also where it is dialled: ``host:port``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def owner(group: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for ``group``; None when there is none."""
    return max(members, key=lambda m: _weight(group, m), default=None)


def _weight(group: str, member_name: str) -> bytes:
    return hashlib.blake2b(f"{group}\0{member_name}".encode(), digest_size=8).digest()
