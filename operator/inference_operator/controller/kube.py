"""The operator's own Kubernetes calls: read a Secret, patch a status.

kopf watches; for what it does not offer outside its own handlers' context (a status
patch or an Event triggered by a Secret change or a gateway restart, a Secret read) the
operator uses lightkube's async client, so nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Secret
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from inference_operator import kubeclient
from inference_operator.api.models import GROUP, KIND, PLURAL, VERSION

COMPONENT = "inference-operator"
# Requests in flight at once, for this client and for kopf's (controller/login.py): each
# TLS connection holds a 256 KiB read buffer, and a burst would open one per request.
REQUEST_CONNECTIONS = 16
log = logging.getLogger(__name__)
InferenceEndpoint = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)


@dataclass(frozen=True)
class SecretValue:
    # base64, as the API returns it; decoded only where used. Out of the repr: a log line
    # or traceback that shows the object must not show the Secret's data.
    data: dict[str, str] = field(repr=False)
    resource_version: str


class Kube:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        # The client's pool takes 100 connections; requests beyond these wait here.
        self._in_flight = asyncio.Semaphore(REQUEST_CONNECTIONS)

    @classmethod
    async def connect(cls) -> Kube:
        return cls(await kubeclient.connect())

    async def close(self) -> None:
        await self._client.close()

    async def read_secret(self, namespace: str, name: str) -> SecretValue | None:
        try:
            async with self._in_flight:
                secret = await self._client.get(Secret, name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise
        return SecretValue(dict(secret.data or {}), secret.metadata.resourceVersion)

    async def read_config(self, namespace: str, name: str) -> dict[str, str] | None:
        """A gateway configuration shard's data; None when the Secret does not exist."""
        value = await self.read_secret(namespace, name)
        return None if value is None else value.data

    async def write_config(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        """Replace a shard's data (a merge patch: the installer's labels stay); False when
        the Secret does not exist."""
        try:
            async with self._in_flight:
                await self._client.patch(Secret, name, {"data": data}, namespace=namespace,
                                         patch_type=PatchType.MERGE)
        except ApiError as error:
            if error.status.code == 404:
                return False
            raise
        return True

    async def ready_addresses(self, namespace: str, service: str) -> list[str]:
        """``http://ip:port`` of each ready endpoint of a Service, from its EndpointSlices."""
        addresses = set()
        async with self._in_flight:
            slices = [s async for s in self._client.list(
                EndpointSlice, namespace=namespace,
                labels={"kubernetes.io/service-name": service})]
        for endpoint_slice in slices:
            ports = [p.port for p in endpoint_slice.ports or () if p.port]
            if not ports or endpoint_slice.addressType not in ("IPv4", "IPv6"):
                continue
            for endpoint in endpoint_slice.endpoints or ():
                # Ready unset counts as ready (the EndpointSlice API's rule).
                if endpoint.conditions is not None and endpoint.conditions.ready is False:
                    continue
                for ip in endpoint.addresses:
                    host = f"[{ip}]" if ":" in ip else ip
                    addresses.add(f"http://{host}:{ports[0]}")
        return sorted(addresses)

    async def endpoint_keys(self, namespaces: tuple[str, ...] = (), *,
                            first_only: bool = False) -> set[tuple[str, str]]:
        """(namespace, name) of every InferenceEndpoint, cluster-wide or per watched
        namespace (the namespaced RBAC mode allows no more); ``first_only``: one page of
        one, to check the API answers."""
        keys = set()
        async with self._in_flight:
            for namespace in namespaces or (None,):
                async for item in self._client.list(
                        InferenceEndpoint, namespace=namespace or ALL_NS,
                        chunk_size=1 if first_only else 500):
                    keys.add((item.metadata.namespace, item.metadata.name))
                    if first_only:
                        return keys
        return keys

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the status subresource; a vanished object is fine."""
        try:
            async with self._in_flight:
                await self._client.patch(InferenceEndpoint.Status, name, {"status": status},
                                         namespace=namespace, patch_type=PatchType.MERGE)
        except ApiError as error:
            if error.status.code != 404:
                raise

    async def post_event(
        self, body: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the resource, as ``kubectl describe`` and ``get events`` show."""
        metadata = body["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        event = Event(
            metadata=ObjectMeta(name=f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
                                namespace=metadata["namespace"]),
            involvedObject=ObjectReference(
                apiVersion=body.get("apiVersion"), kind=body.get("kind"),
                name=metadata["name"], namespace=metadata["namespace"],
                uid=metadata.get("uid"), resourceVersion=metadata.get("resourceVersion"),
            ),
            type=event_type, reason=reason, message=message[:1024],
            source=EventSource(component=COMPONENT),
            reportingComponent=COMPONENT, reportingInstance=os.uname().nodename,
            firstTimestamp=now, lastTimestamp=now, count=1,
        )
        try:
            async with self._in_flight:
                await self._client.create(event)
        except ApiError as error:
            # An Event is a courtesy; the status already carries the same facts.
            log.warning("could not post Event %s on %s/%s: %s", reason,
                        metadata["namespace"], metadata["name"], error.status.code)
