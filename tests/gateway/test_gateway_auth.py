"""Who may call, against the real kube-apiserver (``--auth kubernetes``): callers' tokens
are checked by real TokenReviews, their access by real SubjectAccessReviews against
Roles and RoleBindings, asked by a gateway whose own identity is a ServiceAccount bound
to ``system:auth-delegator``. The gateway runs in config mode, in-process, on shard
Secrets whose records name their owner InferenceEndpoint; the emulator plays Anthropic.
The API keys of a gateway without Kubernetes (``--auth api-keys``) are tested at the end.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from auth_support import (
    AUDIENCE,
    CACHE_SECONDS,
    COMPLETION,
    GatewayStarter,
    api_server_reviews,
    call,
    eventually,
    grant,
    invoke,
    run,
    token,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from elasticsearch import AuthenticationException, AuthorizationException, Elasticsearch
from gateway_support import (
    ADMIN_TOKEN,
    GatewayFactory,
    Gateways,
    RunningEmulator,
    ThreadedStack,
    answer_problems,
    is_es_error,
    metric,
    seed_body,
    start_gateway,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kube_support import ShardWriter, connect_as, record
from lightkube import AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.resources.authentication_v1 import TokenReview

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Stack
from inference_operator.gateway.auth.apikeys import hash_key

ISSUER = "https://kubernetes.default.svc.cluster.local"  # controlplane/launcher.py's
JS_DIR = Path(__file__).parent / "js"
EXPECTED = "Hello from the Anthropic emulator. You said: hi"
MARGIN = 3.0  # the poll's slack past the cache time: a loaded 2-core machine
API_SERVER_TOKEN_CACHE = 10.0  # kube-apiserver keeps a token's authentication this long


# -- tokens made here, signed as the API server signs them --------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def minted(signing_key: rsa.RSAPrivateKey, public_key: rsa.RSAPublicKey, namespace: str,
           account: str, uid: str, *, expires_in: float) -> str:
    """A ServiceAccount token as kube-apiserver issues one (its claims, its key id),
    signed with ``signing_key``."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    header = {"alg": "RS256", "kid": _b64(digest.finalize())}
    now = int(time.time())
    claims = {"aud": [AUDIENCE], "iss": ISSUER, "iat": now - 7200, "nbf": now - 7200,
              "exp": int(now + expires_in), "jti": str(uuid.uuid4()),
              "sub": f"system:serviceaccount:{namespace}:{account}",
              "kubernetes.io": {"namespace": namespace,
                                "serviceaccount": {"name": account, "uid": uid}}}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


async def token_review(admin: AsyncClient, token: str) -> dict[str, Any]:
    """What the API server itself says about a token (as the cluster admin)."""
    review = await admin.create(TokenReview(spec=TokenReviewSpec(token=token,
                                                                 audiences=[AUDIENCE])))
    assert review.status is not None
    return {"authenticated": bool(review.status.authenticated), "error": review.status.error}


# -- the tests -----------------------------------------------------------------------------


