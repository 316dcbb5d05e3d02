"""The one level-based reconcile: whatever triggered it (create, update, resume, a Secret
change, a change in what the gateways serve, a resync), it converges the gateways'
configuration to the resource and writes one status patch when, and only when, the
status changes. It is total: whatever goes
wrong ends in a status, an Event and, for trouble that passes, a retry with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from httpx2 import TransportError
from lightkube import ApiError

from inference_operator.anthropic.model_classes import model_class
from inference_operator.api.models import ConditionType, Reason
from inference_operator.api.validation import spec_warnings
from inference_operator.clock import SYSTEM_CLOCK, Clock
from inference_operator.controller import tracing as spans
from inference_operator.controller.claims import Claim, effective_inference_id, holder
from inference_operator.controller.conditions import (
    SPEND_LIMIT_WORDS,
    Outcome,
    Requeue,
    build_conditions,
    condition,
    ready_condition,
)
from inference_operator.controller.config import OperatorConfig
from inference_operator.controller.fleet import Coverage, Fleet, static_addresses
from inference_operator.controller.gates import Context, evaluate
from inference_operator.controller.kube import Kube, SecretValue
from inference_operator.controller.metrics import OperatorMetrics, ReadyState, ready_state
from inference_operator.controller.org_limits import OrgLimitsReader
from inference_operator.controller.publisher import ConfigPublisher, Placement
from inference_operator.controller.secrets import (
    ResolvedKey,
    SecretCache,
    SecretKey,
    SecretRef,
    secret_ref,
)
from inference_operator.controller.upstream import UpstreamVerifier, VerifiedKeys

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
Body = Mapping[str, Any]
RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0, 60.0)
# Reconciles at once in a full sync: each may call the Models API, and a burst of
# thousands would meet Anthropic's rate limit (kopf bounds its own workers likewise).
SYNC_CONCURRENCY = 8
# How long a reconcile waits for every ready gateway replica to serve what it wrote,
# before it reports GatewayPending (and the fleet's next change brings it back).
PUBLISH_WAIT = 5.0


def key_of(body: Body) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


class Indices:
    """Live views of kopf's in-memory indices, bound once they exist."""

    def __init__(self) -> None:
        self.endpoints: Mapping[Key, Iterable[Body]] = {}
        self.claims: Mapping[str, Iterable[Claim]] = {}
        self.by_secret: Mapping[SecretKey, Iterable[Key]] = {}

    def body(self, key: Key) -> Body | None:
        return next(iter(self.endpoints.get(key, ())), None)

    def claimants(self, inference_id: str) -> list[Claim]:
        return list(self.claims.get(inference_id, ()))

    def referenced(self, secret: SecretKey) -> bool:
        return bool(self.by_secret.get(secret))


