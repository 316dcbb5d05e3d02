"""The cluster-wide rate limit: how many gateways share it, from the EndpointSlices of
their Service (``--peers-service``).

Each replica enforces rpm/N for every group, N being the ready endpoints of the Service
(this replica included once it is ready), so N replicas together allow rpm. An endpoint
counts when its ``conditions.ready`` is true or null (the EndpointSlice API: null means
ready); one that appears in several slices (dual stack) counts once.

With peer admission on, the same slices also name the peers: each ready endpoint's first
address with the slice's port named ``peer`` (a slice without one names none)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.discovery_v1 import EndpointSlice

from inference_operator.gateway.kubewatch import Object, list_and_watch
from inference_operator.gateway.peering import owners
from inference_operator.gateway.peering.routing import RateRouting
from inference_operator.gateway.rate_sharing import RateSharing

log = logging.getLogger(__name__)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PEER_PORT_NAME = "peer"


class Peers:
    def __init__(self, api: AsyncClient, namespace: str, service: str,
                 sharing: RateSharing, routing: RateRouting) -> None:
        self._api = api
        self._namespace = namespace
        self._service = service
        self._sharing = sharing
        self._routing = routing
        self._ready: dict[str, set[str]] = {}  # slice name -> its ready endpoints
        self._members: dict[str, set[str]] = {}  # slice name -> its ready peers

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(list_and_watch(
            self._api, EndpointSlice, self._namespace,
            f"EndpointSlices of service {self._namespace}/{self._service}",
            on_list=self._listed, on_event=self._changed,
            label_selector=f"{SERVICE_NAME_LABEL}={self._service}"), name="peers")

    async def _listed(self, slices: list[Object]) -> None:
        self._ready = {s["metadata"]["name"]: ready_endpoints(s) for s in slices}
        self._members = {s["metadata"]["name"]: ready_peers(s) for s in slices}
        self._update()

    async def _changed(self, kind: str, endpoint_slice: Object) -> None:
        name = endpoint_slice["metadata"]["name"]
        if kind == "DELETED":
            self._ready.pop(name, None)
            self._members.pop(name, None)
        else:
            self._ready[name] = ready_endpoints(endpoint_slice)
            self._members[name] = ready_peers(endpoint_slice)
        self._update()

    def _update(self) -> None:
        self._sharing.set_replicas(len(set().union(*self._ready.values())))
        self._routing.set_members(set().union(*self._members.values()))


def ready_endpoints(endpoint_slice: Object) -> set[str]:
    """The identities of a slice's ready endpoints: the object behind it (a Pod) where it
    names one, else its addresses."""
    return {_identity(e) for e in endpoint_slice.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") is not False}


def ready_peers(endpoint_slice: Object) -> set[str]:
    """Where the slice's ready endpoints take peer links: ``address:port``."""
    port = next((p.get("port") for p in endpoint_slice.get("ports") or []
                 if p.get("name") == PEER_PORT_NAME and p.get("port")), None)
    if port is None:
        return set()
    return {owners.member(e["addresses"][0], port)
            for e in endpoint_slice.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") is not False and e.get("addresses")}


def _identity(endpoint: dict[str, Any]) -> str:
    ref = endpoint.get("targetRef") or {}
    if ref.get("name"):
        return f"{ref.get('kind')}/{ref.get('namespace')}/{ref['name']}"
    return ",".join(sorted(endpoint.get("addresses") or []))
