"""Caller checks cannot be turned against the API server. A hostile
tenant (or any Pod with no grant at all) sends made-up bearer tokens and lists endpoints
it may not see; the reviews this costs are read from the API server's own metrics
(``apiserver_request_total``), against a gateway with ``--auth kubernetes`` in config mode
on the test's shard Secrets, asking with its own narrow identity (tests/gateway's
auth_support.py).

``ISOLATION_JUNK_TOKENS`` (default 1,000) sets the size of the flood."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import uuid
from typing import Any

from auth_support import (
    AUDIENCE,
    GatewayStarter,
    api_server_reviews,
    call,
    grant,
    invoke,
    run,
    token,
)
from gateway_support import metric
from kube_support import ShardWriter, record

from inference_devkit.controlplane.kubectl import Kubectl
from inference_operator.gateway.auth.credentials import MAX_TOKEN_LENGTH
from inference_operator.gateway.auth.kubernetes import LISTING_NAME_REVIEWS

JUNK_TOKENS = max(1000, int(os.environ.get("ISOLATION_JUNK_TOKENS", "1000")))
REVIEWS_PER_SECOND = 5.0  # the budget under test: small, so the bound shows
REVIEWS_IN_FLIGHT = 2
SENDERS = 50  # junk requests in flight at once


def _part(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    return (f"{_part(header or {'alg': 'RS256', 'kid': secrets.token_urlsafe(8)})}."
            f"{_part(claims)}.{secrets.token_urlsafe(256)}")


def longer(token: str) -> str:
    """``token`` with a signature that makes it one character over the length bound."""
    signed = token.rpartition(".")[0] + "."
    return signed + "A" * (MAX_TOKEN_LENGTH + 1 - len(signed))


def junk(n: int) -> tuple[list[str], list[str]]:
    """``n`` made-up tokens: (those that cannot be a Kubernetes token for the gateway's
    audience, those shaped as one: a forged signature only the API server can tell)."""
    now = int(time.time())
    claims = {"aud": [AUDIENCE], "exp": now + 3600, "iss": "https://kubernetes.default.svc",
              "sub": "system:serviceaccount:nowhere:nobody"}
    kinds = [
        lambda: secrets.token_urlsafe(32),  # opaque
        lambda: f"{secrets.token_hex(3)}.{secrets.token_hex(8)}",  # a bootstrap token's form
        lambda: _jwt(claims, {"alg": "none"}),
        lambda: _jwt({**claims, "aud": ["https://kubernetes.default.svc"]}),
        lambda: _jwt({**claims, "exp": now - 60}),
        lambda: longer(_jwt(claims)),
    ]
    plausible = n // 5
    refusable = [kinds[i % len(kinds)]() for i in range(n - plausible)]
    return refusable, [_jwt({**claims, "jti": str(uuid.uuid4())}) for _ in range(plausible)]


async def test_junk_tokens_cost_at_most_the_review_budget_and_callers_keep_working(
        auth_gateway: GatewayStarter, shards: ShardWriter, kubectl: Kubectl,
        teams: tuple[str, str]) -> None:
    team_a, team_b = teams
    await shards.write(0, 1, record("a1", owner=(team_a, "a1")))
    await shards.write(1, 1, record("b1", owner=(team_b, "b1")))
    await grant(kubectl, team_a, (team_a, "app"), "invoke-all")
    await grant(kubectl, team_b, (team_b, "app"), "invoke-all")
    # A cache smaller than the flood: before the refusals had a room of their own, junk
    # evicted the callers' decisions.
    gateway = await auth_gateway(auth_cache_seconds=120, auth_cache_size=20,
                                 auth_negative_cache_size=20,
                                 auth_reviews_in_flight=REVIEWS_IN_FLIGHT,
                                 auth_reviews_per_second=REVIEWS_PER_SECOND)
    caller_a, caller_b = await token(kubectl, team_a, "app"), await token(kubectl, team_b, "app")
    assert await invoke(gateway, "a1", caller_a) == 200
    assert await invoke(gateway, "b1", caller_b) == 200

    refusable, plausible = junk(JUNK_TOKENS)
    flood = [*refusable, *plausible]
    statuses: dict[str, list[int]] = {"refusable": [], "plausible": []}
    tenant_b: list[int] = []
    senders = asyncio.Semaphore(SENDERS)
    done = asyncio.Event()

    async def send(bearer: str, kind: str) -> None:
        async with senders:
            status, headers, payload = await call(
                gateway, "POST", "/_inference/completion/a1",
                authorization=f"Bearer {bearer}", body={"input": "hi"})
        statuses[kind].append(status)
        if status == 429:  # Elasticsearch's shape of a full queue, which its clients retry
            assert payload["error"]["type"] == "es_rejected_execution_exception"
            assert int(headers["Retry-After"]) >= 1
        else:
            assert status == 401 and payload["error"]["type"] == "security_exception"
        assert bearer not in json.dumps(payload)

    async def second_tenant() -> None:
        while not done.is_set():  # ends with the flood (bounded by it)
            tenant_b.append(await invoke(gateway, "b1", caller_b))
            await asyncio.sleep(0.02)

    before = await api_server_reviews(kubectl)
    started = time.monotonic()
    watcher = asyncio.ensure_future(second_tenant())
    await asyncio.gather(*(send(bearer, "refusable") for bearer in refusable),
                         *(send(bearer, "plausible") for bearer in plausible))
    elapsed = time.monotonic() - started
    done.set()
    await watcher
    after = await api_server_reviews(kubectl)
    reviews = after["tokenreviews"] - before["tokenreviews"]

    # Those that cannot be a Kubernetes token: 401 at once, none asked about.
    assert statuses["refusable"] == [401] * len(refusable)
    assert await metric(gateway.session, gateway.metrics,
                        "inference_gateway_auth_unreviewed_total",
                        'reason="not_a_token"') == len(refusable)
    # The rest: at most the budget (a second's worth at once, then its rate) reviewed.
    budget = REVIEWS_PER_SECOND * (1 + elapsed)
    assert reviews <= budget, (reviews, elapsed)
    assert statuses["plausible"].count(401) == reviews  # reviewed: refused by the API server
    assert statuses["plausible"].count(429) == len(plausible) - reviews
    # The second tenant was served throughout, its decision kept (no review asked for it).
    assert tenant_b and set(tenant_b) == {200}, tenant_b
    # The first tenant's decisions survived the junk: served without a review.
    assert await invoke(gateway, "a1", caller_a) == 200
    assert await api_server_reviews(kubectl) == after
    print(f"\n{len(flood)} junk tokens in {elapsed:.1f} s: {reviews:g} TokenReviews "
          f"({reviews / len(flood):.3f} per junk token; {len(refusable)} refused unasked, "
          f"{statuses['plausible'].count(429)} answered 429); second tenant "
          f"{len(tenant_b)} x 200")


async def test_a_listing_asks_one_review_per_namespace_and_a_bounded_number_by_name(
        auth_gateway: GatewayStarter, shards: ShardWriter, kubectl: Kubectl,
        teams: tuple[str, str]) -> None:
    """200 endpoints in 20 namespaces (the first team's own among them); nobody of the
    second team is granted any, one ServiceAccount of the first team a single name."""
    team_a, team_b = teams
    tag = uuid.uuid4().hex[:6]
    namespaces = [team_a] + [f"tenant-{n:02}-{tag}" for n in range(19)]  # need not exist
    records = [record(f"{namespace}-e{i}", owner=(namespace, f"e{i}"))
               for namespace in namespaces for i in range(10)]
    await shards.write(0, 1, *records[:100])
    await shards.write(1, 1, *records[100:])
    await run(kubectl, "create", "serviceaccount", "narrow", "-n", team_a)
    await grant(kubectl, team_a, (team_a, "narrow"), "invoke-e7", ["e7"])
    gateway = await auth_gateway(auth_cache_seconds=120)
    ungranted, narrow = await token(kubectl, team_b, "app"), await token(kubectl, team_a, "narrow")
    bound = len(namespaces) + LISTING_NAME_REVIEWS

    async def listing(bearer: str, path: str) -> tuple[list[str], float]:
        before = await api_server_reviews(kubectl)
        status, _, payload = await call(gateway, "GET", path, authorization=f"Bearer {bearer}")
        assert status == 200, payload
        after = await api_server_reviews(kubectl)
        return ([e["inference_id"] for e in payload["endpoints"]],
                after["subjectaccessreviews"] - before["subjectaccessreviews"])

    # An ungranted caller: nothing listed, at most one review per namespace plus the bound.
    listed, asked = await listing(ungranted, "/_inference")
    assert listed == [] and asked <= bound, asked
    # Again, and by the other listing routes: the namespaces' decisions are kept, so only
    # the next names by the bound.
    for path in ("/_inference/_all", "/_inference/completion/_all"):
        listed, again = await listing(ungranted, path)
        assert listed == [] and again <= LISTING_NAME_REVIEWS, (path, again)
    # Granted one name in its own namespace: reviewed first, so listed.
    listed, asked_narrow = await listing(narrow, "/_inference")
    assert listed == [f"{team_a}-e7"] and asked_narrow <= bound, asked_narrow
    assert await invoke(gateway, f"{team_a}-e7", narrow) == 200
    print(f"\nlisting over {len(records)} endpoints in {len(namespaces)} namespaces: "
          f"{asked:g} SubjectAccessReviews (bound {bound})")
