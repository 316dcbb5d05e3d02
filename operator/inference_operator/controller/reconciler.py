"""The one level-based reconcile: whatever triggered it (create, update, resume, a Secret
change, a gateway restart, a resync), it converges the gateway to the resource and writes
one status patch when, and only when, the status changes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from inference_operator.api.models import Reason
from inference_operator.api.validation import spec_warnings, validate_spec
from inference_operator.controller.claims import Claim, effective_inference_id, holder
from inference_operator.controller.conditions import Outcome, build_conditions, ready_condition
from inference_operator.controller.config import OperatorConfig
from inference_operator.controller.gateway_client import (
    GatewayClient,
    GatewayRejected,
    GatewayUnavailable,
)
from inference_operator.controller.kube import Kube, SecretValue
from inference_operator.controller.secrets import SecretCache, secret_ref
from inference_operator.controller.upstream import UpstreamVerifier

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
Body = Mapping[str, Any]
RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0, 60.0)


def key_of(body: Body) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


class Indices:
    """Live views of kopf's in-memory indices, bound once they exist."""

    def __init__(self) -> None:
        self.endpoints: Mapping[Key, Iterable[Body]] = {}
        self.claims: Mapping[str, Iterable[Claim]] = {}
        self.by_secret: Mapping[Key, Iterable[Key]] = {}

    def body(self, key: Key) -> Body | None:
        return next(iter(self.endpoints.get(key, ())), None)

    def claimants(self, inference_id: str) -> list[Claim]:
        return list(self.claims.get(inference_id, ()))


