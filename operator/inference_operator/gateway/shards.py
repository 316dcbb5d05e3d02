"""Config mode: the configuration shards applied to the registry. Each shard's content
replaces what it served before, all or nothing; the registry serves their union."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from inference_operator.api.gateway_config import Record, Shard
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.readiness import Readiness
from inference_operator.gateway.registry import Registry

log = logging.getLogger(__name__)
# Records validated between two yields to the event loop while a shard loads: a shard of
# thousands must not hold up the requests in flight for its whole length.
_YIELD_EVERY = 200


class ShardRejected(ValueError):
    """An endpoint of a shard fails validation; the message names it, never its key."""


class ShardSet:
    def __init__(self, names: Sequence[str], registry: Registry, readiness: Readiness,
                 metrics: GatewayMetrics) -> None:
        self.names = tuple(names)
        self._registry = registry
        self._readiness = readiness
        self._metrics = metrics
        self._served: dict[str, dict[str, Endpoint]] = {}
        self._generations: dict[str, int] = {}

    def generation(self, shard: str) -> int | None:
        """The generation of a shard being served; None before it was first loaded."""
        return self._generations.get(shard)

    def generations(self) -> dict[str, int | None]:
        """Each shard's generation being served (None: not loaded yet), which the operator
        compares with the generations it wrote."""
        return {name: self._generations.get(name) for name in self.names}

    async def apply(self, name: str, shard: Shard) -> None:
        """Serve ``shard`` as the whole content of shard ``name``: its endpoints that are
        not in it go, new and changed ones are validated as a PUT is, unchanged ones keep
        their Endpoint (and with it their bucket's state). All or nothing: when one
        endpoint fails validation, ShardRejected and the previous content stays."""
        old = self._served.get(name, {})
        new: dict[str, Endpoint] = {}
        added = changed = 0
        for index, record in enumerate(shard.endpoints):
            if index and not index % _YIELD_EVERY:
                await asyncio.sleep(0)
            inference_id = record["inference_id"]
            current = old.get(inference_id)
            # The operator writes what stored() returns, so equal means unchanged.
            if current is not None and current.stored() == record:
                new[inference_id] = current
                continue
            try:
                new[inference_id] = self._registry.from_record(record)
            except ESError as error:
                raise ShardRejected(
                    f"endpoint [{inference_id}]: {_without_key(error.reason, record)}") from None
            if current is None:
                added += 1
            else:
                changed += 1
        # No await from here on: a request sees the old shard or the new one, not a mix.
        self._served[name] = new
        removed = [inference_id for inference_id in old if inference_id not in new]
        for inference_id in removed:
            if self._registry.find(inference_id) is old[inference_id]:
                # Still in another shard (moving between shards): that copy serves.
                self._registry.replace(inference_id, next(
                    (other[inference_id] for other in self._served.values()
                     if inference_id in other), None))
        self._registry.serve(new.values())
        previous = self._generations.get(name)
        self._generations[name] = shard.generation
        self._metrics.config_generation.labels(name).set(shard.generation)
        if added or changed or removed or previous != shard.generation:
            log.info("shard %s at generation %d: %d endpoint(s), %d added, %d changed, "
                     "%d removed", name, shard.generation, len(new), added, changed,
                     len(removed))
        if previous is None and len(self._generations) == len(self.names):
            log.info("every configuration shard loaded (%d endpoints); ready",
                     len(self._registry))
        self._readiness.loaded(name)


def _without_key(text: str, record: Record) -> str:
    """A validation message about a record, its key masked: messages redact the api_key
    field, but a key misplaced elsewhere in the record would be quoted."""
    settings = record.get("service_settings")
    key = settings.get("api_key") if isinstance(settings, dict) else None
    return text.replace(key, "<redacted>") if isinstance(key, str) and key else text
