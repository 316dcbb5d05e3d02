"""The operator's half of the gateways' configuration: the endpoint set, kept in memory
and written into the shard Secrets (api/gateway_config.py) that every gateway watches.

A gateway thus needs nobody to fill it: it reads the set from the API server, whether
the operator is up or not. A write happens only when a shard's content changes, so an
operator restart writes nothing, and concurrent changes to one shard share one write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference_operator.api.gateway_config import (
    OWNER_KEY,
    ConfigFormatError,
    Record,
    Shard,
    Shards,
)

log = logging.getLogger(__name__)


class ConfigMissing(Exception):
    """A shard Secret does not exist; its installer (the chart, the manifests) creates it."""


class ConfigStore(Protocol):
    async def read_config(self, namespace: str, name: str) -> dict[str, str] | None: ...

    async def write_config(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        """False when the Secret does not exist."""
        ...


@dataclass(frozen=True)
class Placement:
    """Where an endpoint's current configuration is: a gateway that serves ``generation``
    of ``shard`` (or a later one) serves it."""

    shard: str
    generation: int


@dataclass
class _ShardState:
    records: dict[str, Record] = field(default_factory=dict)
    generation: int = 0
    # Per endpoint, the generation that first held its current record.
    since: dict[str, int] = field(default_factory=dict)
    changes: int = 0  # counted in memory; ``written`` is the count the Secret holds
    written: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ConfigPublisher:
    def __init__(self, store: ConfigStore, namespace: str, shards: Shards) -> None:
        self.store = store
        self.namespace = namespace
        self.shards = shards
        self._state = {name: _ShardState() for name in shards.names()}

    async def load(self) -> None:
        """What the Secrets hold now, so the operator continues their generations and
        rewrites nothing that is already there."""
        for name, state in self._state.items():
            data = await self.store.read_config(self.namespace, name)
            if data is None:
                log.error("gateway configuration Secret %s/%s is missing; endpoints in it "
                          "cannot be served until it is created", self.namespace, name)
                continue
            shard = Shard.decode(data)
            state.generation = shard.generation
            state.records = {r["inference_id"]: r for r in shard.endpoints}
            state.since = dict.fromkeys(state.records, shard.generation)
        log.info("gateway configuration: %d endpoint(s) in %d shard(s) of %s/%s",
                 len(self.published()), len(self._state), self.namespace,
                 self.shards.base_name)

    def published(self) -> set[str]:
        return {i for state in self._state.values() for i in state.records}

    def placement(self, inference_id: str) -> Placement | None:
        name = self.shards.of(inference_id)
        since = self._state[name].since.get(inference_id)
        return None if since is None else Placement(name, since)

    async def put_endpoint(self, inference_id: str, task_type: str, body: dict[str, Any],
                           owner: tuple[str, str] | None = None) -> Placement:
        """Create or replace in one step (the gateways never see a gap), written once it
        returns. ``owner``: the (namespace, name) of the InferenceEndpoint, which the
        gateways' caller authorization asks RBAC about."""
        record = {"inference_id": inference_id, "task_type": task_type, **body}
        if owner is not None:
            record[OWNER_KEY] = {"namespace": owner[0], "name": owner[1]}
        name = self.shards.of(inference_id)
        state = self._state[name]
        if state.records.get(inference_id) != record:
            state.records[inference_id] = record
            state.since.pop(inference_id, None)
            state.changes += 1
        await self._flush(name)
        # A record put again while our write was in flight is in no generation yet: the
        # next write holds it (ours only superseded), so wait for that one.
        while (placement := self.placement(inference_id)) is None \
                and inference_id in state.records:
            await self._flush(name)
        assert placement is not None  # deleted meanwhile by another caller
        return placement

    async def delete_endpoint(self, inference_id: str) -> None:
        name = self.shards.of(inference_id)
        state = self._state[name]
        if state.records.pop(inference_id, None) is not None:
            state.since.pop(inference_id, None)
            state.changes += 1
        await self._flush(name)

    async def retain(self, inference_ids: Iterable[str]) -> list[str]:
        """Drop every endpoint not listed; returns the ids dropped."""
        wanted = set(inference_ids)
        removed = sorted(self.published() - wanted)
        # All dropped before the first write: an id put again while a write is in flight
        # (a resource taking it meanwhile) must not be dropped by a later step. And one
        # write per shard, not per endpoint.
        for inference_id in removed:
            state = self._state[self.shards.of(inference_id)]
            del state.records[inference_id]
            state.since.pop(inference_id, None)
            state.changes += 1
        # Also every shard whose last write failed (a deletion's, say), so nothing
        # waits for the next change of that shard.
        for name, state in self._state.items():
            if state.written < state.changes:
                await self._flush(name)
        return removed

    async def repair(self) -> list[str]:
        """Rewrite every shard whose Secret no longer holds what was written (emptied,
        recreated or edited by hand); returns their names. Its generation continues
        above both, so every gateway takes the rewrite for news."""
        repaired = []
        for name, state in self._state.items():
            data = await self.store.read_config(self.namespace, name)
            if data is None:
                continue  # the writes say so, with ConfigMissing
            try:
                found = Shard.decode(data)
            except ConfigFormatError:
                found = Shard(-1, ())
            if (found.generation, sorted(found.endpoints, key=_by_id)) == (
                    state.generation, sorted(state.records.values(), key=_by_id)):
                continue
            log.warning("gateway configuration %s/%s was changed by someone else "
                        "(generation %d, %d endpoint(s)); rewriting it", self.namespace,
                        name, found.generation, len(found.endpoints))
            async with state.lock:
                state.generation = max(state.generation, found.generation)
                # What a gateway serves at the old generations is not known now.
                state.since.clear()
                state.changes += 1
            await self._flush(name)
            repaired.append(name)
        return repaired

    async def _flush(self, name: str) -> None:
        state = self._state[name]
        target = state.changes
        # One write at a time per shard; whoever waited meanwhile finds its change in
        # the write that just finished, or writes everything that piled up, once.
        async with state.lock:
            if state.written >= target:
                return
            changes, generation = state.changes, state.generation + 1
            snapshot = dict(state.records)
            shard = Shard(generation, tuple(snapshot.values()))
            if not await self.store.write_config(self.namespace, name, shard.encode()):
                raise ConfigMissing(
                    f"the gateway configuration Secret {self.namespace}/{name} does not "
                    "exist (the chart or manifests/install.yaml create it)")
            state.generation, state.written = generation, changes
            # Records changed during the write are not in this generation.
            for inference_id, record in snapshot.items():
                if state.records.get(inference_id) is record:
                    state.since.setdefault(inference_id, generation)
            log.info("gateway configuration %s: generation %d, %d endpoint(s)", name,
                     generation, len(state.records))


def _by_id(record: Record) -> str:
    return str(record["inference_id"])
