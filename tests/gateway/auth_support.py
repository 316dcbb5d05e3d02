"""Callers of a gateway with ``--auth kubernetes`` against the real API server: the
gateway's own identity (a ServiceAccount bound to ``system:auth-delegator``), teams with
ServiceAccounts, their tokens and RoleBindings, a gateway in config mode on the test's
shard Secrets, and the reviews the API server counted. Shared by tests/gateway's auth
tests and tests/reliability/isolation's."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gateway_support import Gateways, RunningEmulator, RunningGateway, answer_problems
from kube_support import BASE, KEY_A, SHARDS, ShardWriter, connect_as, shard_reader

from inference_devkit.controlplane.apimetrics import requests_by_resource
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.waiting import poll_async

AUDIENCE = "inference-operator"
COMPLETION = "/_inference/completion/{}"
CACHE_SECONDS = 2.0  # short, so a revocation shows within the test


# -- the cluster: the gateway's identity, the teams, tokens, RBAC ------------------------


def run(kubectl: Kubectl, *args: str, stdin: str | None = None,
        check: bool = True) -> Awaitable[subprocess.CompletedProcess[str]]:
    return asyncio.to_thread(functools.partial(kubectl.run, *args, stdin=stdin, check=check))


async def token(kubectl: Kubectl, namespace: str, account: str,
                audience: str | None = AUDIENCE) -> str:
    """A ServiceAccount token from the API server, as a Pod's projected one."""
    args = ["create", "token", account, "-n", namespace]
    if audience:
        args += ["--audience", audience]
    return (await run(kubectl, *args)).stdout.strip()


async def grant(kubectl: Kubectl, namespace: str, account: tuple[str, str], binding: str,
                names: list[str] | None = None) -> None:
    """Verb invoke on the InferenceEndpoints ``names`` of ``namespace`` (None: all of
    them) for the ServiceAccount ``account`` (namespace, name)."""
    rule: dict[str, Any] = {"apiGroups": ["inference-operator.dev"],
                            "resources": ["inferenceendpoints"], "verbs": ["invoke"]}
    if names is not None:
        rule["resourceNames"] = names
    await asyncio.to_thread(kubectl.apply, [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": binding}, "rules": [rule]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": binding},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": binding},
         "subjects": [{"kind": "ServiceAccount", "namespace": account[0],
                       "name": account[1]}]},
    ], namespace)




@pytest.fixture
def reviewer(kubectl: Kubectl, namespace: str,
             service_account_kubeconfig: Callable[[str, str], Path]) -> Iterator[Path]:
    """The gateway's own identity: reads its shards, creates TokenReviews and
    SubjectAccessReviews (the built-in ClusterRole system:auth-delegator), nothing else."""
    kubeconfig = service_account_kubeconfig(namespace, "gateway")
    binding = f"{namespace}-gateway-auth-delegator"
    kubectl.apply(shard_reader(namespace), namespace)
    kubectl.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "gateway", "namespace": namespace}]})
    yield kubeconfig
    kubectl.run("delete", "clusterrolebinding", binding, "--wait=false", check=False)


@pytest.fixture
def teams(kubectl: Kubectl) -> Iterator[tuple[str, str]]:
    """Two team namespaces, each with the ServiceAccount "app"."""
    names = (f"team-a-{uuid.uuid4().hex[:6]}", f"team-b-{uuid.uuid4().hex[:6]}")
    for name in names:
        kubectl.run("create", "namespace", name)
        kubectl.run("create", "serviceaccount", "app", "-n", name)
    yield names
    for name in names:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


GatewayStarter = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def auth_gateway(emulator: RunningEmulator, reviewer: Path, namespace: str,
                       shards: ShardWriter) -> AsyncIterator[GatewayStarter]:
    """Factory: a gateway in config mode with --auth kubernetes, ready (its shards read)."""
    emulator.state.api_keys = (KEY_A,)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    gateways = Gateways(emulator.url, session)

    async def start(**overrides: Any) -> RunningGateway:
        settings = {"admin_token": "", "config_secret": BASE, "config_shards": SHARDS.count,
                    "namespace": namespace, "auth": "kubernetes",
                    "auth_cache_seconds": CACHE_SECONDS, "metrics_port": 0, **overrides}
        running = await gateways.start(kube=functools.partial(connect_as, reviewer),
                                       **settings)
        await eventually(lambda: _ready(running), 15, "the gateway never got ready")
        return running

    yield start
    await gateways.close()
    await session.close()


async def _ready(gateway: RunningGateway) -> bool:
    return (await gateway.call("GET", "/readyz"))[0] == 200


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float,
                     message: str) -> Any:
    return await poll_async(check, timeout=seconds, interval=0.1, message=message)


async def call(gateway: RunningGateway, method: str, path: str, *,
               authorization: str | None = None, body: Any = None,
               unavailable: bool = False) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON); the answer checked by the product's rules (no 5xx but,
    with ``unavailable``, a 503)."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with gateway.session.request(method, gateway.public + path, headers=headers,
                                       json=body) as response:
        raw = await response.read()
        problems = answer_problems(response.status, response.headers, raw)
        assert problems == (["server error 503"] if unavailable else []), raw[:300]
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return response.status, dict(response.headers), payload


async def invoke(gateway: RunningGateway, inference_id: str, bearer: str | None) -> int:
    status, _, _ = await call(gateway, "POST", COMPLETION.format(inference_id),
                              authorization=None if bearer is None else f"Bearer {bearer}",
                              body={"input": "hi"})
    return status




async def api_server_reviews(kubectl: Kubectl) -> dict[str, float]:
    """TokenReviews and SubjectAccessReviews the API server answered so far."""
    text = (await run(kubectl, "get", "--raw", "/metrics")).stdout
    return requests_by_resource(text, ("tokenreviews", "subjectaccessreviews"))
