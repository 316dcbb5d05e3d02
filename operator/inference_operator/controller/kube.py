"""The operator's own Kubernetes calls: read a Secret, patch a status.

kopf watches; for what it does not offer outside its own handlers' context (a status
patch or an Event triggered by a Secret change or a gateway restart, a Secret read) the
operator uses ``kubernetes_asyncio``, so nothing here blocks the event loop.
"""

from __future__ import annotations

import datetime
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from inference_operator import kubeclient
from inference_operator.api.models import GROUP, PLURAL, VERSION

COMPONENT = "inference-operator"
# Requests in flight at once, for this client and for kopf's (controller/login.py).
REQUEST_CONNECTIONS = 16
log = logging.getLogger(__name__)
# kubernetes_asyncio logs every response body at DEBUG ("response body: ..."), the Secrets
# read for their keys included (base64 hides nothing), and ``run --verbose`` puts the root
# logger at DEBUG. This logger stays at INFO so a debug run never writes a key into a log.
logging.getLogger("kubernetes_asyncio.client.rest").setLevel(logging.INFO)


@dataclass(frozen=True)
class SecretValue:
    data: dict[str, str]  # base64, as the API returns it; decoded only where used
    resource_version: str


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._discovery = client.DiscoveryV1Api(api)

    @classmethod
    async def connect(cls) -> Kube:
        # Short requests only (kopf holds the watches): a burst queues for these.
        return cls(await kubeclient.connect(max_connections=REQUEST_CONNECTIONS))

    async def close(self) -> None:
        await self._api.close()

    async def read_secret(self, namespace: str, name: str) -> SecretValue | None:
        try:
            secret = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return SecretValue(secret.data or {}, secret.metadata.resource_version)

    async def read_config(self, namespace: str, name: str) -> dict[str, str] | None:
        """A gateway configuration shard's data; None when the Secret does not exist."""
        value = await self.read_secret(namespace, name)
        return None if value is None else value.data

    async def write_config(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        """Replace a shard's data (a merge patch: the installer's labels stay); False when
        the Secret does not exist."""
        try:
            await self._core.patch_namespaced_secret(
                name, namespace, {"data": data},
                _content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def ready_addresses(self, namespace: str, service: str) -> list[str]:
        """``http://ip:port`` of each ready endpoint of a Service, from its EndpointSlices."""
        slices = await self._discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}")
        addresses = set()
        for endpoint_slice in slices.items:
            ports = [p.port for p in endpoint_slice.ports or () if p.port]
            if not ports or endpoint_slice.address_type not in ("IPv4", "IPv6"):
                continue
            for endpoint in endpoint_slice.endpoints or ():
                # Ready unset counts as ready (the EndpointSlice API's rule).
                if endpoint.conditions is not None and endpoint.conditions.ready is False:
                    continue
                for ip in endpoint.addresses:
                    host = f"[{ip}]" if ":" in ip else ip
                    addresses.add(f"http://{host}:{ports[0]}")
        return sorted(addresses)

    async def list_endpoints(
        self, namespaces: tuple[str, ...] = (), limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Cluster-wide, or per watched namespace (the namespaced RBAC mode allows no more)."""
        kwargs = {"limit": limit} if limit else {}
        if not namespaces:
            listed = await self._custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, **kwargs
            )
            return listed.get("items", [])
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            listed = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kwargs
            )
            items.extend(listed.get("items", []))
        return items

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the status subresource; a vanished object is fine."""
        try:
            await self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status},
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def post_event(
        self, body: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the resource, as ``kubectl describe`` and ``get events`` show."""
        metadata = body["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
                namespace=metadata["namespace"],
            ),
            involved_object=client.V1ObjectReference(
                api_version=body.get("apiVersion"), kind=body.get("kind"),
                name=metadata["name"], namespace=metadata["namespace"],
                uid=metadata.get("uid"), resource_version=metadata.get("resourceVersion"),
            ),
            type=event_type, reason=reason, message=message[:1024],
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT, reporting_instance=os.uname().nodename,
            first_timestamp=now, last_timestamp=now, count=1,
        )
        try:
            await self._core.create_namespaced_event(metadata["namespace"], event)
        except ApiException as error:
            # An Event is a courtesy; the status already carries the same facts.
            log.warning("could not post Event %s on %s/%s: %s", reason,
                        metadata["namespace"], metadata["name"], error.status)
