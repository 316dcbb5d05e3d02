"""The gateway's behaviour, independent of HTTP: the endpoint registry, filled by its
admin operations (standalone) or by configuration shards (config mode), and inference
through rate limit, queue, timeout and retries."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any, TypeVar

from pydantic import SecretStr

from inference_operator.api.gateway_config import OWNER_KEY, Record, Shard
from inference_operator.api.settings import TaskSettings
from inference_operator.gateway import errors, validation
from inference_operator.gateway.endpoints import Endpoint, Owner
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics, Usage
from inference_operator.gateway.ratelimit import Limiter, QueueFull
from inference_operator.gateway.request_memory import (
    Held,
    RequestMemory,
    default_budget,
    memory_limit,
)
from inference_operator.gateway.retry import RetryPolicy, run_with_retries
from inference_operator.gateway.state import StateFile
from inference_operator.gateway.timeunits import TimeValue
from inference_operator.gateway.upstream import (
    MessageStream,
    Upstream,
    UpstreamError,
    object_at,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# Records validated between two yields to the event loop while a shard loads: a shard of
# thousands must not hold up the requests in flight for its whole length.
_YIELD_EVERY = 200


class ShardRejected(ValueError):
    """An endpoint of a shard fails validation; the message names it, never its key."""


class Gateway:
    def __init__(
        self,
        upstream: Upstream,
        *,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        state: StateFile | None = None,
        shards: Sequence[str] = (),
        metrics: GatewayMetrics | None = None,
        request_memory: RequestMemory | None = None,
    ) -> None:
        self.upstream = upstream
        self.limiter = limiter or Limiter()
        self.retry = retry or RetryPolicy()
        self.state = state
        self.metrics = metrics or GatewayMetrics()
        self.request_memory = request_memory or RequestMemory(default_budget(memory_limit()))
        self.metrics.request_memory.set_function(lambda: self.request_memory.held)
        self.metrics.request_memory_limit.set(self.request_memory.budget)
        # Config mode: the shards whose union is the endpoint set; ready once each was
        # loaded once. Standalone, ready at once: a state file is loaded (start) before
        # any listener exists.
        self.shards = tuple(shards)
        self.synced = not self.shards
        self.draining = False  # shutting down: not ready, connections closed after answers
        self.metrics.ready.set(int(self.synced))
        self.metrics.queue_capacity.set(self.limiter.queue_capacity)
        self._endpoints: dict[str, Endpoint] = {}
        self._shard_endpoints: dict[str, dict[str, Endpoint]] = {}
        self._generations: dict[str, int] = {}

    async def start(self) -> None:
        await self.upstream.start()
        if self.state is None:
            return
        for record in self.state.load():
            endpoint = self._from_record(record)
            self._endpoints[endpoint.inference_id] = endpoint
        self.metrics.endpoints.set(len(self._endpoints))
        log.info("restored %d endpoint(s) from %s", len(self._endpoints), self.state.path)

    async def close(self) -> None:
        await self.upstream.close()

    # -- admin -------------------------------------------------------------------------

    async def create(self, inference_id: str, path_task_type: str | None,
                     raw: bytes) -> dict[str, Any]:
        validation.check_inference_id(inference_id)
        if path_task_type is not None:
            validation.check_task_type(path_task_type)
        body, task_type = validation.parse_put(raw, path_task_type)
        if inference_id in self._endpoints:
            raise errors.already_exists(inference_id)
        settings = body.service_settings
        endpoint = self._endpoint(inference_id, task_type, settings.api_key, settings.model_id,
                                  settings.rate_limit.requests_per_minute, body.task_settings)
        self._endpoints[inference_id] = endpoint
        await self._persist()
        log.info("endpoint [%s] created: model %s, %d rpm", inference_id, endpoint.model_id,
                 endpoint.requests_per_minute)
        return endpoint.public()

    async def update(self, inference_id: str, path_task_type: str | None,
                     raw: bytes) -> dict[str, Any]:
        validation.check_inference_id(inference_id)
        if path_task_type is not None:
            validation.check_task_type(path_task_type)
        body, task_type = validation.parse_update(raw, path_task_type)
        current = self._endpoints.get(inference_id)
        if current is None:
            raise errors.not_found(inference_id)
        if task_type not in (None, "any", current.task_type):
            raise errors.bad_request("Task type must match the task type of the existing endpoint")
        api_key = body.service_settings.api_key if body.service_settings else current.api_key
        endpoint = self._endpoint(inference_id, current.task_type, api_key, current.model_id,
                                  current.requests_per_minute,
                                  body.task_settings or current.task_settings, current.owner)
        self._endpoints[inference_id] = endpoint
        await self._persist()
        log.info("endpoint [%s] updated (%s)", inference_id, ", ".join(
            name for name, given in (("api key", body.service_settings),
                                     ("task settings", body.task_settings)) if given))
        return endpoint.public()

    async def delete(self, inference_id: str, path_task_type: str | None,
                     *, dry_run: bool = False) -> dict[str, Any]:
        endpoint = self._lookup(inference_id, path_task_type)
        if dry_run:
            return {"acknowledged": False, "pipelines": [], "indexes": [], "error_message": ""}
        del self._endpoints[endpoint.inference_id]
        self.metrics.forget(endpoint.inference_id)
        await self._persist()
        log.info("endpoint [%s] deleted", inference_id)
        return {"acknowledged": True, "pipelines": [], "indexes": []}

    def select(self, inference_id: str | None, task_type: str | None) -> list[Endpoint]:
        """What a GET names: every endpoint (of a task type), or one (404 if absent)."""
        if inference_id in (None, "_all", "*"):
            if task_type is not None:
                validation.check_task_type(task_type)
            chosen = [e for e in self._endpoints.values()
                      if task_type in (None, "any", e.task_type)]
        else:
            chosen = [self._lookup(inference_id, task_type)]
        return sorted(chosen, key=lambda e: e.inference_id)

    def describe(self, inference_id: str | None, task_type: str | None) -> dict[str, Any]:
        return self.render(self.select(inference_id, task_type))

    @staticmethod
    def render(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
        """A GET's answer."""
        return {"endpoints": [e.public() for e in endpoints]}

    def find(self, inference_id: str) -> Endpoint | None:
        return self._endpoints.get(inference_id)

    def health(self) -> dict[str, Any]:
        health = {"status": "ok", "endpoints": len(self._endpoints),
                  "replicas": self.limiter.replicas}
        if self.shards:
            # What the operator compares with the generations it wrote; null: not loaded.
            health["config"] = {name: self._generations.get(name) for name in self.shards}
        return health

    def unready_reason(self) -> str | None:
        """Why ``/readyz`` is 503; None when ready."""
        if self.draining:
            return "shutting down"
        if self.synced:
            return None
        missing = [name for name in self.shards if name not in self._generations]
        return f"waiting for the configuration shard(s) {', '.join(missing)}"

    def begin_shutdown(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)

    def set_replicas(self, replicas: int) -> None:
        """How many ready gateways share each rate limit (``--peers-service``). Frozen
        once draining: this replica has left the ready count but still answers for the
        shutdown delay, and with the smaller count every replica would allow more than
        its share while the others re-share."""
        if self.draining:
            return
        before = self.limiter.replicas
        self.limiter.set_replicas(replicas)
        if self.limiter.replicas != before:
            log.info("%d ready gateway(s) share each rate limit: this one allows rpm/%d",
                     self.limiter.replicas, self.limiter.replicas)
        self.metrics.replicas.set(self.limiter.replicas)

    # -- config mode -------------------------------------------------------------------

    def generation(self, shard: str) -> int | None:
        """The generation of a shard being served; None before it was first loaded."""
        return self._generations.get(shard)

    async def apply_shard(self, name: str, shard: Shard) -> None:
        """Serve ``shard`` as the whole content of shard ``name``: its endpoints that are
        not in it go, new and changed ones are validated as a PUT is, unchanged ones keep
        their Endpoint (and with it their bucket's state). All or nothing: when one
        endpoint fails validation, ShardRejected and the previous content stays."""
        old = self._shard_endpoints.get(name, {})
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
                new[inference_id] = self._from_record(record)
            except ESError as error:
                raise ShardRejected(
                    f"endpoint [{inference_id}]: {_without_key(error.reason, record)}") from None
            if current is None:
                added += 1
            else:
                changed += 1
        # No await from here on: a request sees the old shard or the new one, not a mix.
        self._shard_endpoints[name] = new
        removed = [inference_id for inference_id in old if inference_id not in new]
        for inference_id in removed:
            if self._endpoints.get(inference_id) is old[inference_id]:
                del self._endpoints[inference_id]
                # Still in another shard (moving between shards): that copy serves.
                for other in self._shard_endpoints.values():
                    if inference_id in other:
                        self._endpoints[inference_id] = other[inference_id]
                        break
                else:
                    self.metrics.forget(inference_id)
        self._endpoints.update(new)
        previous = self._generations.get(name)
        self._generations[name] = shard.generation
        self.metrics.config_generation.labels(name).set(shard.generation)
        self.metrics.endpoints.set(len(self._endpoints))
        if added or changed or removed or previous != shard.generation:
            log.info("shard %s at generation %d: %d endpoint(s), %d added, %d changed, "
                     "%d removed", name, shard.generation, len(new), added, changed,
                     len(removed))
        if not self.synced and len(self._generations) == len(self.shards):
            log.info("every configuration shard loaded (%d endpoints); ready",
                     len(self._endpoints))
            self.synced = True
            self.metrics.ready.set(int(not self.draining))

    # -- inference ---------------------------------------------------------------------

    def resolve(self, inference_id: str, path_task_type: str | None) -> Endpoint:
        endpoint = self._endpoints.get(inference_id)
        if endpoint is None:
            raise errors.not_found(inference_id)
        if path_task_type not in (None, "any", endpoint.task_type):
            validation.check_task_type(path_task_type)
            raise errors.bad_request(
                f"Incompatible task_type, the requested type [{path_task_type}] does not match "
                f"the model type [{endpoint.task_type}]")
        return endpoint

    def reserve(self, inference_id: str, size: int) -> Held:
        """Room for ``size`` bytes of a request to ``inference_id`` while it is read,
        queued and sent; a fast 429 when its endpoint's share or the gateway's budget
        has none. ``Retry-After`` is the endpoint's rate interval: when its queue moves."""
        endpoint = self._endpoints.get(inference_id)
        retry_after = 1 if endpoint is None else max(1, math.ceil(endpoint.bucket.interval))
        return self.request_memory.reserve(inference_id, size, retry_after)

    async def complete(self, endpoint: Endpoint, body: bytes, time_limit: TimeValue,
                       usage: Usage | None = None) -> dict[str, Any]:
        """The Message for a Messages API request, encoded (``upstream.encode``): all a
        request keeps while it waits. ``usage``: where this request's token counts are
        added (the caller's metrics, the access log)."""
        message = await self._within(time_limit, self._call(endpoint, body, False, time_limit))
        reported = object_at(message, "usage")
        self.metrics.count_tokens(endpoint.inference_id, reported.get("input_tokens"),
                                  reported.get("output_tokens"), usage)
        return message

    async def stream(self, endpoint: Endpoint, body: bytes, time_limit: TimeValue,
                     usage: Usage | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Open the upstream stream of an encoded request (``upstream.encode(...,
        stream=True)``) within the timeout (errors raise here), then return its events as
        they arrive; later failures raise ESError from the iterator."""
        upstream = await self._within(time_limit, self._call(endpoint, body, True, time_limit))
        return self._events(endpoint, upstream, usage)

    async def _events(self, endpoint: Endpoint, upstream: MessageStream,
                      usage: Usage | None) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async for event in upstream.events():
                kind = event.get("type")
                if kind == "message_start":
                    reported = object_at(object_at(event, "message"), "usage")
                    self.metrics.count_tokens(endpoint.inference_id,
                                              reported.get("input_tokens"), None, usage)
                elif kind == "message_delta":
                    self.metrics.count_tokens(endpoint.inference_id, None,
                                              object_at(event, "usage").get("output_tokens"),
                                              usage)
                yield event
        except UpstreamError as error:
            self.metrics.upstream.labels(endpoint.inference_id, error.label).inc()
            raise self._failure(endpoint, error) from None
        finally:
            # Also runs when the client went away: closing drops the upstream connection.
            upstream.close()

    async def _call(self, endpoint: Endpoint, body: bytes, stream: bool,
                    time_limit: TimeValue) -> Any:
        clock = self.limiter.clock
        deadline = None if time_limit.seconds is None else clock.now() + time_limit.seconds
        inference_id = endpoint.inference_id
        await self._admit(endpoint, priority=False)

        async def attempt() -> Any:
            try:
                result = await (endpoint.client.stream(body) if stream
                                else endpoint.client.create(body))
            except UpstreamError as error:
                self.metrics.upstream.labels(inference_id, error.label).inc()
                raise
            self.metrics.upstream.labels(inference_id, "200").inc()
            return result

        async def before_retry(error: UpstreamError, delay: float) -> None:
            self.metrics.retries.labels(inference_id, error.label).inc()
            log.info("retrying [%s] after upstream %s in %.2fs", inference_id, error.label,
                     delay)
            await asyncio.sleep(delay)
            await self._admit(endpoint, priority=True)

        try:
            return await run_with_retries(self.retry, attempt, retry_on=UpstreamError,
                                          judge=UpstreamError.verdict, before_retry=before_retry,
                                          now=clock.now, deadline=deadline)
        except UpstreamError as error:
            raise self._failure(endpoint, error) from None

    @staticmethod
    def _failure(endpoint: Endpoint, error: UpstreamError) -> ESError:
        failure = error.es_error(endpoint.inference_id, endpoint.api_key.get_secret_value())
        log.warning("upstream call for [%s] failed: %s", endpoint.inference_id, failure)
        return failure

    async def _admit(self, endpoint: Endpoint, *, priority: bool) -> None:
        queued = self.metrics.queued.labels(endpoint.inference_id)  # its series exists
        if endpoint.bucket.try_acquire():
            # No wait: the gauge would go up and down with no await in between, which no
            # scrape can see, so it is left alone.
            self.metrics.queue_wait.labels(endpoint.inference_id).observe(0.0)
            return
        clock = self.limiter.clock
        started = clock.now()
        queued.inc()
        try:
            await endpoint.bucket.acquire(priority=priority)
        except QueueFull as full:
            raise ESError(
                429, "es_rejected_execution_exception",
                f"Failed to execute task for inference id [{endpoint.inference_id}] because "
                f"the request service [{full.group}] queue is full",
                headers={"Retry-After": str(full.retry_after)},
            ) from None
        finally:
            queued.dec()
        self.metrics.queue_wait.labels(endpoint.inference_id).observe(clock.now() - started)

    @staticmethod
    async def _within(time_limit: TimeValue, work: Awaitable[T]) -> T:
        """Run ``work`` under the request's timeout (queue wait plus the upstream call)."""
        if time_limit.seconds is None:
            return await work
        limit = asyncio.timeout(time_limit.seconds)
        try:
            async with limit:
                return await work
        except TimeoutError:
            if limit.expired():
                raise errors.timed_out(time_limit.text) from None
            raise

    def _lookup(self, inference_id: str, task_type: str | None) -> Endpoint:
        if task_type is not None:
            validation.check_task_type(task_type)
        endpoint = self._endpoints.get(inference_id)
        if endpoint is None:
            raise errors.not_found(inference_id)
        if task_type not in (None, "any", endpoint.task_type):
            raise errors.bad_request(
                f"Requested task type [{task_type}] does not match the inference endpoint's "
                f"task type [{endpoint.task_type}]")
        return endpoint

    def _from_record(self, record: Record) -> Endpoint:
        """A stored record (state file, configuration shard) through a PUT's validation;
        ESError when it fails."""
        inference_id = record["inference_id"]
        validation.check_inference_id(inference_id)
        # The owner is the configuration's, not Elasticsearch's: not part of the PUT body.
        owner = Owner.parse(record[OWNER_KEY]) if OWNER_KEY in record else None
        body, task_type = validation.parse_put_data(
            {k: v for k, v in record.items() if k not in ("inference_id", OWNER_KEY)}, None)
        settings = body.service_settings
        return self._endpoint(inference_id, task_type, settings.api_key, settings.model_id,
                              settings.rate_limit.requests_per_minute, body.task_settings, owner)

    def _endpoint(self, inference_id: str, task_type: str, api_key: SecretStr, model_id: str,
                  requests_per_minute: int, task_settings: TaskSettings,
                  owner: Owner | None = None) -> Endpoint:
        key = api_key.get_secret_value()
        return Endpoint(
            inference_id=inference_id, task_type=task_type, model_id=model_id,
            requests_per_minute=requests_per_minute, task_settings=task_settings,
            api_key=api_key, client=self.upstream.client(key),
            bucket=self.limiter.bucket(key, model_id, requests_per_minute), owner=owner,
        )

    async def _persist(self) -> None:
        self.metrics.endpoints.set(len(self._endpoints))
        if self.state is not None:
            await self.state.save([e.stored() for e in sorted(
                self._endpoints.values(), key=lambda e: e.inference_id)])


def _without_key(text: str, record: Record) -> str:
    """A validation message about a record, its key masked: messages redact the api_key
    field, but a key misplaced elsewhere in the record would be quoted."""
    settings = record.get("service_settings")
    key = settings.get("api_key") if isinstance(settings, dict) else None
    return text.replace(key, "<redacted>") if isinstance(key, str) and key else text
