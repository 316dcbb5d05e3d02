"""The reconcile's gate chain (controller/gates.py) over a table of what the controller
would find, in the manner of cert-manager's policy chain tests: each row a situation, the
verdict it must give, and how far down the chain it got (a gate that stops the chain
spares the ones after it their reads, writes and upstream calls)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from controller_fakes import KEY, NAMESPACE, endpoint, secret_value
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from inference_operator.api.models import Reason
from inference_operator.controller.claims import Claim
from inference_operator.controller.conditions import Outcome, Requeue
from inference_operator.controller.fleet import Coverage
from inference_operator.controller.gates import Context, evaluate
from inference_operator.controller.publisher import (
    ConfigMissing,
    ConfigurationFull,
    NamespaceQuotaExceeded,
    WriteInterrupted,
)
from inference_operator.controller.secrets import ResolvedKey, SecretRef, key_from, secret_ref

REF = SecretRef(NAMESPACE, "creds", "api_key")
GOOD_KEY = key_from(REF, secret_value(KEY, "7"))
OURS = Claim("2026-01-02T00:00:00Z", NAMESPACE, "ep")
OLDER = Claim("2026-01-01T00:00:00Z", "team-b", "first")
YOUNGER = Claim("2026-01-03T00:00:00Z", "team-b", "later")
ALL_CALLS = ("claimants", "resolve_key", "verify", "publish")


@dataclass
class FakeEnv:
    """What the controller would answer each gate; ``calls`` in the order asked."""

    claims: list[Claim] = field(default_factory=lambda: [OURS])
    key: ResolvedKey | Outcome = GOOD_KEY
    upstream: Outcome | None = None
    published: Coverage | Exception = field(default_factory=lambda: Coverage(2, 2))
    calls: list[str] = field(default_factory=list)

    def claimants(self, inference_id: str) -> list[Claim]:
        self.calls.append("claimants")
        return self.claims

    async def resolve_key(self, ref: SecretRef) -> ResolvedKey | Outcome:
        self.calls.append("resolve_key")
        return self.key

    async def verify(self, key: ResolvedKey, model_id: str) -> Outcome | None:
        self.calls.append("verify")
        return self.upstream

    async def publish(self, inference_id: str, spec: Mapping[str, Any], api_key: str) -> Coverage:
        self.calls.append("publish")
        if isinstance(self.published, Exception):
            raise self.published
        return self.published


@dataclass
class Case:
    name: str
    reason: str
    unpublish: bool
    calls: tuple[str, ...]  # how far down the chain it went
    env: FakeEnv = field(default_factory=FakeEnv)
    spec: dict[str, Any] = field(default_factory=lambda: endpoint()["spec"])
    requeue: Requeue = Requeue.ON_EVENT
    stalled: bool = False
    message_has: str = ""


CASES = [
    Case("everything in order", Reason.SERVING, False, ALL_CALLS,
         message_has="serving inference_id 'ep' with model claude-sonnet-4-5 on 2/2 gateway "
                     "replicas"),
    Case("the holder of its id", Reason.SERVING, False, ALL_CALLS,
         env=FakeEnv(claims=[YOUNGER, OURS])),
    Case("invalid spec", Reason.SPEC_INVALID, True, (), spec=endpoint(max_tokens=0)["spec"],
         stalled=True, message_has="max_tokens"),
    Case("invalid spec and an id held by an older one: the spec first", Reason.SPEC_INVALID,
         True, (), spec=endpoint(max_tokens=0)["spec"], env=FakeEnv(claims=[OLDER, OURS]),
         stalled=True),
    Case("an older claim holds the id", Reason.INFERENCE_ID_CONFLICT, True, ("claimants",),
         env=FakeEnv(claims=[OURS, OLDER]), stalled=True, message_has="team-b/first"),
    Case("no Secret", Reason.SECRET_NOT_FOUND, True, ("claimants", "resolve_key"),
         env=FakeEnv(key=key_from(REF, None))),
    Case("no key in the Secret", Reason.SECRET_KEY_MISSING, True, ("claimants", "resolve_key"),
         env=FakeEnv(key=key_from(REF, secret_value(data_key="token")))),
    Case("key rejected upstream", Reason.UPSTREAM_AUTH_FAILED, True, ALL_CALLS[:3],
         env=FakeEnv(upstream=Outcome.needs_human(Reason.UPSTREAM_AUTH_FAILED, "401")),
         stalled=True),
    Case("no such model upstream", Reason.MODEL_NOT_FOUND, True, ALL_CALLS[:3],
         env=FakeEnv(upstream=Outcome.needs_human(Reason.MODEL_NOT_FOUND, "404")),
         stalled=True),
    Case("Models API away: published, then retried", Reason.UPSTREAM_UNAVAILABLE, False,
         ALL_CALLS, env=FakeEnv(upstream=Outcome.retrying(Reason.UPSTREAM_UNAVAILABLE, "503")),
         requeue=Requeue.WITH_BACKOFF),
    Case("Models API away and the shard missing: the gateway's trouble first",
         Reason.GATEWAY_UNAVAILABLE, False, ALL_CALLS,
         env=FakeEnv(upstream=Outcome.retrying(Reason.UPSTREAM_UNAVAILABLE, "503"),
                     published=ConfigMissing("Secret gateway-ns/gateway-config-0 does not "
                                             "exist")),
         requeue=Requeue.WITH_BACKOFF, message_has="does not exist"),
    Case("a write cut short", Reason.GATEWAY_UNAVAILABLE, False, ALL_CALLS,
         env=FakeEnv(published=WriteInterrupted("interrupted")), requeue=Requeue.WITH_BACKOFF),
    Case("its namespace at its cap", Reason.NAMESPACE_QUOTA_EXCEEDED, True, ALL_CALLS,
         env=FakeEnv(published=NamespaceQuotaExceeded("2 endpoint(s) published")),
         message_has="2 endpoint(s)"),
    Case("no room in its shard", Reason.CONFIGURATION_FULL, True, ALL_CALLS,
         env=FakeEnv(published=ConfigurationFull("no room for this endpoint"))),
    Case("no gateway replica ready", Reason.GATEWAY_UNAVAILABLE, False, ALL_CALLS,
         env=FakeEnv(published=Coverage(0, 0)), message_has="no gateway replica is ready"),
    Case("replicas behind", Reason.GATEWAY_PENDING, False, ALL_CALLS,
         env=FakeEnv(published=Coverage(1, 3)), message_has="served by 1/3 gateway replicas"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_the_chain(case: Case) -> None:
    context = Context(case.env, (NAMESPACE, "ep"), case.spec, "ep",
                      secret_ref(NAMESPACE, case.spec))

    verdict = await evaluate(context)

    outcome = verdict.outcome
    assert (outcome.reason, verdict.unpublish, outcome.requeue, outcome.stalled) == (
        case.reason, case.unpublish, case.requeue, case.stalled)
    assert outcome.ready == (case.reason == Reason.SERVING)
    assert tuple(case.env.calls) == case.calls
    assert case.message_has in outcome.message
    if "resolve_key" in case.calls and isinstance(case.env.key, ResolvedKey):
        assert context.resolved == case.env.key  # for the status's secret_resource_version


async def test_an_error_no_gate_expects_leaves_the_chain() -> None:
    """The reconcile turns it into ReconcileFailed with a retry, and withdraws nothing."""
    spec = endpoint()["spec"]
    env = FakeEnv(published=ApiError(status=Status(code=500, reason="InternalError")))
    context = Context(env, (NAMESPACE, "ep"), spec, "ep", secret_ref(NAMESPACE, spec))

    with pytest.raises(ApiError):
        await evaluate(context)

