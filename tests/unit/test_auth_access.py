"""The callers' checks without a server: reading credentials and a JWT's expiry, API keys,
and how the Kubernetes checks cache (a decision never outlives --auth-cache-seconds nor
the token's exp; one review per token and per user and endpoint), over a fake API
server. The real one: tests/gateway/test_gateway_auth.py."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import lightkube
import pytest
from lightkube import KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview

from inference_operator.gateway.auth import apikeys
from inference_operator.gateway.auth import kubernetes as kubernetes_auth
from inference_operator.gateway.auth.budget import ReviewBudget
from inference_operator.gateway.auth.credentials import (
    MAX_TOKEN_LENGTH,
    credentials,
    digest,
    jwt_expiry,
    unusable,
)
from inference_operator.gateway.auth.kubernetes import KubernetesAccess
from inference_operator.gateway.endpoints import Owner
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics


def jwt(payload: Any, header: Any = None) -> str:
    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part(header or {'alg': 'RS256', 'kid': 'k1'})}.{part(payload)}.c2lnbmF0dXJl"


AUDIENCE = "inference-operator"
NOW = 1_800_000_000.0  # Clock's wall time


def sa_token(name: str, exp: float = NOW + 3600, **claims: Any) -> str:
    """Shaped as a ServiceAccount token for AUDIENCE (its signature nobody checks here)."""
    return jwt({"aud": [AUDIENCE], "exp": exp, "sub": name, **claims})


def sized(length: int) -> str:
    """A ServiceAccount-shaped token of exactly ``length`` characters (a long signature)."""
    signed = sa_token("a").rpartition(".")[0] + "."
    return signed + "s" * (length - len(signed))


def test_credentials_are_read_by_scheme_and_shape() -> None:
    assert credentials(None, "Bearer") == (False, None)
    assert credentials("  ", "Bearer") == (False, None)
    assert credentials("Bearer abc.def-_~+/==", "Bearer") == (True, "abc.def-_~+/==")
    assert credentials("bearer   abc  ", "Bearer") == (True, "abc")
    for header in ("Basic abc", "Bearer", "Bearer a b", "Bearer é", "Bearer a\x00b",
                   "Bearerabc", "ApiKey abc"):
        assert credentials(header, "Bearer") == (True, None), header


@pytest.mark.parametrize(("token", "why"), [
    (sa_token("a"), None),
    (jwt({"aud": AUDIENCE, "exp": NOW + 1}), None),  # a single audience as a string
    (jwt({"aud": [AUDIENCE], "exp": NOW + 60}, {"alg": "ES256"}), None),  # no kid
    (sized(MAX_TOKEN_LENGTH), None),  # at the length bound
    (sized(MAX_TOKEN_LENGTH + 1), "longer than 8000"),
    ("abcdef.0123456789abcdef", "not a JWT"),  # a bootstrap token
    ("31ada4fd-adec-460c-809a-9e56ceb75269", "not a JWT"),  # a static token file's
    ("a.b.c", "no asymmetric"),
    ("a.b.c.d", "not a JWT"),
    (sa_token("a") + "=", "not a JWT"),  # padded
    (jwt({"aud": [AUDIENCE], "exp": NOW + 60}, {"alg": "none"}), "no asymmetric"),
    (jwt({"aud": [AUDIENCE], "exp": NOW + 60}, {"alg": "HS256"}), "no asymmetric"),
    (jwt({"aud": [AUDIENCE], "exp": NOW + 60}, {"alg": "RS256", "kid": 7}), "key id"),
    (jwt({"aud": [AUDIENCE], "exp": NOW + 60}, ["RS256"]), "no asymmetric"),
    (jwt([AUDIENCE]), "not a JSON object"),
    (jwt({"aud": [AUDIENCE]}), "no expiry"),  # a legacy token Secret's
    (jwt({"aud": [AUDIENCE], "exp": "later"}), "no expiry"),
    (sa_token("a", exp=NOW), "expired"),
    (jwt({"exp": NOW + 60}), "not meant for the audience"),
    (jwt({"aud": ["https://kubernetes.default.svc"], "exp": NOW + 60}), "not meant"),
    (jwt({"aud": [[AUDIENCE]], "exp": NOW + 60}), "not meant"),
    ("eyJ" + "W" * 7000 + ".e30.c2ln", "no asymmetric"),  # deep JSON, not a crash
])
def test_what_cannot_be_a_kubernetes_token_is_told_unasked(token: str, why: str | None) -> None:
    problem = unusable(token, AUDIENCE, NOW)
    assert (problem is None) if why is None else (why in (problem or "")), problem


def test_the_cache_key_is_not_the_token() -> None:
    token = jwt({"exp": 1})
    assert digest(token) == digest(token) != digest(token + "x")
    assert token.encode() not in digest(token) and len(digest(token)) == 32


@pytest.mark.parametrize(("token", "expiry"), [
    (jwt({"exp": 1_900_000_000}), 1_900_000_000.0),
    (jwt({"exp": 1.5}), 1.5),
    (jwt({"sub": "x"}), None),
    (jwt({"exp": "soon"}), None),
    (jwt({"exp": True}), None),
    (jwt([1, 2]), None),
    (jwt({"exp": 10**400}), None),
    ("a.%%%.c", None),
    ("a.b", None),
    ("opaque-token", None),
    ("a." + base64.urlsafe_b64encode(b'{"exp": NaN}').decode() + ".c", None),
])
def test_a_jwts_expiry_is_read_without_trusting_it(token: str, expiry: float | None) -> None:
    assert jwt_expiry(token) == expiry


# -- API keys --------------------------------------------------------------------------


def keys_file(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(json.dumps({"api_keys": list(entries)}))  # JSON is YAML
    return path


def api_key(encoded_id: str, key: str) -> str:
    return "ApiKey " + base64.b64encode(f"{encoded_id}:{key}".encode()).decode()


async def test_api_keys_authenticate_by_hash_and_allow_their_ids(tmp_path: Path) -> None:
    path = keys_file(
        tmp_path,
        {"id": "team-a", "key_hash": apikeys.hash_key("secret-a"), "inference_ids": ["a"]},
        {"id": "ops", "key_hash": apikeys.hash_key("secret-o"), "inference_ids": ["*"]})
    access = apikeys.ApiKeyAccess(apikeys.load(path))
    caller = await access.authenticate(api_key("team-a", "secret-a"), "/p")
    assert (caller.name, caller.namespace, caller.account) == ("api-key:team-a", "_api_key",
                                                               "team-a")
    await access.authorize(caller, "a", None)
    with pytest.raises(ESError) as refused:
        await access.authorize(caller, "b", None)
    assert refused.value.status == 403 and "api-key:team-a" in refused.value.reason
    ops = await access.authenticate(api_key("ops", "secret-o"), "/p")
    await access.authorize(ops, "anything", None)
    for header in (api_key("team-a", "secret-o"), api_key("nobody", "secret-a"),
                   api_key("team-a", ""), "ApiKey " + base64.b64encode(b"team-a").decode(),
                   "ApiKey !!!", "ApiKey " + base64.b64encode(b"\xff:\xfe").decode(),
                   "Bearer secret-a"):
        with pytest.raises(ESError) as unauthenticated:
            await access.authenticate(header, "/p")
        assert unauthenticated.value.status == 401
        assert unauthenticated.value.headers == {"WWW-Authenticate": "ApiKey"}
        assert "secret" not in unauthenticated.value.reason
    with pytest.raises(ESError) as missing:
        await access.authenticate(None, "/p")
    assert missing.value.reason.startswith("missing authentication credentials")


@pytest.mark.parametrize(("entries", "problem"), [
    ([{"id": "a:b", "key_hash": apikeys.hash_key("k"), "inference_ids": ["*"]}], "api_keys.0.id"),
    ([{"id": "a", "key_hash": "plain-text", "inference_ids": ["*"]}], "api_keys.0.key_hash"),
    ([{"id": "a", "key_hash": apikeys.hash_key("k"), "inference_ids": []}],
     "api_keys.0.inference_ids"),
    ([{"id": "a", "key_hash": apikeys.hash_key("k"), "inference_ids": ["*"]}] * 2,
     "[a] is there twice"),
])
def test_a_bad_keys_file_is_refused_naming_the_problem(tmp_path: Path,
                                                       entries: list[dict[str, Any]],
                                                       problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        apikeys.load(keys_file(tmp_path, *entries))
    assert problem in str(refused.value) and str(tmp_path) in str(refused.value)


def test_the_generator_prints_a_usable_entry(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    assert apikeys._new("team-a", ["a", "b"]) == 0
    out, err = capsys.readouterr()
    (tmp_path / "keys.yaml").write_text("api_keys:\n" + out)
    (entry,) = apikeys.load(tmp_path / "keys.yaml")
    key = err.split("api_key=('team-a', '")[1].split("'")[0]
    assert entry.key_hash == apikeys.hash_key(key) and entry.inference_ids == ("a", "b")
    assert key not in out


# -- Kubernetes, over a fake API server -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.monotonic, self.wall = 50.0, 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


class FakeAccess(KubernetesAccess):
    """Reviews answered from ``users`` (token -> username) and ``grants`` ((username,
    namespace, name), name "" for the whole namespace), and counted."""

    def __init__(self, api: lightkube.AsyncClient, clock: Clock, **options: Any) -> None:
        super().__init__(api, GatewayMetrics(), **{
            "audience": AUDIENCE, "cache_seconds": 10.0, "cache_size": 100,
            "negative_cache_size": 100,
            "reviews": ReviewBudget(100, 100.0, clock=lambda: clock.monotonic),
            **options}, clock=lambda: clock.monotonic, wall=lambda: clock.wall)
        self.users: dict[str, str] = {}
        self.grants: set[tuple[str, str, str]] = set()
        self.reviews: list[tuple[str, Any]] = []
        self.gate: asyncio.Event | None = None  # set: reviews wait for it

    async def _review(self, review: TokenReview | SubjectAccessReview, kind: str,
                      secret: str | None = None) -> dict[str, Any]:
        spec = review.to_dict()["spec"]  # as it would be sent
        if self.gate is not None:
            await self.gate.wait()
        if kind == "token":
            self.reviews.append(("token", None))
            name = self.users.get(spec["token"])
            return ({"authenticated": True, "audiences": spec["audiences"],
                     "user": {"username": name, "uid": "u-" + name, "groups": ["g"]}}
                    if name else {"authenticated": False})
        attributes = spec["resourceAttributes"]
        key = (spec["user"], attributes["namespace"], attributes["name"])
        self.reviews.append(("access", key))
        return {"allowed": key in self.grants}


@pytest.fixture
async def api() -> AsyncIterator[lightkube.AsyncClient]:
    api = lightkube.AsyncClient(  # never asked: FakeAccess answers
        KubeConfig.from_one(cluster=Cluster(server="http://127.0.0.1:9"), user=User()))
    yield api
    await api.close()


class Owned:
    """As much of an Endpoint as the checks read."""

    def __init__(self, inference_id: str, namespace: str | None, name: str = "") -> None:
        self.inference_id = inference_id
        self.owner = None if namespace is None else Owner(namespace, name or inference_id)


SA = "system:serviceaccount:app-ns:app"


async def test_a_token_is_reviewed_once_per_period_and_never_trusted_past_its_exp(
        api: lightkube.AsyncClient) -> None:
    clock = Clock()
    access = FakeAccess(api, clock)
    long_lived, short_lived = sa_token("l"), sa_token("s", exp=clock.wall + 3)
    opaque = sa_token("o")  # a third token, of the same lifetime as the first
    for token in (long_lived, short_lived, opaque):
        access.users[token] = SA
    caller = await access.authenticate(f"Bearer {long_lived}", "/p")
    assert (caller.name, caller.namespace, caller.account) == (SA, "app-ns", "app")
    for token in (long_lived, short_lived, opaque):
        for _ in range(3):
            await access.authenticate(f"Bearer {token}", "/p")
    assert len(access.reviews) == 3
    clock.advance(3)  # the short-lived token's exp: its decision goes with it
    with pytest.raises(ESError) as expired:
        await access.authenticate(f"Bearer {short_lived}", "/p")
    assert expired.value.status == 401 and len(access.reviews) == 3  # refused unasked
    await access.authenticate(f"Bearer {long_lived}", "/p")
    assert len(access.reviews) == 3
    clock.advance(7)  # --auth-cache-seconds for the others
    del access.users[opaque]  # its ServiceAccount was deleted
    await access.authenticate(f"Bearer {long_lived}", "/p")
    with pytest.raises(ESError) as revoked:
        await access.authenticate(f"Bearer {opaque}", "/p")
    assert revoked.value.status == 401 and len(access.reviews) == 5
    assert revoked.value.headers == {"WWW-Authenticate": 'Bearer realm="inference-operator"'}
    await access.authenticate(f"Bearer {long_lived}", "/p")  # the refusal is kept too
    with pytest.raises(ESError):
        await access.authenticate(f"Bearer {opaque}", "/p")
    assert len(access.reviews) == 5


async def test_an_answer_without_the_audience_is_not_an_authentication(
        api: lightkube.AsyncClient) -> None:
    access = FakeAccess(api, Clock())
    access.users[sa_token("t")] = SA

    async def audience_ignored(review: TokenReview, kind: str,
                               secret: str | None = None) -> dict[str, Any]:
        return {"authenticated": True, "audiences": ["https://kubernetes.default.svc"],
                "user": {"username": SA}}

    access._review = audience_ignored  # type: ignore[method-assign]
    with pytest.raises(ESError) as refused:
        await access.authenticate(f"Bearer {sa_token('t')}", "/p")
    assert refused.value.status == 401


async def test_access_is_reviewed_per_user_and_endpoint_and_the_namespace_covers_names(
        api: lightkube.AsyncClient) -> None:
    clock = Clock()
    access = FakeAccess(api, clock, cache_seconds=5.0)
    t1, t2 = sa_token("1"), sa_token("2")
    access.users.update({t1: SA, t2: SA})
    mine, theirs, unowned = Owned("mine", "team-a"), Owned("theirs", "team-b"), Owned("x", None)
    access.grants.add((SA, "team-a", "mine"))
    first = await access.authenticate(f"Bearer {t1}", "/p")
    second = await access.authenticate(f"Bearer {t2}", "/p")  # same user, another token
    for caller in (first, second, first):
        await access.authorize(caller, "mine", mine)  # type: ignore[arg-type]
        for refused_id, endpoint in (("theirs", theirs), ("x", unowned), ("gone", None)):
            with pytest.raises(ESError) as refused:
                await access.authorize(caller, refused_id, endpoint)  # type: ignore[arg-type]
            assert refused.value.status == 403 and SA in refused.value.reason
    assert [r for r in access.reviews if r[0] == "access"] == [
        ("access", (SA, "team-a", "mine")), ("access", (SA, "team-b", "theirs"))]
    # Nothing tells a missing endpoint from a forbidden one.
    with pytest.raises(ESError) as forbidden:
        await access.authorize(first, "same", Owned("same", "team-b"))  # type: ignore[arg-type]
    with pytest.raises(ESError) as missing:
        await access.authorize(first, "same", None)
    assert forbidden.value.body() == missing.value.body()

    # A listing: one review per namespace; where the namespace is granted, no more.
    access.reviews.clear()
    clock.advance(5)
    access.grants.add((SA, "team-c", ""))
    everything = [Owned(f"c{i}", "team-c", f"c{i}") for i in range(50)]
    listed = [mine, theirs, unowned, *everything]
    shown = await access.visible(first, listed)  # type: ignore[arg-type]
    assert [e.inference_id for e in shown] == ["mine"] + [f"c{i}" for i in range(50)]
    assert sorted(key for _, key in access.reviews) == [
        (SA, "team-a", ""), (SA, "team-a", "mine"), (SA, "team-b", ""),
        (SA, "team-b", "theirs"), (SA, "team-c", "")]
    await access.authorize(first, "c7", everything[7])  # type: ignore[arg-type]
    assert len(access.reviews) == 5  # covered by the namespace's decision


async def test_unknown_tokens_are_reviewed_within_the_budget_and_known_callers_never_wait(
        api: lightkube.AsyncClient) -> None:
    clock = Clock()
    access = FakeAccess(api, clock, reviews=ReviewBudget(
        1, 1.0, clock=lambda: clock.monotonic))  # one at a time, one a second
    known, junk = sa_token("known"), [sa_token(f"junk-{n}") for n in range(4)]
    access.users[known] = SA

    async def status(token: str) -> tuple[int, dict[str, str]]:
        try:
            await access.authenticate(f"Bearer {token}", "/p")
        except ESError as error:
            assert error.type in ("security_exception", "es_rejected_execution_exception")
            return error.status, error.headers
        return 200, {}

    assert await status(known) == (200, {})
    # This second's review is spent: an unknown token waits for nothing, 429.
    assert await status(junk[0]) == (429, {"Retry-After": "1"})
    assert await status(known) == (200, {})  # its decision is kept
    clock.advance(10)  # the known caller's decision is over, the budget refilled
    assert await status(junk[1]) == (401, {"WWW-Authenticate": 'Bearer realm="inference-operator"'})
    assert await status(junk[2]) == (429, {"Retry-After": "1"})
    # The known caller's token is asked about again (a deleted ServiceAccount shows), but
    # outside the budget: a flood of unknown tokens cannot lock it out.
    assert await status(known) == (200, {})
    assert len(access.reviews) == 3
    clock.advance(0.5)  # half a second's worth: still nothing, and says how long
    assert (await status(junk[3]))[0] == 429

    # In flight: while one review runs, another unknown token is refused at once; the
    # same token's requests share the running review.
    clock.advance(5)
    access.gate = asyncio.Event()
    first = [asyncio.ensure_future(status(junk[3])) for _ in range(3)]
    await asyncio.sleep(0)
    assert await status(junk[0]) == (429, {"Retry-After": "1"})
    access.gate.set()
    assert [s for s, _ in await asyncio.gather(*first)] == [401] * 3
    samples = {reason: access._metrics.registry.get_sample_value(
        "inference_gateway_auth_unreviewed_total", {"reason": reason})
        for reason in ("over_budget", "not_a_token")}
    assert samples == {"over_budget": 4, "not_a_token": None}
    with pytest.raises(ESError):
        await access.authenticate("Bearer abcdef.0123456789abcdef", "/p")  # bootstrap
    assert access._metrics.registry.get_sample_value(
        "inference_gateway_auth_unreviewed_total", {"reason": "not_a_token"}) == 1
    assert len(access.reviews) == 4


async def test_a_listing_asks_once_per_namespace_and_a_bounded_number_by_name(
        api: lightkube.AsyncClient) -> None:
    access = FakeAccess(api, Clock())
    token = sa_token("app")
    access.users[token] = SA
    caller = await access.authenticate(f"Bearer {token}", "/p")
    others = [Owned(f"e{n:02}-{i}", f"ns{n:02}", f"e{i}") for n in range(20) for i in range(10)]
    own = [Owned(f"z{i}", "app-ns", f"z{i}") for i in range(10)]  # listed last
    access.grants |= {(SA, "ns05", ""), (SA, "app-ns", "z3"), (SA, "ns19", "e9")}
    await access.authorize(caller, "e19-9", others[-1])  # type: ignore[arg-type]  # kept
    access.reviews.clear()

    shown = await access.visible(caller, [*others, *own])  # type: ignore[arg-type]
    asked = [key for kind, key in access.reviews if kind == "access"]
    assert len([k for k in asked if k[2] == ""]) == 21  # each namespace once
    by_name = [k for k in asked if k[2]]
    assert len(by_name) == kubernetes_auth.LISTING_NAME_REVIEWS == 16
    assert by_name[:10] == [(SA, "app-ns", f"z{i}") for i in range(10)]  # its own first
    assert [e.inference_id for e in shown] == [
        *(f"e05-{i}" for i in range(10)), "e19-9", "z3"]
    # The next listing asks the next names (the namespaces' decisions are kept).
    access.reviews.clear()
    await access.visible(caller, [*others, *own])  # type: ignore[arg-type]
    assert len(access.reviews) == 16 and all(key[2] for _, key in access.reviews)


async def test_reviews_are_asked_of_the_api_server_and_its_failures_are_503(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real calls, over a scripted API server: what is sent and read; a refusal, an
    answer that is no Status, one that is not JSON, no connection: 503 each, counted,
    and logged without the token even where the API server quotes it."""
    sent: list[tuple[str, Any]] = []
    script: list[Any] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append((request.url.path, json.loads(request.content)))
        reply = script.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    api = lightkube.AsyncClient(
        KubeConfig.from_one(cluster=Cluster(server="http://kube.test"), user=User()),
        transport=httpx2.MockTransport(answer))
    metrics = GatewayMetrics()
    access = KubernetesAccess(api, metrics, audience="aud", cache_seconds=10, cache_size=10,
                              negative_cache_size=10, reviews=ReviewBudget(10, 10.0))
    good, *bad = (jwt({"aud": ["aud"], "exp": time.time() + 3600, "n": n}) for n in range(6))
    try:
        script[:] = [
            httpx2.Response(201, json={"spec": {"token": good}, "status": {
                "authenticated": True, "audiences": ["aud"],
                "user": {"username": SA, "uid": "u1", "groups": ["g"],
                         "extra": {"k": ["v"]}}}}),
            httpx2.Response(201, json={"spec": {}, "status": {"allowed": True}})]
        caller = await access.authenticate(f"Bearer {good}", "/p")
        assert caller.name == SA
        await access.authorize(caller, "e", Owned("e", "team-a"))  # type: ignore[arg-type]
        (token_path, token_review), (access_path, access_review) = sent
        assert token_path == "/apis/authentication.k8s.io/v1/tokenreviews"
        assert token_review["spec"] == {"token": good, "audiences": ["aud"]}
        assert access_path == "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        assert access_review["spec"] == {
            "user": SA, "uid": "u1", "groups": ["g"], "extra": {"k": ["v"]},
            "resourceAttributes": {"namespace": "team-a", "verb": "invoke",
                                   "group": "inference-operator.dev",
                                   "resource": "inferenceendpoints", "name": "e"}}

        script[:] = [
            httpx2.Response(403, json={"kind": "Status", "code": 403, "reason": "Forbidden",
                                       "message": f"cannot review {bad[0]}"}),
            httpx2.Response(502, content=b"<html>bad gateway</html>"),
            httpx2.Response(503, content=b"<html>unavailable</html>",
                            headers={"Content-Type": "text/html"}),
            httpx2.Response(201, content=b"{not json",
                            headers={"Content-Type": "application/json"}),
            httpx2.ConnectError("connection refused")]
        monkeypatch.setattr(kubernetes_auth, "_WARN_EVERY", 0.0)  # each failure logged
        for token in bad:
            with pytest.raises(ESError) as unavailable:
                await access.authenticate(f"Bearer {token}", "/p")
            assert unavailable.value.status == 503
        assert metrics.registry.get_sample_value(
            "inference_gateway_auth_reviews_total", {"review": "token", "outcome": "error"}) == 5
        said = [r.getMessage().partition("the API server ")[2] for r in caplog.records
                if r.name == kubernetes_auth.__name__]
        assert said == ["answered 403: cannot review <token>", "answered 502 Bad Gateway",
                        "answered 503 Service Unavailable",
                        "answered something that is not a review's JSON",
                        "is unreachable (ConnectError: connection refused)"]
        assert not any(token in caplog.text for token in bad)
    finally:
        await api.close()