@dataclass
class Tracked:
    """Everything the controller remembers about one resource, all of it in memory and
    rebuilt from the cluster after a restart."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The id this resource has in the gateways' configuration, where, and how many
    # replicas served it at the last visit.
    serving_id: str | None = None
    placement: Placement | None = None
    coverage: Coverage | None = None
    secret: SecretKey | None = None  # referenced at the last visit
    retries: int = 0
    # The status last written. Bodies from events and the index can lag behind our own
    # patch; comparing with them would repeat patches and Events.
    written: dict[str, Any] | None = None
    # For the metrics: Ready's status and reason at the last visit, and when this
    # process first saw the current generation (monotonic) and whether its time to
    # Ready has been observed.
    state: ReadyState | None = None
    generation: int | None = None
    seen_at: float = 0.0
    ready_timed: bool = False


@dataclass(frozen=True)
class Published:
    """What the status says besides the conditions."""

    inference_id: str
    url: str
    secret_resource_version: str | None = None


class Controller:
    def __init__(
        self, config: OperatorConfig, kube: Kube, publisher: ConfigPublisher, fleet: Fleet,
        verifier: UpstreamVerifier | None, metrics: OperatorMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK, tracing: spans.ReconcileTracing | None = None,
        org_limits: OrgLimitsReader | None = None,
    ) -> None:
        """``tracing``: none, tracing off; ``org_limits``: none, no organisation limits
        in status."""
        self.config = config
        self.tracing = tracing
        self.clock = clock
        self.kube = kube
        self.publisher = publisher
        self.fleet = fleet
        self.verifier = verifier
        self.org_limits = org_limits or OrgLimitsReader(static_addresses(()))
        self.indices = Indices()
        self.secrets = SecretCache(kube)
        self.verified = VerifiedKeys(clock)
        self._tracked: dict[Key, Tracked] = {}
        self._checking: dict[tuple[Any, ...], asyncio.Future[Outcome | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Bounds every bulk revisit together (full syncs, fleet changes).
        self._bulk = asyncio.Semaphore(SYNC_CONCURRENCY)
        self._revisiting = self._revisit_again = False
        self.metrics = metrics or OperatorMetrics()
        self.metrics.track_endpoints(self._endpoint_states)

    # -- triggers ----------------------------------------------------------------------

    async def reconcile(self, body: Body) -> None:
        arrived = self.clock.now()
        key = key_of(body)
        tracked = self._tracked.setdefault(key, Tracked())
        # Pending from here: waiting for this resource's lock counts as queued work.
        with self._reconcile_span(key) as span, self.metrics.pending.track_inprogress():
            async with tracked.lock:
                started = self.clock.now()
                # Whatever triggered this may hold an older body than kopf's index, which
                # is updated before any handler runs; acting on a stale one could serve a
                # resource that is already being deleted.
                body = self.indices.body(key) or body
                if body["metadata"].get("deletionTimestamp") or (
                        key not in self.indices.endpoints):
                    return  # deleted, or the delete handler owns the way out
                self._saw_generation(tracked, body, arrived)
                published = self._published(body)
                # Total: kopf ignores what an on.event handler raises, so anything that
                # fails here becomes a status, an Event and a retry, not a wait for the
                # resync.
                try:
                    outcome, published = await self._converge(key, tracked, body, published)
                except Exception as error:
                    log.exception("reconcile of %s/%s failed", *key)
                    outcome = _failed(error)
                try:
                    await self._report(tracked, body, outcome, published)
                except Exception as error:
                    log.exception("status of %s/%s not written", *key)
                    outcome = _failed(error)
                self._measured(tracked, outcome, started)
                if span is not None:
                    self._traced(span, body, outcome, started - arrived)
        self._requeue(key, tracked, outcome)

    def is_status_echo(self, body: Body) -> bool:
        """The watch event of our own status patch: the spec is the one last reconciled,
        so reconciling again would only repeat the work (and, with a message that changes
        each time, loop past the retry backoff). Every other cause has its own trigger."""
        tracked = self._tracked.get(key_of(body))
        written = tracked.written if tracked else None
        return written is not None and written["observedGeneration"] == body["metadata"].get(
            "generation") and not body["metadata"].get("deletionTimestamp")

    def reconcile_soon(self, keys: Iterable[Key], delay: float = 0.0) -> None:
        """Reconcile other resources from their latest indexed body, without waiting."""
        for key in keys:
            self._spawn(self._reconcile_indexed(key, delay))

    async def _reconcile_indexed(self, key: Key, delay: float) -> None:
        if delay:
            await self.clock.sleep(delay)
        body = self.indices.body(key)
        if body is not None:
            await self.reconcile(body)

    def fleet_changed(self) -> None:
        """The gateways serve something else now: revisit the resources whose status
        counted other replicas, a bounded number at a time. One pass at a time: changes
        during a pass (a rolling upgrade brings several) bring one more pass after it,
        not a pass each."""
        if self._revisiting:
            self._revisit_again = True
            return
        self._revisiting = True
        self._spawn(self._revisit())

    async def _revisit(self) -> None:
        try:
            while True:
                self._revisit_again = False
                # No coverage yet: that reconcile is still waiting for the replicas itself.
                stale = [key for key, tracked in self._tracked.items()
                         if tracked.placement and tracked.coverage
                         and self.fleet.coverage(tracked.placement) != tracked.coverage]
                await self._reconcile_all(stale)
                if not self._revisit_again:
                    return
        finally:
            self._revisiting = False

    async def _reconcile_all(self, keys: Iterable[Key]) -> None:
        async def bounded(key: Key) -> None:
            # Pending while it waits for a slot; from then on ``reconcile`` counts it.
            with self.metrics.pending.track_inprogress():
                await self._bulk.acquire()
            try:
                await self._reconcile_indexed(key, 0.0)
            finally:
                self._bulk.release()

        await asyncio.gather(*map(bounded, keys))

    async def org_limits_changed(self) -> None:
        """Read the gateways' organisation limits; revisit the endpoints whose figures
        changed, a bounded number at a time."""
        changed = await self.org_limits.refresh()
        await self._reconcile_all([key for key, tracked in self._tracked.items()
                                   if tracked.serving_id in changed])

    def secret_changed(self, namespace: str, name: str, value: SecretValue | None) -> None:
        """A Secret's watch event (``None``: deleted). Only referenced Secrets are kept,
        so no copy outlives the events that would have updated it."""
        secret = (namespace, name)
        if not self.indices.referenced(secret):
            self._forget_secret(secret)
            return
        self.secrets.observed(secret, value)
        self.reconcile_soon(self.indices.by_secret.get(secret, ()))

    async def withdraw(self, body: Body) -> None:
        """Deletion: the endpoint leaves the gateways, then the next claimant may take
        over. A failed write raises, so kopf keeps the finalizer and retries."""
        key = key_of(body)
        inference_id = effective_inference_id(body)
        tracked = self._tracked.setdefault(key, Tracked())
        async with tracked.lock:
            log.info("%s/%s deleted; %r leaves the gateways", *key, inference_id)
            await self._stop_serving(key, tracked, inference_id)
            self._follow_secret(tracked, None)
        self._tracked.pop(key, None)
        self.reconcile_soon(
            (c.namespace, c.name) for c in self.indices.claimants(inference_id)
            if (c.namespace, c.name) != key
        )

    async def full_sync(self) -> None:
        """Reconcile everything, then drop from the configuration what no resource holds
        (resources deleted while the operator was away). Unchanged endpoints cost no
        write."""
        await self.publisher.repair()
        await self._reconcile_all(list(self.indices.endpoints))
        held = {t.serving_id for t in self._tracked.values() if t.serving_id}
        removed = await self.publisher.retain(held)
        if removed:
            log.info("full sync removed stale endpoint(s) %s from the gateways", removed)
            self._room_made(None)
        # A finished sync is a sign of life even with no endpoint to reconcile: the alert
        # on this timestamp must not fire on an empty cluster.
        self.metrics.finished()

    # -- convergence -------------------------------------------------------------------

    async def _converge(
        self, key: Key, tracked: Tracked, body: Body, published: Published,
    ) -> tuple[Outcome, Published]:
        """Leave what the resource no longer names, run the gates (gates.py), and act on
        their verdict: the only place a reconcile withdraws its endpoint."""
        spec = body.get("spec") or {}
        inference_id = published.inference_id
        if tracked.serving_id and tracked.serving_id != inference_id:
            previous = tracked.serving_id
            await self._stop_serving(key, tracked, previous)
            self.reconcile_soon((c.namespace, c.name) for c in self.indices.claimants(previous))
        ref = secret_ref(key[0], spec)
        self._follow_secret(tracked, ref.secret if ref else None)

        context = Context(_Visit(self, key, tracked), key, spec, inference_id, ref)
        verdict = await evaluate(context)
        if verdict.unpublish:
            await self._stop_serving(key, tracked, inference_id)
        if context.resolved is not None:
            published = replace(
                published, secret_resource_version=context.resolved.secret_resource_version)
        return verdict.outcome, published

    def _published(self, body: Body) -> Published:
        inference_id = effective_inference_id(body)
        task_type = (body.get("spec") or {}).get("task_type") or "completion"
        return Published(inference_id, self.config.endpoint_url(inference_id, task_type))

    async def _verify(self, key: ResolvedKey, model_id: str) -> Outcome | None:
        """The Models API's verdict; endpoints that share a Secret and a model share one
        check, so a rotated key referenced by many endpoints costs one call."""
        if self.verifier is None or self.verified.holds(key, model_id):
            return None
        pair = (key.ref, key.secret_resource_version, model_id)
        check = self._checking.get(pair)
        if check is None:
            check = asyncio.ensure_future(self.verifier.check(key.api_key, model_id))
            self._checking[pair] = check
            check.add_done_callback(lambda _: self._checking.pop(pair, None))
        # Shielded: one waiter cancelled (its resource deleted) cancels nobody else's.
        with self._span(spans.VERIFY):
            problem = await asyncio.shield(check)
        if problem is None:
            self.verified.remember(key, model_id)
        return problem

    def _follow_secret(self, tracked: Tracked, secret: SecretKey | None) -> None:
        previous, tracked.secret = tracked.secret, secret
        if previous is not None and previous != secret and not self.indices.referenced(previous):
            self._forget_secret(previous)

    def _forget_secret(self, secret: SecretKey) -> None:
        self.secrets.drop(secret)
        self.verified.forget(secret)

    async def _stop_serving(self, key: Key, tracked: Tracked, inference_id: str) -> None:
        """The endpoint leaves the gateways (a rejected or missing key must not stay in
        use), unless another resource holds the id now: that one's endpoint stays."""
        tracked.serving_id = tracked.placement = tracked.coverage = None
        first = holder(self.indices.claimants(inference_id))
        if first is not None and (first.namespace, first.name) != key:
            return
        with self._span(spans.WITHDRAW):
            withdrawn = await self.publisher.delete_endpoint(inference_id)
        if withdrawn:
            self._room_made(key[0])

    def _room_made(self, namespace: str | None) -> None:
        """Endpoints left the configuration (from ``namespace``; None: any): the ones
        refused for want of room (in a shard, or in their namespace's share) try again, a
        bounded number at a time."""
        refused = [k for k, t in self._tracked.items() if t.state is not None and (
            t.state[1] == Reason.CONFIGURATION_FULL
            or (t.state[1] == Reason.NAMESPACE_QUOTA_EXCEEDED
                and namespace in (None, k[0])))]
        if refused:
            self._spawn(self._reconcile_all(refused))

    async def _publish(
        self, key: Key, tracked: Tracked, inference_id: str, spec: Mapping[str, Any],
        api_key: str,
    ) -> Coverage:
        settings = spec["service_settings"]
        body = {
            "service": spec["service"],
            "service_settings": {
                "api_key": api_key,
                "model_id": settings["model_id"],
                "rate_limit": settings.get("rate_limit") or {},
            },
            "task_settings": spec["task_settings"],
        }
        # Claimed before the write, so a concurrent full sync keeps it even while the
        # write is in flight and does not remove what is about to be served.
        tracked.serving_id = inference_id
        with self._span(spans.PUBLISH):
            tracked.placement = await self.publisher.put_endpoint(
                inference_id, spec.get("task_type") or "completion", body, owner=key)
        with self._span(spans.GATEWAYS):
            tracked.coverage = await self.fleet.wait_for(tracked.placement, PUBLISH_WAIT)
        return tracked.coverage

    # -- reporting ---------------------------------------------------------------------

    async def _report(
        self, tracked: Tracked, body: Body, outcome: Outcome, published: Published,
    ) -> None:
        metadata = body["metadata"]
        generation = metadata.get("generation", 0)
        old = tracked.written or body.get("status") or {}
        # What the gateways learned of its organisation limits, while it is served.
        org = (self.org_limits.report(published.inference_id)
               if tracked.serving_id == published.inference_id else None)
        status = {
            "observedGeneration": generation,
            "conditions": build_conditions(outcome, generation, old.get("conditions"),
                                           None if org is None else org.spend_limit_reached),
            "inference_id": published.inference_id,
            "url": published.url,
            "secret_resource_version": published.secret_resource_version,
            "organisation_limits": None if org is None else org.status(model_class(
                body["spec"]["service_settings"]["model_id"])),
        }
        if _without_none(status) == _without_none({k: old.get(k) for k in status}):
            return
        with self._span(spans.STATUS):
            # Events first: a crash between the two then repeats an Event after restart
            # instead of losing it (the status read back would hide the transition).
            before = ready_condition(old)
            if before is None or (before.get("status"), before.get("reason")) != (
                "True" if outcome.ready else "False", outcome.reason
            ):
                healthy = outcome.ready or (outcome.reconciling and outcome.reason != (
                    Reason.RECONCILE_FAILED))
                await self.kube.post_event(body, "Normal" if healthy else "Warning",
                                           outcome.reason, outcome.message)
                log.info("%s/%s: %s (%s)", *key_of(body), outcome.reason, outcome.message)
            spend = condition(old, ConditionType.SPEND_LIMIT_REACHED) or {}
            if org is not None and org.spend_limit_reached and spend.get("status") != "True":
                await self.kube.post_event(body, "Warning", *SPEND_LIMIT_WORDS)
            if old.get("observedGeneration") != generation:
                for warning in spec_warnings(body.get("spec") or {}):
                    await self.kube.post_event(body, "Warning", "SpecWarning", str(warning))
            await self.kube.patch_status(metadata["namespace"], metadata["name"], status)
        tracked.written = status

    # -- tracing -----------------------------------------------------------------------

    def _reconcile_span(self, key: Key) -> contextlib.AbstractContextManager[Any]:
        if self.tracing is None:
            return contextlib.nullcontext()
        return self.tracing.reconcile(*key)

    def _span(self, name: str) -> contextlib.AbstractContextManager[Any]:
        """A step's span under the reconcile's, when tracing is on."""
        return contextlib.nullcontext() if self.tracing is None else self.tracing.step(name)

    def _traced(self, span: Any, body: Body, outcome: Outcome, waited: float) -> None:
        span.set_attributes({spans.GENERATION: body["metadata"].get("generation", 0),
                             spans.QUEUE_WAIT: waited, spans.REASON: str(outcome.reason),
                             spans.READY: outcome.ready})
        if outcome.reason == Reason.RECONCILE_FAILED:
            assert self.tracing is not None  # a span is made only when tracing is on
            self.tracing.failed(span, outcome.reason)

    # -- metrics -----------------------------------------------------------------------

    def _saw_generation(self, tracked: Tracked, body: Body, arrived: float) -> None:
        """Start the time to Ready of a generation this process has not seen yet. One
        that is Ready already (a restarted operator's first visit) is not timed: its wait
        happened before, and would be counted as a few milliseconds."""
        generation = body["metadata"].get("generation", 0)
        if generation == tracked.generation:
            return
        status = body.get("status") or {}
        ready = ready_condition(status) or {}
        tracked.generation, tracked.seen_at = generation, arrived
        tracked.ready_timed = ready.get("status") == "True" and (
            status.get("observedGeneration") == generation)

    def _measured(self, tracked: Tracked, outcome: Outcome, started: float) -> None:
        now = self.clock.now()
        tracked.state = ("True" if outcome.ready else "False", str(outcome.reason))
        self.metrics.reconciled(str(outcome.reason), now - started)
        if outcome.ready and not tracked.ready_timed:
            tracked.ready_timed = True
            self.metrics.time_to_ready.observe(now - tracked.seen_at)

    def _endpoint_states(self) -> Iterable[ReadyState]:
        """Each endpoint's Ready state, for the endpoints gauge at scrape time: the last
        reconcile's, or, before this process reconciled it, its status's. Endpoints being
        deleted are left out: the gauge counts what is served or meant to be."""
        for key, bodies in self.indices.endpoints.items():
            body = next(iter(bodies), None)
            if body is None or body["metadata"].get("deletionTimestamp"):
                continue
            tracked = self._tracked.get(key)
            if tracked is not None and tracked.state is not None:
                yield tracked.state
            else:
                ready = ready_condition(body.get("status")) or {}
                yield ready_state(ready.get("status"), ready.get("reason"))

    # -- retries -----------------------------------------------------------------------

    def _requeue(self, key: Key, tracked: Tracked, outcome: Outcome) -> None:
        if outcome.requeue is not Requeue.WITH_BACKOFF:
            tracked.retries = 0
            return
        delay = RETRY_DELAYS[min(tracked.retries, len(RETRY_DELAYS) - 1)]
        tracked.retries += 1
        self.reconcile_soon([key], delay=delay)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background reconcile failed: %r", task.exception())

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