async def test_no_or_unusable_credentials_are_401(
        auth_gateway: GatewayStarter, shards: ShardWriter, kubectl: Kubectl,
        teams: tuple[str, str], control_plane: Any, admin: AsyncClient) -> None:
    team, _ = teams
    await shards.write(0, 1, record("a1", owner=(team, "a1")))
    await shards.write(1, 1)
    gateway = await auth_gateway()
    uid = json.loads((await run(kubectl, "get", "serviceaccount", "app", "-n", team,
                                "-o", "json")).stdout)["metadata"]["uid"]
    refused: dict[str, str | None] = {
        "none": None, "empty": "", "another scheme": "Basic YWxpY2U6c2VjcmV0",
        "no token": "Bearer", "not a token's characters": "Bearer not a token!",
        "malformed": "Bearer not-a-jwt-at-all", "a JWT's shape only": "Bearer a.b.c",
        "wrong audience": "Bearer " + await token(kubectl, team, "app", audience=None),
        "a bootstrap token's form": "Bearer abcdef.0123456789abcdef",
    }
    if control_plane.certs is not None:  # a local control plane: its signing key is here
        real = serialization.load_pem_private_key(
            control_plane.certs.sa_private_key.read_bytes(), password=None)
        assert isinstance(real, rsa.RSAPrivateKey)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        valid = minted(real, real.public_key(), team, "app", uid, expires_in=3600)
        expired = minted(real, real.public_key(), team, "app", uid, expires_in=-3600)
        forged = minted(other, real.public_key(), team, "app", uid, expires_in=3600)
        # The control: signed as the API server signs, it is a real token ...
        assert (await token_review(admin, valid))["authenticated"] is True
        assert await invoke(gateway, "a1", valid) == 403  # authenticated, not yet allowed
        # ... and the API server refuses the other two as well.
        assert (await token_review(admin, expired))["authenticated"] is False
        assert (await token_review(admin, forged))["authenticated"] is False
        refused |= {"expired": f"Bearer {expired}", "forged": f"Bearer {forged}"}
    reviews = await api_server_reviews(kubectl)
    for what, authorization in refused.items():
        for method, path, body in (("POST", COMPLETION.format("a1"), {"input": "hi"}),
                                   ("GET", "/_inference", None),
                                   ("GET", "/_inference/a1", None)):
            status, headers, payload = await call(gateway, method, path,
                                                  authorization=authorization, body=body)
            assert status == 401, (what, path, payload)
            assert headers["WWW-Authenticate"] == 'Bearer realm="inference-operator"', what
            assert payload["error"]["type"] == "security_exception"
            credentials = (authorization or "").partition(" ")[2]
            if credentials:
                assert credentials not in json.dumps(payload) + json.dumps(headers), what
    # What cannot be a Kubernetes token for the gateway's audience (all but the forged
    # one) is refused unasked; the forged one is asked about once.
    asked = (await api_server_reviews(kubectl))["tokenreviews"] - reviews["tokenreviews"]
    assert asked == (1 if "forged" in refused else 0)
    # The probes stay open (kubelet); the metrics are on their own listener (Prometheus).
    for path in ("/healthz", "/readyz"):
        assert (await call(gateway, "GET", path))[0] == 200
    assert (await call(gateway, "GET", "/metrics"))[0] == 400
    async with gateway.session.get(gateway.metrics + "/metrics") as scraped:
        assert scraped.status == 200