# -- the owner in the configuration records ----------------------------------------------


async def test_a_records_owner_is_kept_out_of_sight_and_an_unchanged_record_stays() -> None:
    from inference_operator.anthropic.client import Upstream
    from inference_operator.api.gateway_config import OWNER_KEY, Shard
    from inference_operator.gateway.service import Gateway
    from inference_operator.gateway.shards import ShardRejected

    gateway = Gateway(Upstream("http://127.0.0.1:9"), shards=["cfg-0"])
    await gateway.start()
    try:
        written = {"inference_id": "a", "task_type": "completion", "service": "anthropic",
                   "service_settings": {"api_key": "sk-owner-KEY-1", "model_id": "m",
                                        "rate_limit": {"requests_per_minute": 50}},
                   "task_settings": {"max_tokens": 16},
                   OWNER_KEY: {"namespace": "team-a", "name": "a-endpoint"}}
        await gateway.shards.apply("cfg-0", Shard(1, (written,)))
        endpoint = gateway.registry.find("a")
        assert endpoint is not None and endpoint.owner == Owner("team-a", "a-endpoint")
        assert endpoint.stored() == written  # what the operator wrote, owner included
        assert OWNER_KEY not in endpoint.public()
        await gateway.shards.apply("cfg-0", Shard(2, (json.loads(json.dumps(written)),)))
        assert gateway.registry.find("a") is endpoint  # unchanged: same endpoint, same bucket
        for owner in ({"namespace": "team-a"}, {"namespace": "", "name": "x"}, "team-a/x",
                      {"namespace": "n", "name": "x", "uid": "u"}):
            with pytest.raises(ShardRejected) as refused:
                await gateway.shards.apply("cfg-0", Shard(3, ({**written, OWNER_KEY: owner},)))
            assert "[owner] must be" in str(refused.value)
        assert gateway.registry.find("a") is endpoint  # refused whole: the previous content stays
    finally:
        await gateway.close()