@dataclass(frozen=True)
class _Visit:
    """The gates' view of the controller (gates.Env) during one reconcile of ``key``."""

    controller: Controller
    key: Key
    tracked: Tracked

    def claimants(self, inference_id: str) -> list[Claim]:
        return self.controller.indices.claimants(inference_id)

    async def resolve_key(self, ref: SecretRef) -> ResolvedKey | Outcome:
        return await self.controller.secrets.resolve_key(ref)

    async def verify(self, key: ResolvedKey, model_id: str) -> Outcome | None:
        return await self.controller._verify(key, model_id)

    async def publish(self, inference_id: str, spec: Mapping[str, Any], api_key: str) -> Coverage:
        return await self.controller._publish(self.key, self.tracked, inference_id, spec, api_key)


def _failed(error: Exception) -> Outcome:
    """Never the exception's text in a status or Event: it may quote a response body."""
    if isinstance(error, ApiError):
        cause = (f"the Kubernetes API answered {error.status.code} "
                 f"{error.status.reason or ''}").rstrip()
    elif isinstance(error, TransportError):
        cause = f"cannot reach the Kubernetes API ({type(error).__name__})"
    else:
        cause = f"unexpected {type(error).__name__} (a bug; the operator log has the traceback)"
    return Outcome.retrying(Reason.RECONCILE_FAILED, f"{cause}; retrying with backoff")


def _without_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}
