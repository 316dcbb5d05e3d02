"""Config mode: the gateway's endpoints read from the configuration shards the operator
writes (api/gateway_config.py), so replicas run without the operator.

Each shard Secret is listed and watched on its own, by name (``fieldSelector
metadata.name=<shard>``), because a Role's ``resourceNames`` authorizes a list or watch
only in that form: the gateway's identity can read its shards and no other Secret.

What a shard says replaces what the gateway served from it (``ShardSet.apply``).
A shard that cannot be decoded, or one of whose endpoints fails validation, is refused
as a whole, the previous content stays, and it is logged (shard and endpoint, never a
key) and counted (``inference_gateway_config_rejected_total``). A deleted shard leaves
its endpoints served, and so does one recreated without data (as the installer creates
them) until the operator writes it again: an accidental delete must not take endpoints
down."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Secret

from inference_operator.api.gateway_config import DATA_KEY, ConfigFormatError, Shard
from inference_operator.gateway.kubewatch import Object, list_and_watch
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.shards import ShardRejected, ShardSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfigSource:
    api: AsyncClient
    namespace: str
    shards: ShardSet
    metrics: GatewayMetrics

    def start(self) -> list[asyncio.Task[None]]:
        """One task per shard; cancel them to stop."""
        return [asyncio.create_task(list_and_watch(
            self.api, Secret, self.namespace,
            f"configuration shard {self.namespace}/{name}",
            on_list=functools.partial(self._listed, name),
            on_event=functools.partial(self._changed, name),
            field_selector=f"metadata.name={name}"), name=f"shard {name}")
            for name in self.shards.names]

    async def _listed(self, name: str, secrets: list[Object]) -> None:
        if secrets:
            await self._load(name, secrets[0])
        elif self.shards.generation(name) is None:
            log.warning("configuration shard %s/%s does not exist (yet); not ready until "
                        "it does", self.namespace, name)
        else:
            log.warning("configuration shard %s/%s does not exist; still serving what it "
                        "held", self.namespace, name)

    async def _changed(self, name: str, kind: str, secret: Object) -> None:
        if kind == "DELETED":
            log.warning("configuration shard %s/%s was deleted; still serving what it held "
                        "until it is recreated", self.namespace, name)
            return
        await self._load(name, secret)

    async def _load(self, name: str, secret: Object) -> None:
        served = self.shards.generation(name)
        if DATA_KEY not in (secret.get("data") or {}) and served is not None:
            # Recreated empty by the installer after a delete: not yet written, so not
            # "no endpoints" (the operator writes an empty list for that).
            log.warning("configuration shard %s/%s has no %s; still serving generation %d "
                        "until it is written", self.namespace, name, DATA_KEY, served)
            return
        try:
            await self.shards.apply(name, Shard.decode(secret.get("data")))
        except (ConfigFormatError, ShardRejected) as error:
            self.metrics.config_rejected.labels(name).inc()
            log.warning("configuration shard %s/%s (resourceVersion %s) refused, its "
                        "previous content is still served: %s", self.namespace, name,
                        secret.get("metadata", {}).get("resourceVersion"), error)
