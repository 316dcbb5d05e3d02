"""Helpers for the gateway tests against the real kube-apiserver: clients as a given
identity, and the configuration shards written as the operator writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway_support import MODEL
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.core_v1 import Secret

from inference_operator.api.gateway_config import OWNER_KEY, Shard, Shards, empty_secret

BASE = "gw-config"
SHARDS = Shards(BASE, 2)
KEY_A, KEY_B = "fake-key-shard-A-1c2d3e", "fake-key-shard-B-4f5a6b"


async def connect_as(kubeconfig: Path) -> AsyncClient:
    return AsyncClient(KubeConfig.from_file(kubeconfig))


def record(inference_id: str, key: str = KEY_A,
           owner: tuple[str, str] | None = None) -> dict[str, Any]:
    """As the operator writes it (Endpoint.stored()); ``owner``: (namespace, name) of its
    InferenceEndpoint."""
    written: dict[str, Any] = {
        "inference_id": inference_id, "task_type": "completion", "service": "anthropic",
        "service_settings": {"api_key": key, "model_id": MODEL,
                             "rate_limit": {"requests_per_minute": 6000}},
        "task_settings": {"max_tokens": 64}}
    if owner is not None:
        written[OWNER_KEY] = {"namespace": owner[0], "name": owner[1]}
    return written


def shard_reader(namespace: str, service_account: str = "gateway") -> list[dict[str, Any]]:
    """The chart's gateway Role, for a test's ServiceAccount: get/list/watch on the shards
    by name, nothing else."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "gateway-config"},
         "rules": [{"apiGroups": [""], "resources": ["secrets"],
                    "resourceNames": SHARDS.names(), "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "gateway-config"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "gateway-config"},
         "subjects": [{"kind": "ServiceAccount", "name": service_account,
                       "namespace": namespace}]},
    ]


class ShardWriter:
    """Writes the shard Secrets of one namespace, as the operator and installer do."""

    def __init__(self, api: AsyncClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace

    async def write(self, index: int, generation: int, *records: dict[str, Any]) -> None:
        await self.put(index, Shard(generation, records).encode())

    async def put(self, index: int, data: dict[str, str] | None) -> None:
        body = empty_secret(SHARDS.name(index), self.namespace)
        if data is not None:
            body["data"] = data
        try:
            await self.api.replace(Secret.from_dict(body))
        except ApiError as error:
            if error.status.code != 404:
                raise
            await self.api.create(Secret.from_dict(body))

    async def delete(self, index: int) -> None:
        await self.api.delete(Secret, SHARDS.name(index), namespace=self.namespace)