class Controller:
    def __init__(
        self, config: OperatorConfig, kube: Kube, gateway: GatewayClient,
        verifier: UpstreamVerifier | None,
    ) -> None:
        self.config = config
        self.kube = kube
        self.gateway = gateway
        self.verifier = verifier
        self.indices = Indices()
        self.secrets = SecretCache(kube)
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pushed: dict[str, str] = {}  # inference_id -> fingerprint of the pushed body
        self._served: dict[Key, str] = {}  # which inference_id each resource holds
        self._retries: dict[Key, int] = {}
        # The status last written per resource. Bodies from events and the index can lag
        # behind our own patch; comparing with them would repeat patches and Events.
        self._written: dict[Key, dict[str, Any]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- triggers ----------------------------------------------------------------------

    async def reconcile(self, body: Body) -> None:
        key = key_of(body)
        async with self._locks.setdefault(key, asyncio.Lock()):
            # Whatever triggered this may hold an older body than kopf's index, which is
            # updated before any handler runs; acting on a stale one could serve a
            # resource that is already being deleted.
            body = self.indices.body(key) or body
            if body["metadata"].get("deletionTimestamp") or key not in self.indices.endpoints:
                return  # deleted, or the delete handler owns the way out
            outcome, detail = await self._converge(key, body)
            await self._report(body, outcome, detail)
        self._schedule_retry(key, outcome)

    def is_status_echo(self, body: Body) -> bool:
        """The watch event of our own status patch: the spec is the one last reconciled,
        so reconciling again would only repeat the work (and, with a message that changes
        each time, loop past the retry backoff). Every other cause has its own trigger."""
        written = self._written.get(key_of(body))
        return written is not None and written["observedGeneration"] == body["metadata"].get(
            "generation") and not body["metadata"].get("deletionTimestamp")

    def reconcile_soon(self, keys: Iterable[Key], delay: float = 0.0) -> None:
        """Reconcile other resources from their latest indexed body, without waiting."""
        for key in keys:
            self._spawn(self._reconcile_indexed(key, delay))

    async def _reconcile_indexed(self, key: Key, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        body = self.indices.body(key)
        if body is not None:
            await self.reconcile(body)

    def secret_changed(self, namespace: str, name: str, secret: SecretValue | None) -> None:
        self.secrets.observed(namespace, name, secret)
        self.reconcile_soon(self.indices.by_secret.get((namespace, name), ()))

    async def withdraw(self, body: Body) -> None:
        """Deletion: the endpoint leaves the gateway, then the next claimant may take over."""
        key = key_of(body)
        inference_id = effective_inference_id(body)
        async with self._locks.setdefault(key, asyncio.Lock()):
            self._served.pop(key, None)
            if self._holds(key, inference_id):
                log.info("%s/%s deleted; %r leaves the gateway", *key, inference_id)
                await self._delete_from_gateway(inference_id)
        self._locks.pop(key, None)
        self._retries.pop(key, None)
        self._written.pop(key, None)
        self.reconcile_soon(
            (c.namespace, c.name) for c in self.indices.claimants(inference_id)
            if (c.namespace, c.name) != key
        )

    async def full_sync(self, *, force: bool) -> None:
        """Reconcile everything, then tell the gateway the complete set, which also drops
        endpoints whose resource vanished meanwhile. ``force`` re-pushes unchanged
        endpoints too: after a gateway restart, or at operator start, nothing is known."""
        if force:
            self._pushed.clear()
        keys = list(self.indices.endpoints.keys())
        bodies = [b for b in map(self.indices.body, keys) if b is not None]
        await asyncio.gather(*(self.reconcile(b) for b in bodies))
        removed = await self.gateway.sync(set(self._served.values()))
        if removed:
            log.info("full sync removed stale endpoint(s) %s from the gateway", removed)
            for inference_id in removed:
                self._pushed.pop(inference_id, None)

    # -- convergence -------------------------------------------------------------------

    def _holds(self, key: Key, inference_id: str) -> bool:
        first = holder(self.indices.claimants(inference_id))
        return first is None or (first.namespace, first.name) == key

    async def _release(self, key: Key, inference_id: str) -> None:
        """Stop serving: a rejected or missing key must not stay in use."""
        if self._served.get(key) == inference_id or self._holds(key, inference_id):
            await self._delete_from_gateway(inference_id)
        self._served.pop(key, None)

    async def _delete_from_gateway(self, inference_id: str) -> None:
        try:
            await self.gateway.delete_endpoint(inference_id)
        except GatewayUnavailable:
            # Never block a deletion on the gateway: the full sync that follows its
            # return lists only the ids still held, which drops this one.
            log.warning("gateway unavailable; %r is dropped at its next sync", inference_id)
        self._pushed.pop(inference_id, None)

    async def _converge(self, key: Key, body: Body) -> tuple[Outcome, dict[str, Any]]:
        spec = body.get("spec") or {}
        inference_id = effective_inference_id(body)
        task_type = spec.get("task_type") or "completion"
        detail: dict[str, Any] = {
            "inference_id": inference_id,
            "url": self.config.endpoint_url(inference_id, task_type),
        }
        previous = self._served.get(key)
        if previous is not None and previous != inference_id:
            await self._release(key, previous)
            self.reconcile_soon(
                (c.namespace, c.name) for c in self.indices.claimants(previous)
            )

        if problems := validate_spec(spec):
            await self._release(key, inference_id)
            return Outcome.needs_human(
                Reason.SPEC_INVALID, "; ".join(map(str, problems))
            ), detail

        first = holder(self.indices.claimants(inference_id))
        if first is not None and (first.namespace, first.name) != key:
            self._served.pop(key, None)
            return Outcome.needs_human(
                Reason.INFERENCE_ID_CONFLICT,
                f"inference_id {inference_id!r} is already held by the older "
                f"InferenceEndpoint {first.display}; this one takes over if that one "
                "is deleted or changes its id",
            ), detail

        ref = secret_ref(key[0], spec)
        assert ref is not None  # validated above
        resolved = await self.secrets.resolve_key(ref)
        if isinstance(resolved, Outcome):
            await self._release(key, inference_id)
            return resolved, detail
        detail["secret_resource_version"] = resolved.secret_resource_version

        model_id = spec["service_settings"]["model_id"]
        upstream_problem = None
        if self.verifier is not None:
            upstream_problem = await self.verifier.verify(resolved.api_key, model_id)
            if upstream_problem is not None and upstream_problem.stalled:
                await self._release(key, inference_id)
                return upstream_problem, detail

        # Claimed before the push, so a concurrent full sync lists it even while the
        # push is in flight and does not remove what is about to be served.
        self._served[key] = inference_id
        try:
            await self._push(inference_id, task_type, spec, resolved.api_key)
        except GatewayUnavailable as error:
            return Outcome.waiting(Reason.GATEWAY_UNAVAILABLE, str(error)), detail
        except GatewayRejected as error:
            self._served.pop(key, None)
            return Outcome.needs_human(
                Reason.SPEC_INVALID, f"the gateway refused the endpoint: {error}"
            ), detail
        if upstream_problem is not None:
            return upstream_problem, detail  # served, but the upstream check must run again
        return Outcome.serving(
            f"serving inference_id {inference_id!r} with model {model_id}"
        ), detail

    async def _push(
        self, inference_id: str, task_type: str, spec: Mapping[str, Any], api_key: str
    ) -> None:
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
        # In memory only: tells an unchanged endpoint apart so resyncs cost nothing.
        fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self._pushed.get(inference_id) == fingerprint:
            return
        await self.gateway.put_endpoint(inference_id, task_type, body)
        self._pushed[inference_id] = fingerprint

    # -- reporting ---------------------------------------------------------------------

    async def _report(self, body: Body, outcome: Outcome, detail: dict[str, Any]) -> None:
        metadata = body["metadata"]
        generation = metadata.get("generation", 0)
        key = key_of(body)
        old = self._written.get(key) or body.get("status") or {}
        status = {
            "observedGeneration": generation,
            "conditions": build_conditions(outcome, generation, old.get("conditions")),
            "inference_id": detail["inference_id"],
            "url": detail["url"],
            "secret_resource_version": detail.get("secret_resource_version"),
        }
        if _without_none(status) == _without_none({k: old.get(k) for k in status}):
            return
        # Events first: a crash between the two then repeats an Event after restart
        # instead of losing it (the status read back would hide the transition).
        before = ready_condition(old)
        if before is None or (before.get("status"), before.get("reason")) != (
            "True" if outcome.ready else "False", outcome.reason
        ):
            kind = "Normal" if outcome.ready or outcome.reconciling else "Warning"
            await self.kube.post_event(body, kind, outcome.reason, outcome.message)
            log.info("%s/%s: %s (%s)", *key, outcome.reason, outcome.message)
        if old.get("observedGeneration") != generation:
            for warning in spec_warnings(body.get("spec") or {}):
                await self.kube.post_event(body, "Warning", "SpecWarning", str(warning))
        await self.kube.patch_status(metadata["namespace"], metadata["name"], status)
        self._written[key] = status

    # -- retries -----------------------------------------------------------------------

    def _schedule_retry(self, key: Key, outcome: Outcome) -> None:
        """Transient trouble (gateway or Models API away) is retried with backoff;
        Secret trouble waits for the Secret's own event, and stalls for a human."""
        transient = outcome.reconciling and outcome.reason not in (
            Reason.SECRET_NOT_FOUND, Reason.SECRET_KEY_MISSING,
        )
        if not transient:
            self._retries.pop(key, None)
            return
        attempt = self._retries.get(key, 0)
        self._retries[key] = attempt + 1
        self.reconcile_soon([key], delay=RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])

    def _spawn(self, work: Any) -> None:
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


def _without_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}

