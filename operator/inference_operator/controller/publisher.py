"""The operator's half of the gateways' configuration: the endpoint set, kept in memory
and written into the shard Secrets (api/gateway_config.py) that every gateway watches.

A gateway thus needs nobody to fill it: it reads the set from the API server, whether
the operator is up or not. A write happens only when a shard's content changes, so an
operator restart writes nothing, and concurrent changes to one shard share one write.

The shards are shared by every namespace, so no single endpoint may make a shard
unwritable for the others: a record that would not fit is refused before it enters the
shard, a namespace may publish only so many endpoints, and a write that fails anyway
takes back every change it carried (each caller hears of it and retries), so the next
write of that shard (another team's endpoint, a revoked key leaving) goes through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference_operator.api.gateway_config import (
    OWNER_KEY,
    SHARD_MAX_BYTES,
    ConfigFormatError,
    Record,
    Shard,
    Shards,
    record_bytes,
    shard_bytes,
)

log = logging.getLogger(__name__)


class ConfigMissing(Exception):
    """A shard Secret does not exist; its installer (the chart, the manifests) creates it."""


class NotPublished(Exception):
    """A record refused before it entered the configuration; the message says why and
    what to do, for the resource's status."""


class NamespaceQuotaExceeded(NotPublished):
    pass


class ConfigurationFull(NotPublished):
    pass