async def test_rbac_decides_and_a_revoked_binding_is_refused_within_the_cache_time(
        auth_gateway: GatewayStarter, shards: ShardWriter, kubectl: Kubectl,
        teams: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    team, _ = teams
    await shards.write(0, 1, record("a1", owner=(team, "a1")), record("a2", owner=(team, "a2")))
    await shards.write(1, 1)
    gateway = await auth_gateway()
    bearer = await token(kubectl, team, "app")
    es = Elasticsearch(gateway.public, bearer_auth=bearer)
    user = f"system:serviceaccount:{team}:app"

    # A valid token, no RoleBinding: 403 naming the caller and the endpoint.
    with pytest.raises(AuthorizationException) as refused:
        await asyncio.to_thread(es.inference.completion, inference_id="a1", input="hi")
    assert refused.value.meta.status == 403
    assert refused.value.body["error"]["type"] == "security_exception"
    reason = refused.value.body["error"]["reason"]
    assert f"user [{user}]" in reason and "[a1]" in reason
    assert bearer not in str(refused.value.body)

    # A Role and RoleBinding for a1: allowed within the cache time, with the official
    # client as an application would use it; a2 stays refused.
    await grant(kubectl, team, (team, "app"), "invoke-a1", ["a1"])
    await eventually(lambda: _is(invoke(gateway, "a1", bearer), 200), CACHE_SECONDS + MARGIN,
                     "the RoleBinding was not honoured within the cache time")
    answer = await asyncio.to_thread(es.inference.completion, inference_id="a1", input="hi")
    assert answer["completion"][0]["result"] == EXPECTED
    listing = await asyncio.to_thread(es.inference.get)
    assert [e["inference_id"] for e in listing["endpoints"]] == ["a1"]
    assert "owner" not in json.dumps(listing.body)  # the owner is not Elasticsearch's
    assert await invoke(gateway, "a2", bearer) == 403

    node, npm = shutil.which("node"), shutil.which("npm")
    if node is not None and npm is not None:  # the official JavaScript client too
        if not (JS_DIR / "node_modules" / "@elastic" / "elasticsearch").is_dir():
            await asyncio.to_thread(subprocess.run, [npm, "ci", "--no-audit", "--no-fund"],
                                    cwd=JS_DIR, check=True, capture_output=True, timeout=300)
        for inference_id, expected in (
                ("a1", {"completion": [{"result": EXPECTED}], "listed": ["a1"]}),
                ("a2", {"status": 403, "type": "security_exception"})):
            result = await asyncio.to_thread(
                subprocess.run, [node, "bearer_example.js", gateway.public, bearer,
                                 inference_id, "hi"],
                cwd=JS_DIR, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout) == expected

    # The RoleBinding deleted: refused again within the cache time.
    await run(kubectl, "delete", "rolebinding", "invoke-a1", "-n", team)
    revoked = time.monotonic()
    await eventually(lambda: _is(invoke(gateway, "a1", bearer), 403), CACHE_SECONDS + MARGIN,
                     "still allowed past the cache time after the RoleBinding was deleted")
    assert time.monotonic() - revoked <= CACHE_SECONDS + MARGIN
    assert bearer not in caplog.text  # not at DEBUG either


async def test_a_deleted_service_account_is_refused_within_the_cache_times(
        auth_gateway: GatewayStarter, shards: ShardWriter, kubectl: Kubectl,
        teams: tuple[str, str]) -> None:
    team, _ = teams
    await shards.write(0, 1, record("a1", owner=(team, "a1")))
    await shards.write(1, 1)
    await grant(kubectl, team, (team, "app"), "invoke-all")
    gateway = await auth_gateway()
    bearer = await token(kubectl, team, "app")
    assert await invoke(gateway, "a1", bearer) == 200
    await run(kubectl, "delete", "serviceaccount", "app", "-n", team)
    # Its tokens no longer authenticate: 401 (not 403: the credentials are what is
    # gone), once the gateway's cache and the API server's own token cache let go.
    await eventually(lambda: _is(invoke(gateway, "a1", bearer), 401),
                     CACHE_SECONDS + API_SERVER_TOKEN_CACHE + MARGIN,
                     "the deleted ServiceAccount's token was still accepted")


async def test_teams_see_and_call_only_their_own_endpoints(
        auth_gateway: GatewayStarter, shards: ShardWriter, kubectl: Kubectl,
        teams: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    team_a, team_b = teams
    await shards.write(0, 1, record("a1", owner=(team_a, "a1")),
                       record("b1", owner=(team_b, "b1")), record("unowned"))
    await shards.write(1, 1, record("a2", owner=(team_a, "a2")),
                       record("b2", owner=(team_b, "b2")))
    await run(kubectl, "create", "serviceaccount", "narrow", "-n", team_a)
    await grant(kubectl, team_a, (team_a, "app"), "invoke-all")  # the whole namespace
    await grant(kubectl, team_a, (team_a, "narrow"), "invoke-a2", ["a2"])  # one name
    await grant(kubectl, team_b, (team_b, "app"), "invoke-all")
    gateway = await auth_gateway(caller_metrics_service_account=True)
    a, narrow, b = (await token(kubectl, team_a, "app"), await token(kubectl, team_a, "narrow"),
                    await token(kubectl, team_b, "app"))

    def listed(payload: Any) -> list[str]:
        return [e["inference_id"] for e in payload["endpoints"]]

    for bearer, mine in ((a, ["a1", "a2"]), (narrow, ["a2"]), (b, ["b1", "b2"])):
        for path in ("/_inference", "/_inference/_all", "/_inference/completion/_all",
                     "/_inference/*"):
            status, _, payload = await call(gateway, "GET", path,
                                            authorization=f"Bearer {bearer}")
            assert (status, listed(payload)) == (200, mine), path
        for inference_id in mine:
            assert await invoke(gateway, inference_id, bearer) == 200
            status, _, payload = await call(gateway, "GET", f"/_inference/{inference_id}",
                                            authorization=f"Bearer {bearer}")
            assert (status, listed(payload)) == (200, [inference_id])

    # Every endpoint of team B is 403 to team A, and so is an id nobody has: the answers
    # do not tell which of B's ids exist.
    answers = {}
    for inference_id in ("b1", "b2", "no-such-endpoint"):
        for method, path, body in (
                ("POST", COMPLETION.format(inference_id), {"input": "hi"}),
                ("POST", f"/_inference/completion/{inference_id}/_stream", {"input": "hi"}),
                ("GET", f"/_inference/{inference_id}", None),
                ("GET", f"/_inference/completion/{inference_id}", None)):
            status, _, payload = await call(gateway, method, path,
                                            authorization=f"Bearer {a}", body=body)
            assert status == 403, (method, path, payload)
            answers[method, path.replace(inference_id, "ID")] = json.dumps(payload).replace(
                inference_id, "ID")
            assert f"system:serviceaccount:{team_a}:app" in payload["error"]["reason"]
    assert len(set(answers.values())) == 1, set(answers.values())
    assert team_b not in next(iter(answers.values()))  # B's namespace is not named either
    # An endpoint without an owner (not the operator's) is nobody's: 403, saying why.
    status, _, payload = await call(gateway, "POST", COMPLETION.format("unowned"),
                                    authorization=f"Bearer {a}", body={"input": "hi"})
    assert status == 403 and "has no owner" in payload["error"]["reason"]

    # Who spent what: requests and tokens per endpoint and caller.
    labels = f'inference_id="a1",caller_namespace="{team_a}",caller_service_account="app"'
    calls = "inference_gateway_caller_requests_total"
    tokens = "inference_gateway_caller_tokens_total"
    assert await metric(gateway.session, gateway.metrics, calls,
                        labels + ',status="200"') == 1  # inference calls only, not GETs
    assert await metric(gateway.session, gateway.metrics, tokens, labels + ',kind="output"') > 0
    # Refusals count under _unknown (three ids by two inference routes, and "unowned"),
    # never under the id probed: the metrics do not tell which of B's ids exist either.
    refused = f'caller_namespace="{team_a}",caller_service_account="app",status="403"'
    assert await metric(gateway.session, gateway.metrics, calls,
                        f'inference_id="_unknown",{refused}') == 7
    with pytest.raises(KeyError):
        await metric(gateway.session, gateway.metrics, calls, f'inference_id="b1",{refused}')
    async with gateway.session.get(gateway.metrics + "/metrics") as scraped:
        text = await scraped.text()
    assert all(t not in text for t in (a, narrow, b))

    # The access log: one JSON line per call, with the caller, never a credential.
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "inference_operator.gateway.access"]
    ok = [line for line in lines if line["endpoint"] == "a1" and line["method"] == "POST"
          and line["caller"] == f"system:serviceaccount:{team_a}:app"]
    assert ok and ok[0]["status"] == 200 and ok[0]["input_tokens"] > 0
    assert ok[0]["output_tokens"] > 0 and ok[0]["latency_ms"] > 0
    assert set(ok[0]) == {"time", "listener", "caller", "caller_namespace", "method", "path",
                          "endpoint", "status", "input_tokens", "output_tokens", "latency_ms"}
    assert all(t not in caplog.text for t in (a, narrow, b))
    assert all(set(line) == set(ok[0]) for line in lines)  # never a prompt or completion


async def test_one_review_per_token_and_endpoint_per_cache_period_under_load(
        auth_gateway: GatewayStarter, shards: ShardWriter, kubectl: Kubectl,
        teams: tuple[str, str]) -> None:
    team, _ = teams
    await shards.write(0, 1, record("a1", owner=(team, "a1")), record("a2", owner=(team, "a2")))
    await shards.write(1, 1)
    await grant(kubectl, team, (team, "app"), "invoke-a1", ["a1", "a2"])
    gateway = await auth_gateway()
    bearer = await token(kubectl, team, "app")

    async def burst() -> dict[str, float]:
        before = await api_server_reviews(kubectl)
        statuses = await asyncio.gather(*(invoke(gateway, f"a{1 + i % 2}", bearer)
                                          for i in range(200)))
        assert statuses == [200] * 200
        after = await api_server_reviews(kubectl)
        return {kind: after[kind] - before[kind] for kind in after}

    # 200 concurrent calls with one new token on two endpoints: one TokenReview, and one
    # SubjectAccessReview per endpoint, as the API server counts them.
    assert await burst() == {"tokenreviews": 1, "subjectaccessreviews": 2}
    await asyncio.sleep(CACHE_SECONDS + 0.5)  # the next cache period: asked once more
    assert await burst() == {"tokenreviews": 1, "subjectaccessreviews": 2}
    for review, expected in (("token", 2), ("access", 4)):
        assert await metric(gateway.session, gateway.metrics,
                            "inference_gateway_auth_reviews_total",
                            f'review="{review}",outcome="allowed"') == expected


async def test_an_api_server_that_cannot_review_gives_503(
        emulator: RunningEmulator, kubectl: Kubectl, namespace: str, control_plane: Any,
        service_account_kubeconfig: Callable[[str, str], Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Standalone, --auth kubernetes: the reviews fail, the callers get 503."""
    await run(kubectl, "create", "serviceaccount", "caller", "-n", namespace)
    bearer = await token(kubectl, namespace, "caller")
    # Unreachable: the same cluster's kubeconfig, pointed at a port nobody listens on.
    unreachable = tmp_path / "unreachable.kubeconfig"
    document = yaml.safe_load(control_plane.kubeconfig.read_text())
    document["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    unreachable.write_text(yaml.safe_dump(document))
    # Reachable, but the gateway's identity may not create reviews (no auth-delegator).
    unbound = await asyncio.to_thread(service_account_kubeconfig, namespace, "no-delegator")
    for kubeconfig in (unreachable, unbound):
        async with Gateways(emulator.url) as gateways:
            gateway = await gateways.start(auth="kubernetes",
                                           kube=functools.partial(connect_as, kubeconfig))
            _, headers, payload = await call(
                gateway, "POST", COMPLETION.format("x"),
                authorization=f"Bearer {bearer}", body={"input": "hi"}, unavailable=True)
            assert is_es_error(payload, 503)
            assert payload["error"]["type"] == "status_exception"
            assert headers["Retry-After"] == "1" and bearer not in json.dumps(payload)
    assert "system:auth-delegator" in caplog.text and bearer not in caplog.text


# -- API keys: the standalone gateway, no cluster -----------------------------------------


def api_keys_file(path: Path, **keys: tuple[str, list[str]]) -> Path:
    path.write_text(yaml.safe_dump({"api_keys": [
        {"id": key_id, "key_hash": hash_key(key), "inference_ids": ids}
        for key_id, (key, ids) in keys.items()]}))
    return path


async def test_api_keys_with_the_official_client(make_gateway: GatewayFactory,
                                                 tmp_path: Path) -> None:
    keys = api_keys_file(tmp_path / "keys.yaml", **{
        "team-a": ("key-a-3f9d1c7e5b2a4d6f8e0c", ["mine"]),
        "ops": ("key-ops-9e8d7c6b5a4f3e2d1c0b", ["*"])})
    gateway = await make_gateway(auth="api-keys", api_keys_file=keys)
    for inference_id in ("mine", "theirs"):
        await gateway.put(inference_id, seed_body())

    es = Elasticsearch(gateway.public, api_key=("team-a", "key-a-3f9d1c7e5b2a4d6f8e0c"))
    answer = await asyncio.to_thread(es.inference.completion, inference_id="mine",
                                     input="What is Elastic?")
    assert answer["completion"][0]["result"].endswith("You said: What is Elastic?")
    listing = await asyncio.to_thread(es.inference.get)
    assert [e["inference_id"] for e in listing["endpoints"]] == ["mine"]
    for inference_id in ("theirs", "no-such-endpoint"):  # the same answer for both
        with pytest.raises(AuthorizationException) as refused:
            await asyncio.to_thread(es.inference.completion, inference_id=inference_id,
                                    input="hi")
        assert "api-key:team-a" in refused.value.body["error"]["reason"]
    # The encoded form (what Kibana shows) works as well.
    encoded = base64.b64encode(b"ops:key-ops-9e8d7c6b5a4f3e2d1c0b").decode()
    ops = Elasticsearch(gateway.public, api_key=encoded)
    listing = await asyncio.to_thread(ops.inference.get)
    assert [e["inference_id"] for e in listing["endpoints"]] == ["mine", "theirs"]
    with pytest.raises(AuthenticationException) as unknown:
        await asyncio.to_thread(Elasticsearch(gateway.public, api_key=("team-a", "wrong"))
                                .inference.get)
    assert unknown.value.meta.headers["WWW-Authenticate"] == "ApiKey"
    # The admin listener keeps its own token, API keys or not.
    status, _, _ = await gateway.call("GET", "/_inference", admin=True, token=ADMIN_TOKEN)
    assert status == 200
    status, _, _ = await gateway.call("GET", "/_inference")
    assert status == 401


async def test_callers_past_the_account_budget_share_one_series(make_gateway: GatewayFactory,
                                                              tmp_path: Path) -> None:
    """Per-account caller metrics within their budget: a tenant creating accounts at will
    cannot grow /metrics; accounts past it count under ``_other``."""
    keys = {f"app-{n}": (f"key-app-{n}-5d1e9a7c3b8f2e64", ["mine"]) for n in range(4)}
    gateway = await make_gateway(auth="api-keys", api_keys_file=api_keys_file(
        tmp_path / "keys.yaml", **keys), caller_metrics_service_account=True,
        caller_metrics_accounts=10, caller_metrics_accounts_per_namespace=2, metrics_port=0)
    await gateway.put("mine", seed_body())
    for key_id, (key, _) in keys.items():
        encoded = base64.b64encode(f"{key_id}:{key}".encode()).decode()
        status, _, payload = await call(gateway, "POST", COMPLETION.format("mine"),
                                        authorization=f"ApiKey {encoded}",
                                        body={"input": "hi"})
        assert status == 200, payload

    def answered(account: str) -> Awaitable[float]:
        return metric(gateway.session, gateway.metrics, "inference_gateway_caller_requests_total",
                      f'inference_id="mine",caller_namespace="_api_key",'
                      f'caller_service_account="{account}",status="200"')

    assert [await answered(a) for a in ("app-0", "app-1", "_other")] == [1, 1, 2]
    with pytest.raises(KeyError):
        await answered("app-2")


async def test_the_command_with_api_keys_logs_json_lines(process_stack: Stack,
                                                         tmp_path: Path) -> None:
    """``inference-operator gateway --auth api-keys``: the seed's client example with a
    key, and the access log on stdout, one JSON object per line."""
    keys = api_keys_file(tmp_path / "keys.json", app=("key-app-0a1b2c3d4e5f60718293", ["*"]))
    gateway = await start_gateway(process_stack, "--auth", "api-keys", "--api-keys-file",
                                  str(keys))
    admin = Elasticsearch(process_stack.admin_url, bearer_auth=ADMIN_TOKEN)
    await asyncio.to_thread(admin.inference.put, task_type="completion",
                            inference_id="anthropic_completion",
                            inference_config=seed_body())
    es = Elasticsearch(process_stack.gateway_url, api_key=("app", "key-app-0a1b2c3d4e5f60718293"))
    answer = await asyncio.to_thread(es.inference.completion,
                                     inference_id="anthropic_completion", input="hi")
    assert answer["completion"][0]["result"] == EXPECTED
    with pytest.raises(AuthenticationException):
        await asyncio.to_thread(Elasticsearch(process_stack.gateway_url).inference.get)
    lines = [json.loads(line) for line in gateway.log_text().splitlines()
             if line.startswith("{")]
    calls = [line for line in lines if line["listener"] == "public"]
    assert [(c["caller"], c["status"]) for c in calls] == [("api-key:app", 200), (None, 401)]
    assert calls[0]["endpoint"] == "anthropic_completion" and calls[0]["output_tokens"] > 0
    assert "key-app-0a1b2c3d4e5f60718293" not in gateway.log_text()


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


# -- fuzzed Authorization headers ---------------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15")) * 10
DERANDOMIZE = not os.environ.get("FUZZ_RANDOM")  # as test_gateway_fuzz.py
# What requests can send: no control characters; bytes past ASCII go as Latin-1, which
# the gateway reads as (invalid) UTF-8.
_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                              exclude_characters="\x7f"), max_size=120)
_B64 = st.binary(max_size=90).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))
HEADERS = st.one_of(
    _TEXT,
    st.builds("{} {}".format, st.sampled_from(
        ["Bearer", "bearer", "BEARER", "ApiKey", "apikey", "Basic", "Negotiate", "Bearer  "]),
        _TEXT),
    st.builds("Bearer {}.{}.{}".format, _B64, _B64, _B64),  # shaped like a JWT
    st.builds(lambda i, k: "ApiKey " + base64.b64encode(f"{i}:{k}".encode()).decode(),
              _TEXT, _TEXT),  # shaped like an API key
).map(str.strip)


def fuzz_authorization(stack: ThreadedStack, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever the header: 401 (or 403), in the Elasticsearch shape, never a 5xx, and
    never its credentials in the answer, the log or the metrics.

    A credential that the log or the metrics held before it was sent is no leak: the
    fuzzer also draws strings from the project's own source (Hypothesis samples its
    constants), and one of them may stand in a path the start-up line prints."""
    sent: list[str] = []
    session = requests.Session()

    def outputs() -> str:
        metrics = session.get(stack.metrics + "/metrics", timeout=10).text
        return metrics + "\n".join(r.getMessage() for r in caplog.records)

    for method, path in (("POST", COMPLETION.format("anthropic_completion")),
                         ("GET", "/_inference")):  # each kind of line the fuzzing logs
        session.request(method, stack.public + path, json={"input": "hi"}, timeout=30,
                        headers={"Authorization": "Bearer x"})
    before = outputs()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck))
    @given(header=HEADERS, inference=st.booleans())
    def check(header: str, inference: bool) -> None:
        path = COMPLETION.format("anthropic_completion") if inference else "/_inference"
        answer = session.request("POST" if inference else "GET", stack.public + path,
                                 json={"input": "hi"} if inference else None,
                                 headers={"Authorization": header}, timeout=30)
        assert not answer_problems(answer.status_code, answer.headers, answer.content)
        assert answer.status_code == 401, (header, answer.text)
        assert answer.headers["WWW-Authenticate"]
        credentials = header.partition(" ")[2].strip()
        if len(credentials) >= 8:  # shorter ones may be in any text by chance
            sent.append(credentials)
            shown = answer.text + json.dumps(dict(answer.headers))
            assert credentials not in shown, header

    check()
    after = outputs()
    leaks = [c for c in sent if c in after and c not in before]
    assert not leaks, leaks[:3]


def test_fuzzed_authorization_headers_with_api_keys(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = api_keys_file(tmp_path / "keys.yaml", app=("key-app-5d4c3b2a1f0e9d8c7b6a", ["*"]))
    with ThreadedStack(auth="api-keys", api_keys_file=keys, metrics_port=0) as stack:
        requests.put(stack.admin + COMPLETION.format("anthropic_completion"), json=seed_body(),
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        fuzz_authorization(stack, caplog)


def test_fuzzed_authorization_headers_with_kubernetes(
        reviewer: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ThreadedStack(kube=functools.partial(connect_as, reviewer),
                       auth="kubernetes", metrics_port=0) as stack:
        fuzz_authorization(stack, caplog)
