"""What a reconcile decides, as an ordered chain of gates, in the manner of cert-manager's
policy chains: each gate checks one thing and either lets the endpoint on to the next or
stops it with a verdict (the status it gets, and whether it must leave the gateways).
The first verdict wins; an endpoint through every gate is Serving.

Gates decide and gather; they never withdraw an endpoint themselves. The controller acts
on the verdict in one place, so there is one way out of the gateways to reason about."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from inference_operator.api.models import Reason
from inference_operator.api.validation import validate_spec
from inference_operator.controller.claims import Claim, holder
from inference_operator.controller.conditions import Outcome
from inference_operator.controller.fleet import Coverage
from inference_operator.controller.publisher import (
    ConfigMissing,
    ConfigurationFull,
    NamespaceQuotaExceeded,
    WriteInterrupted,
)
from inference_operator.controller.secrets import ResolvedKey, SecretRef

Key = tuple[str, str]  # (namespace, name)


class Env(Protocol):
    """What the gates read and do through the controller, for one resource."""

    def claimants(self, inference_id: str) -> list[Claim]: ...

    async def resolve_key(self, ref: SecretRef) -> ResolvedKey | Outcome: ...

    async def verify(self, key: ResolvedKey, model_id: str) -> Outcome | None:
        """None when Anthropic accepts key and model (or checks are off)."""
        ...

    async def publish(
        self, inference_id: str, spec: Mapping[str, Any], api_key: str,
    ) -> Coverage:
        """Write the endpoint into the gateways' configuration; how many replicas serve
        it. Raises the publisher's errors."""
        ...


@dataclass(frozen=True)
class Verdict:
    """Why the endpoint is not Serving. ``unpublish``: what it would serve is wrong or
    unsafe (a rejected or missing key must not stay in use), so it leaves the gateways;
    otherwise whatever is published stays while the trouble passes."""

    outcome: Outcome
    unpublish: bool = False


@dataclass
class Context:
    """One reconcile's inputs, and what the gates found on the way."""

    env: Env
    key: Key
    spec: Mapping[str, Any]
    inference_id: str
    ref: SecretRef | None
    resolved: ResolvedKey | None = None
    # Trouble that passes, found before publishing and reported after it: the endpoint
    # keeps serving meanwhile.
    deferred: Outcome | None = None
    coverage: Coverage | None = None

    @property
    def model_id(self) -> str:
        return str(self.spec["service_settings"]["model_id"])


Gate = Callable[[Context], Awaitable[Verdict | None]]


def _withdraw(outcome: Outcome) -> Verdict:
    return Verdict(outcome, unpublish=True)


async def spec_is_valid(context: Context) -> Verdict | None:
    if problems := validate_spec(context.spec):
        return _withdraw(Outcome.needs_human(Reason.SPEC_INVALID, "; ".join(map(str, problems))))
    return None


async def holds_its_id(context: Context) -> Verdict | None:
    first = holder(context.env.claimants(context.inference_id))
    if first is None or (first.namespace, first.name) == context.key:
        return None
    return _withdraw(Outcome.needs_human(
        Reason.INFERENCE_ID_CONFLICT,
        f"inference_id {context.inference_id!r} is already held by the older "
        f"InferenceEndpoint {first.display}; this one takes over if that one "
        "is deleted or changes its id",
    ))


async def key_resolves(context: Context) -> Verdict | None:
    assert context.ref is not None  # a valid spec has one
    resolved = await context.env.resolve_key(context.ref)
    if isinstance(resolved, Outcome):
        return _withdraw(resolved)
    context.resolved = resolved
    return None


async def upstream_accepts(context: Context) -> Verdict | None:
    assert context.resolved is not None
    problem = await context.env.verify(context.resolved, context.model_id)
    if problem is not None and problem.stalled:
        return _withdraw(problem)
    context.deferred = problem
    return None


async def is_published(context: Context) -> Verdict | None:
    assert context.resolved is not None
    try:
        context.coverage = await context.env.publish(
            context.inference_id, context.spec, context.resolved.api_key)
    except (ConfigMissing, WriteInterrupted) as error:
        return Verdict(Outcome.retrying(Reason.GATEWAY_UNAVAILABLE, str(error)))
    except NamespaceQuotaExceeded as error:
        # Not served in any form: an older record of it (another key) must not stay.
        return _withdraw(Outcome.waiting(Reason.NAMESPACE_QUOTA_EXCEEDED, str(error)))
    except ConfigurationFull as error:
        return _withdraw(Outcome.waiting(Reason.CONFIGURATION_FULL, str(error)))
    return None


async def upstream_answered(context: Context) -> Verdict | None:
    """Served, but the Models API must be asked again."""
    return None if context.deferred is None else Verdict(context.deferred)


async def a_replica_is_ready(context: Context) -> Verdict | None:
    assert context.coverage is not None
    if context.coverage.replicas > 0:
        return None
    return Verdict(Outcome.waiting(
        Reason.GATEWAY_UNAVAILABLE,
        "published to the gateways' configuration; no gateway replica is ready"))


async def every_replica_serves(context: Context) -> Verdict | None:
    assert context.coverage is not None
    if context.coverage.complete:
        return None
    return Verdict(Outcome.waiting(
        Reason.GATEWAY_PENDING, f"published; served by {context.coverage.describe()} so far"))


# In order: what needs a human first, then what the endpoint's Secret and Anthropic say,
# then the gateways. The order is behaviour: a spec both invalid and conflicting reports
# SpecInvalid, nothing is published with a key Anthropic rejected, and a Models API that
# is away delays no endpoint (it is published, and the check retried).
GATES: tuple[Gate, ...] = (
    spec_is_valid,         # SpecInvalid: stalled, withdrawn
    holds_its_id,          # InferenceIdConflict: stalled, withdrawn
    key_resolves,          # SecretNotFound, SecretKeyMissing, SecretKeyInvalid: waits, withdrawn
    upstream_accepts,      # UpstreamAuthFailed, ModelNotFound: stalled, withdrawn
    is_published,          # GatewayUnavailable: retried; quota or shard full: waits, withdrawn
    upstream_answered,     # UpstreamUnavailable: retried, stays served
    a_replica_is_ready,    # GatewayUnavailable: waits for the fleet
    every_replica_serves,  # GatewayPending: waits for the fleet
)


def serving(context: Context) -> Outcome:
    assert context.coverage is not None
    return Outcome.serving(f"serving inference_id {context.inference_id!r} with model "
                           f"{context.model_id} on {context.coverage.describe()}")


async def evaluate(context: Context, gates: tuple[Gate, ...] = GATES) -> Verdict:
    """The first gate's verdict, or Serving past them all."""
    for gate in gates:
        if (verdict := await gate(context)) is not None:
            return verdict
    return Verdict(serving(context))