class WriteInterrupted(Exception):
    """A write cancelled midway (the operator stopping), or the record removed by
    another caller while it was written: trying again settles it."""


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
    # What is meant to be served: ``written`` plus the changes not written yet.
    records: dict[str, Record] = field(default_factory=dict)
    # What the Secret holds, and per endpoint the generation that first held its record.
    written: dict[str, Record] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)
    generation: int = 0
    # Per record in ``records``, its ``record_bytes``, and their sum.
    sizes: dict[str, int] = field(default_factory=dict)
    size: int = 0
    # One future per change not in a write yet; the write that carries it resolves it.
    pending: list[asyncio.Future[None]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ConfigPublisher:
    def __init__(self, store: ConfigStore, namespace: str, shards: Shards, *,
                 max_per_namespace: int | None = None,
                 shard_limit: int = SHARD_MAX_BYTES) -> None:
        self.store = store
        self.namespace = namespace
        self.shards = shards
        self.max_per_namespace = max_per_namespace
        self.shard_limit = shard_limit
        self._state = {name: _ShardState() for name in shards.names()}
        # Ids published per owner namespace, for the per-namespace cap.
        self._owned: dict[str, set[str]] = {}

    async def load(self) -> None:
        """What the Secrets hold now, so the operator continues their generations and
        rewrites nothing that is already there."""
        misplaced = []
        for name, state in self._state.items():
            data = await self.store.read_config(self.namespace, name)
            if data is None:
                log.error("gateway configuration Secret %s/%s is missing; endpoints in it "
                          "cannot be served until it is created", self.namespace, name)
                continue
            shard = Shard.decode(data)
            state.generation = shard.generation
            for record in shard.endpoints:
                if self.shards.of(record["inference_id"]) == name:
                    self._set(state, record["inference_id"], record)
                else:
                    misplaced.append(record)
            state.written = dict(state.records)
            state.since = dict.fromkeys(state.records, shard.generation)
        # Written under another shard count: each goes to its shard now, and only then
        # leaves the old one (``repair`` rewrites that at the first full sync), so the
        # gateways never miss it.
        for record in misplaced:
            state = self._state[self.shards.of(record["inference_id"])]
            if record["inference_id"] not in state.records:
                self._changed(state, record["inference_id"], record)
        for name, state in self._state.items():
            if state.pending:
                await self._flush(name)
        log.info("gateway configuration: %d endpoint(s) in %d shard(s) of %s/%s",
                 len(self.published()), len(self._state), self.namespace,
                 self.shards.base_name)

    def published(self) -> set[str]:
        return {i for state in self._state.values() for i in state.records}

    def placement(self, inference_id: str) -> Placement | None:
        name = self.shards.of(inference_id)
        state = self._state[name]
        record = state.records.get(inference_id)
        if record is None or state.written.get(inference_id) is not record:
            return None
        since = state.since.get(inference_id)
        return None if since is None else Placement(name, since)

    async def put_endpoint(self, inference_id: str, task_type: str, body: dict[str, Any],
                           owner: tuple[str, str] | None = None) -> Placement:
        """Create or replace in one step (the gateways never see a gap), written once it
        returns. ``owner``: the (namespace, name) of the InferenceEndpoint, which the
        gateways' caller authorization asks RBAC about. Raises ``NotPublished`` (nothing
        changed) when the record may not or cannot join its shard."""
        record = {"inference_id": inference_id, "task_type": task_type, **body}
        if owner is not None:
            record[OWNER_KEY] = {"namespace": owner[0], "name": owner[1]}
        name = self.shards.of(inference_id)
        state = self._state[name]
        if state.records.get(inference_id) != record:
            # Checked and changed with no await between: concurrent puts cannot both pass.
            self._admit(name, state, inference_id, record)
            await self._change(name, state, inference_id, record)
        # A record put again while our write was in flight is in no generation yet: the
        # next write holds it (ours only superseded), so wait for that one. Each round
        # is a write, so this ends unless the record keeps changing.
        while (placement := self.placement(inference_id)) is None \
                and inference_id in state.records:
            done = self._future(state)
            await self._flush(name)
            done.result()
        if placement is None:
            raise WriteInterrupted(f"{inference_id!r} was removed while it was written")
        return placement

    async def delete_endpoint(self, inference_id: str) -> bool:
        """True when it was published (it is not any more)."""
        name = self.shards.of(inference_id)
        state = self._state[name]
        if inference_id not in state.records:
            return False
        await self._change(name, state, inference_id, None)
        return True

    async def retain(self, inference_ids: Iterable[str]) -> list[str]:
        """Drop every endpoint not listed; returns the ids dropped."""
        wanted = set(inference_ids)
        removed = sorted(self.published() - wanted)
        # All dropped before the first write: an id put again while a write is in flight
        # (a resource taking it meanwhile) must not be dropped by a later step. And one
        # write per shard, not per endpoint.
        changes = {}
        for inference_id in removed:
            name = self.shards.of(inference_id)
            changes[name] = self._changed(self._state[name], inference_id, None)
        # Every shard is written even if another's write fails; the first failure raises.
        for name in changes:
            await self._flush(name)
        for done in changes.values():
            done.result()
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
                    state.generation, sorted(state.written.values(), key=_by_id)):
                continue
            log.warning("gateway configuration %s/%s was changed by someone else "
                        "(generation %d, %d endpoint(s)); rewriting it", self.namespace,
                        name, found.generation, len(found.endpoints))
            async with state.lock:
                state.generation = max(state.generation, found.generation)
                # What a gateway serves at the old generations is not known now.
                state.since.clear()
                done = self._future(state)
            await self._flush(name)
            done.result()
            repaired.append(name)
        return repaired

    # -- admission ---------------------------------------------------------------------

    def _admit(self, name: str, state: _ShardState, inference_id: str, record: Record) -> None:
        owner = record.get(OWNER_KEY)
        namespace = owner["namespace"] if owner else None
        owned = self._owned.get(namespace, set()) if namespace is not None else set()
        if (self.max_per_namespace is not None and inference_id not in owned
                and len(owned) >= self.max_per_namespace):
            raise NamespaceQuotaExceeded(
                f"namespace {namespace!r} already has {len(owned)} endpoint(s) published, "
                f"the most the operator allows per namespace (its option "
                f"--max-endpoints-per-namespace, the chart's operator.maxEndpointsPerNamespace); "
                "this one is served as soon as one of them is deleted, or ask the cluster "
                "administrator to raise the limit")
        needed = record_bytes(record)
        others = state.size - state.sizes.get(inference_id, 0)
        if shard_bytes(others + needed) > self.shard_limit:
            free = max(0, self.shard_limit - shard_bytes(others))
            raise ConfigurationFull(
                f"the gateways' configuration shard {name} has no room for this endpoint "
                f"({needed} bytes needed, {free} of {self.shard_limit} free); it is served "
                "once other endpoints leave that shard, or ask the cluster administrator to "
                "raise the number of shards (the operator's and gateways' "
                "--gateway-config-shards, the chart's configShards)")

    # -- changes and writes ------------------------------------------------------------

    def _set(self, state: _ShardState, inference_id: str, record: Record | None) -> None:
        """The one place ``records`` changes, so the sizes and owners follow it."""
        old = state.records.pop(inference_id, None)
        state.size -= state.sizes.pop(inference_id, 0)
        if old is not None and (namespace := _owner_namespace(old)) is not None:
            owned = self._owned[namespace]
            owned.discard(inference_id)
            if not owned:
                del self._owned[namespace]
        if record is None:
            return
        state.records[inference_id] = record
        state.sizes[inference_id] = record_bytes(record)
        state.size += state.sizes[inference_id]
        if (namespace := _owner_namespace(record)) is not None:
            self._owned.setdefault(namespace, set()).add(inference_id)

    def _future(self, state: _ShardState) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved even when its caller is gone (cancelled), so asyncio logs nothing.
        done.add_done_callback(lambda future: future.cancelled() or future.exception())
        state.pending.append(done)
        return done

    def _changed(self, state: _ShardState, inference_id: str,
                 record: Record | None) -> asyncio.Future[None]:
        self._set(state, inference_id, record)
        return self._future(state)

    async def _change(self, name: str, state: _ShardState, inference_id: str,
                      record: Record | None) -> None:
        """Make one change and return once a write holds it; raises what that write
        raised, the change then taken back."""
        done = self._changed(state, inference_id, record)
        await self._flush(name)
        done.result()

    async def _flush(self, name: str) -> None:
        """Write every pending change of the shard, at most one write at a time; whoever
        waited meanwhile finds its change written (or failed) by the write before, or
        writes everything that piled up, once. The outcome goes to each change's future,
        not to the caller: the caller's own change may have been in a write before."""
        state = self._state[name]
        async with state.lock:
            if not state.pending:
                return
            batch, state.pending = state.pending, []
            generation = state.generation + 1
            snapshot = dict(state.records)
            shard = Shard(generation, tuple(snapshot.values()))
            try:
                if not await self.store.write_config(self.namespace, name, shard.encode()):
                    raise ConfigMissing(
                        f"the gateway configuration Secret {self.namespace}/{name} does "
                        "not exist (the chart or manifests/install.yaml create it)")
            except asyncio.CancelledError:
                self._failed(name, state, snapshot, batch,
                             WriteInterrupted(f"the write of {name} was cancelled"))
                raise
            except Exception as error:
                self._failed(name, state, snapshot, batch, error)
                return
            previous, state.written, state.generation = state.written, snapshot, generation
            for inference_id, record in snapshot.items():
                if previous.get(inference_id) is not record or inference_id not in state.since:
                    state.since[inference_id] = generation
            for inference_id in set(state.since) - set(snapshot):
                del state.since[inference_id]
            for done in batch:
                done.set_result(None)
            log.info("gateway configuration %s: generation %d, %d endpoint(s)", name,
                     generation, len(snapshot))

    def _failed(self, name: str, state: _ShardState, snapshot: dict[str, Record],
                batch: list[asyncio.Future[None]], error: Exception) -> None:
        """Every change the write carried is taken back: what the Secret holds again,
        for each endpoint not changed since (a newer change keeps its own write). Left in,
        a change the API server refuses would fail every later write of the shard."""
        for inference_id in set(snapshot) | set(state.written):
            if state.records.get(inference_id) is snapshot.get(inference_id):
                self._set(state, inference_id, state.written.get(inference_id))
        for done in batch:
            done.set_exception(error)
        log.warning("gateway configuration %s not written (%s); its %d change(s) taken "
                    "back", name, type(error).__name__, len(batch))


def _owner_namespace(record: Record) -> str | None:
    owner = record.get(OWNER_KEY)
    return owner.get("namespace") if isinstance(owner, dict) else None


def _by_id(record: Record) -> str:
    return str(record["inference_id"])
