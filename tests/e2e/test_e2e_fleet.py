"""The gateway fleet on the real node: `gateway.mode=fleet`, three replicas behind the
Service, configured through the configuration Secrets.

Each replica is called at its own Pod IP, from this host (the local node's Pods are on a
bridge here), so a test knows which replica answered; the emulator, started with two
known keys, says which key each upstream call carried.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from e2e_support import (
    Disruption,
    completion,
    logs,
    parse_loop,
    start_client,
)

from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import (
    EMULATOR_PORT,
    RELEASE,
    Installation,
    all_ready,
    caller_token,
    deploy_emulator,
    elapsed,
    grant_invoke,
    helm,
    install_chart,
    namespace,
    pods,
)
from inference_devkit.waiting import poll
from inference_operator.gateway.peering import owners
from resources import MODEL, endpoint, secret

pytestmark = pytest.mark.skipif(
    os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true",
    reason="calls each gateway Pod at its IP from the test host: the local node only")

REPLICAS = 3
KEYS = ("sk-ant-fleet-first", "sk-ant-fleet-second")  # the emulator's --api-key 0 and 1
GATEWAY_PORT = 9200
RATE_LIMIT = 120
PROPAGATION = 5.0  # seconds: rotation and deletion reach every replica within this
PINNED_RATE_LIMIT = 60  # peer admission: what one client pinned to one replica gets
ORG_LIMITS = {"requests_per_minute": 100_000, "input_tokens_per_minute": 10_000_000,
              "output_tokens_per_minute": 2_000_000, "round_remaining": False}


def _post(url: str, body: dict[str, Any], timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **CALLER})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _put(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


# The Authorization header of this host's calls: a token of the client namespace's
# default ServiceAccount, which the team fixture lets invoke the team's endpoints.
CALLER: dict[str, str] = {}


class Fleet:
    def __init__(self, kubectl: Kubectl, installation: Installation, emulator_ns: str) -> None:
        self.kubectl = kubectl
        self.installation = installation
        self.emulator_ns = emulator_ns
        self.selector = f"{installation.selector},app.kubernetes.io/component=gateway"

    def gateway_pods(self) -> list[dict]:
        return [p for p in pods(self.kubectl, self.installation.namespace, self.selector)
                if not p["metadata"].get("deletionTimestamp")]

    def replicas(self) -> dict[str, str]:
        """Ready gateway Pods: name -> base URL at the Pod IP."""
        return {p["metadata"]["name"]: f"http://{p['status']['podIP']}:{GATEWAY_PORT}"
                for p in self.gateway_pods() if all_ready(p)}

    def served_by_service(self) -> int:
        """Ready endpoints of the gateway Service's EndpointSlices: what the operator
        counts replicas by, a moment after the Pods turn Ready."""
        slices = json.loads(self.kubectl.run(
            "get", "endpointslices", "-n", self.installation.namespace, "-o", "json",
            "-l", f"kubernetes.io/service-name={self.installation.service}").stdout)
        return sum(1 for item in slices["items"] for endpoint in item.get("endpoints") or []
                   if (endpoint.get("conditions") or {}).get("ready"))

    def emulator_url(self) -> str:
        (pod,) = pods(self.kubectl, self.emulator_ns, "app.kubernetes.io/name=anthropic-emulator")
        return f"http://{pod['status']['podIP']}:{EMULATOR_PORT}"

    def upstream_calls(self, prefix: str) -> list[dict[str, Any]]:
        """The emulator's record of the Messages calls whose prompt starts with ``prefix``."""
        return [entry for entry in _get(f"{self.emulator_url()}/_emulator/requests")
                if entry["path"] == "/v1/messages" and isinstance(entry.get("body"), dict)
                and str(entry["body"]["messages"][0]["content"]).startswith(prefix)]


@pytest.fixture(scope="module")
def fleet_emulator(cluster, kubectl: Kubectl,
                   project_image: tuple[str, str | None]) -> Iterator[str]:
    ns = namespace(kubectl, "e2e-fleet-emulator")
    yield deploy_emulator(kubectl, cluster, project_image[0], ns,
                          *(f"--api-key={key}" for key in KEYS))
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def installation(cluster, kubectl: Kubectl, project_image: tuple[str, str | None],
                 fleet_emulator: str) -> Iterator[Installation]:
    yield from install_chart(cluster, kubectl, project_image[0], fleet_emulator,
                             "gateway.mode=fleet", f"gateway.replicas={REPLICAS}")


@pytest.fixture(scope="module")
def fleet(kubectl: Kubectl, installation: Installation, fleet_emulator: str) -> Fleet:
    running = Fleet(kubectl, installation, fleet_emulator.split(".")[1])
    poll(lambda: len(running.replicas()) == REPLICAS, timeout=120, interval=1,
         message="the gateway replicas never all turned Ready")
    # The endpoint controller lags the Pods: an endpoint published before it caught up is
    # rightly "on 2/2 gateway replicas" (a clean-clone run on a loaded machine hit that).
    poll(lambda: running.served_by_service() == REPLICAS, timeout=60, interval=0.5,
         message="the gateway Service never listed every replica as ready")
    return running


@pytest.fixture(scope="module")
def team(kubectl: Kubectl, installation: Installation, client_namespace: str) -> Iterator[str]:
    ns = namespace(kubectl, "e2e-fleet-team")
    grant_invoke(kubectl, installation, ns, client_namespace)
    CALLER["Authorization"] = f"Bearer {caller_token(kubectl, client_namespace)}"
    kubectl.apply(secret("creds", KEYS[0]), ns)
    yield ns
    kubectl.run("delete", "iep", "--all", "-n", ns, "--timeout=60s", check=False, timeout=70)
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def _ready(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    kubectl.wait_for_condition(f"iep/{name}", "Ready", ns, timeout=90)
    status = kubectl.get("iep", name, ns)["status"]
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def _inference_url(base: str, inference_id: str) -> str:
    return f"{base}/_inference/completion/{inference_id}"


def test_every_replica_serves_an_endpoint_and_the_status_counts_them(
    kubectl: Kubectl, fleet: Fleet, team: str,
):
    iid = f"{team}-a"
    kubectl.apply(endpoint("a", "creds", inference_id=iid), team)
    ready = _ready(kubectl, team, "a")
    assert f"on {REPLICAS}/{REPLICAS} gateway replicas" in ready["message"]
    limits_url = f"{fleet.emulator_url()}/_emulator/limits"
    _put(limits_url, ORG_LIMITS)  # far above what the module's tests spend
    try:
        for name, base in fleet.replicas().items():
            status, body = _post(_inference_url(base, iid), {"input": f"hello {name}"})
            assert status == 200, (name, body)
        # What the replicas learned, read by the operator from their metrics listeners
        # (their Service, through the NetworkPolicy) into the status, within a poll period.
        learned = poll(lambda: (kubectl.get("iep", "a", team).get("status") or {}).get(
            "organisation_limits"), timeout=45, interval=1,
            message="no organisation limits in the endpoint's status")
        assert learned == {"model_class": "sonnet-4", "requests_per_minute": 100_000,
                           "input_tokens_per_minute": 10_000_000,
                           "output_tokens_per_minute": 2_000_000, "used_percent": 0}
    finally:
        urllib.request.urlopen(urllib.request.Request(limits_url, method="DELETE"),
                               timeout=10).close()
    # The operator alone in its pod: the gateways are a Deployment of their own.
    # Not a pod of the previous module's release (same name) still in its
    # graceful termination: the uninstall does not wait for that.
    operator_pods = [p for p in pods(
        kubectl, fleet.installation.namespace,
        f"{fleet.installation.selector},app.kubernetes.io/component=operator")
        if not p["metadata"].get("deletionTimestamp")]
    assert [[c["name"] for c in p["spec"]["containers"]] for p in operator_pods] == [
        ["operator"]]


def test_a_rotated_key_and_a_deletion_reach_every_replica_within_seconds(
    kubectl: Kubectl, fleet: Fleet, team: str,
):
    iid = f"{team}-rotate"
    kubectl.apply(endpoint("rotate", "creds", inference_id=iid), team)
    _ready(kubectl, team, "rotate")
    replicas = fleet.replicas()
    results: Counter[int] = Counter()

    def key_used(name: str, base: str, round_: int) -> int | None:
        prompt = f"rotate {name} {round_}"
        status, _ = _post(_inference_url(base, iid), {"input": prompt})
        results[status] += 1
        calls = fleet.upstream_calls(prompt)
        return calls[-1]["key_index"] if calls else None

    for name, base in replicas.items():
        assert key_used(name, base, 0) == 0
    kubectl.apply(secret("creds", KEYS[1]), team)
    started, rounds = time.monotonic(), iter(range(1, 1000))
    switched: dict[str, float] = {}

    def all_switched() -> bool:
        round_ = next(rounds)
        for name, base in replicas.items():
            if name not in switched and key_used(name, base, round_) == 1:
                switched[name] = time.monotonic() - started
        return len(switched) == len(replicas)

    poll(all_switched, timeout=PROPAGATION, interval=0.1,
         message=f"the rotated key did not reach every replica within {PROPAGATION}s")
    assert set(results) == {200}, f"requests failed during the rotation: {results}"
    print(f"[e2e] rotation reached the replicas after {sorted(switched.values())}s", flush=True)

    kubectl.run("delete", "iep", "rotate", "-n", team, "--wait=false")
    started = time.monotonic()
    gone: dict[str, float] = {}

    def all_gone() -> bool:
        for name, base in replicas.items():
            # 403, not 404: a caller cannot tell a deleted id from one it may not call.
            if name not in gone and _post(_inference_url(base, iid), {"input": "x"})[0] == 403:
                gone[name] = time.monotonic() - started
        return len(gone) == len(replicas)

    poll(all_gone, timeout=PROPAGATION, interval=0.1,
         message=f"the deleted endpoint was still served after {PROPAGATION}s")
    print(f"[e2e] deletion reached the replicas after {sorted(gone.values())}s", flush=True)


def test_the_rate_limit_holds_across_the_fleet(kubectl: Kubectl, fleet: Fleet, team: str):
    iid = f"{team}-limited"
    kubectl.apply(endpoint("limited", "creds", inference_id=iid, rpm=RATE_LIMIT), team)
    _ready(kubectl, team, "limited")
    bases = list(fleet.replicas().values())
    assert len(bases) == REPLICAS
    for base in bases:  # each replica counts the whole fleet before the minute starts
        assert _get(f"{base}/healthz")["replicas"] == REPLICAS
    answered: Counter[str] = Counter()

    async def load(seconds: float) -> None:
        # Three callers per replica, always waiting: every replica has demand all minute.
        # A caller gives up after 2 s; the gateway drops its queued request with it.
        deadline = asyncio.get_running_loop().time() + seconds
        async with aiohttp.ClientSession() as session:
            async def caller(base: str, number: int) -> None:
                sent = 0
                while asyncio.get_running_loop().time() < deadline:
                    sent += 1
                    try:
                        async with session.post(
                                _inference_url(base, iid), headers=CALLER,
                                json={"input": f"limited {number} {sent}"},
                                timeout=aiohttp.ClientTimeout(total=2)) as response:
                            await response.read()
                            answered[f"{base} {response.status}"] += 1
                    except (TimeoutError, aiohttp.ClientError):
                        pass
            await asyncio.gather(*(caller(base, i * 10 + j) for i, base in enumerate(bases)
                                   for j in range(3)))

    asyncio.run(load(65.0))  # a little past the minute, so demand never stops inside it
    time.sleep(2)  # a call admitted at the very end reaches the emulator
    received = sorted(c["received_at"] for c in fleet.upstream_calls("limited "))
    # The most calls in any 60 s, as the upstream's own limiter would count them.
    busiest = max(bisect.bisect_left(received, at + 60.0) - i for i, at in enumerate(received))
    first_minute = bisect.bisect_left(received, received[0] + 60.0)
    print(f"[e2e] {RATE_LIMIT} rpm on {REPLICAS} replicas: the upstream saw {first_minute} "
          f"calls in the first minute, {busiest} in the busiest 60 s, {len(received)} in all; "
          f"answers {dict(answered)}", flush=True)
    # The limit plus the one token each replica's bucket starts with; 5 % below at worst.
    assert busiest <= RATE_LIMIT + REPLICAS
    assert first_minute >= RATE_LIMIT * 0.95


async def _pinned_client(url: str, seconds: float, answered: list[float],
                         failed: Counter[str]) -> None:
    """One connection, kept alive, one request after the other: what a pooled client gets
    through the Service, whose connection kube-proxy pins to one replica."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                     headers=CALLER) as session:
        for sent in range(1, 10_000):
            if loop.time() >= deadline:
                return
            try:
                async with session.post(url, json={"input": f"pinned {sent}"},
                                        timeout=aiohttp.ClientTimeout(total=30)) as response:
                    await response.read()
                    if response.status == 200:
                        answered.append(time.monotonic())
                    else:
                        failed[str(response.status)] += 1
            except (TimeoutError, aiohttp.ClientError) as error:
                failed[type(error).__name__] += 1


def test_a_pinned_client_gets_the_whole_limit_and_the_owners_death_costs_seconds(
    kubectl: Kubectl, fleet: Fleet, team: str, installation: Installation,
):
    """Peer admission on the real node (the chart's default): a keep-alive client on a
    replica that does not own the endpoint's group gets the whole limit, not rpm/3, and
    when the owner Pod is killed halfway the client loses a few seconds, no request."""
    kubectl.apply(secret("pinned-creds", KEYS[0]), team)
    iid = f"{team}-pinned"
    kubectl.apply(endpoint("pinned", "pinned-creds", inference_id=iid,
                           rpm=PINNED_RATE_LIMIT), team)
    _ready(kubectl, team, "pinned")
    by_member = {_get(f"{base}/healthz")["peer"]: (name, base)
                 for name, base in fleet.replicas().items()}
    assert len(by_member) == REPLICAS, by_member
    # The test computes the owner as every gateway does, to pin the client elsewhere: a
    # client pinned to the owner would be served by its own bucket, peers or not.
    group = owners.group_id(KEYS[0], MODEL, PINNED_RATE_LIMIT)
    owner_pod = by_member[owners.owner(group, by_member)][0]
    pinned_base = next(base for name, base in by_member.values() if name != owner_pod)
    answered: list[float] = []
    failed: Counter[str] = Counter()
    started = time.monotonic()

    async def run() -> float:
        client = asyncio.create_task(
            _pinned_client(_inference_url(pinned_base, iid), 60.0, answered, failed))
        await asyncio.sleep(30.0)
        killed = time.monotonic()
        # At once, no graceful stop: the owner's links break under the other replicas.
        await asyncio.to_thread(kubectl.run, "delete", "pod", owner_pod, "-n",
                                installation.namespace, "--grace-period=0", "--force")
        await client
        return killed

    killed = asyncio.run(run())
    time.sleep(2)  # a call admitted at the very end reaches the emulator
    before_kill = sum(1 for at in answered if at < killed)
    gaps = [b - a for a, b in zip([started, *answered], answered, strict=False)]
    received = sorted(c["received_at"] for c in fleet.upstream_calls("pinned "))
    busiest = max(bisect.bisect_left(received, at + 60.0) - i for i, at in enumerate(received))
    print(f"[e2e] one keep-alive client on a non-owner of {PINNED_RATE_LIMIT} rpm: "
          f"{before_kill} answers in the 30 s before the owner was killed, {len(answered)} "
          f"in 60 s, longest wait {max(gaps):.1f} s, failed {dict(failed)}; the upstream "
          f"saw {busiest} in its busiest 60 s", flush=True)
    assert not failed, failed
    assert before_kill >= PINNED_RATE_LIMIT * 0.95 / 2 - 1  # 95 % of 30 s, first token aside
    # At most 5 s below the limit for the owner's death: 5 answers of 60.
    assert len(answered) >= PINNED_RATE_LIMIT * 0.95 - 5
    assert max(gaps) <= 6.0
    # The limit, plus 1 per ownership change: the kill, and the replacement joining.
    assert busiest <= PINNED_RATE_LIMIT + 2
    poll(lambda: len(fleet.replicas()) == REPLICAS, timeout=120, interval=1,
         message="no replacement for the killed gateway turned Ready")


def test_the_gateways_serve_on_without_the_operator(
    kubectl: Kubectl, fleet: Fleet, team: str, installation: Installation,
):
    iid = f"{team}-a"
    _ready(kubectl, team, "a")  # from the first test
    ns = installation.namespace

    def versions() -> dict[str, str]:
        listed = json.loads(kubectl.run("get", "iep,secret", "-n", team, "-o", "json").stdout)
        config = json.loads(kubectl.run(
            "get", "secret", "-n", ns, "-l", "app.kubernetes.io/component=gateway-config",
            "-o", "json").stdout)
        return {f"{o['kind']}/{o['metadata']['namespace']}/{o['metadata']['name']}":
                o["metadata"]["resourceVersion"] for o in listed["items"] + config["items"]}

    before = versions()
    assert any("gateway-config" in name for name in before)
    kubectl.run("scale", f"deployment/{installation.deployment}", "-n", ns, "--replicas=0")
    operator = f"{installation.selector},app.kubernetes.io/component=operator"
    poll(lambda: not pods(kubectl, ns, operator), timeout=60, interval=0.5,
         message="the operator Pod did not go")
    old = set(fleet.replicas())
    victim = sorted(old)[0]
    started = time.monotonic()
    kubectl.run("delete", "pod", victim, "-n", ns, "--wait=false")
    poll(lambda: len(set(fleet.replicas()) - old) == 1 and victim not in fleet.replicas(),
         timeout=120, interval=0.5, message="no replacement gateway turned Ready")
    elapsed("a replacement gateway Ready without the operator", started)
    (new,) = set(fleet.replicas()) - old
    status, answer = _post(_inference_url(fleet.replicas()[new], iid), {"input": "without"})
    assert status == 200, answer

    kubectl.run("scale", f"deployment/{installation.deployment}", "-n", ns, "--replicas=1")
    poll(lambda: any(all_ready(p) for p in pods(kubectl, ns, operator)), timeout=120,
         interval=0.5, message="the operator did not come back")
    (pod,) = pods(kubectl, ns, operator)
    poll(lambda: "first full sync done" in logs(kubectl, ns, pod["metadata"]["name"]),
         timeout=60, interval=1, message="the operator never finished its first full sync")
    time.sleep(5)  # what it would change, it changes at once
    assert versions() == before


def test_a_rolling_upgrade_fails_no_request(
    cluster, kubectl: Kubectl, fleet: Fleet, team: str, installation: Installation,
    client_namespace: str, project_image: tuple[str, str | None],
):
    iid = f"{team}-a"
    url = f"{installation.public_url}/_inference/completion/{iid}"
    request = completion(url)
    loop = start_client(kubectl, client_namespace, project_image[0], "loop", json.dumps({
        "url": request["url"], "body": request["body"], "interval": 0.1,
        "count": 1500, "seconds": 150}))

    def outcomes() -> list:
        return parse_loop(logs(kubectl, client_namespace, loop))

    poll(lambda: [r.outcome for r in outcomes()].count("200") >= 10, timeout=90, interval=0.5,
         message="the client loop never got a completion before the upgrade")
    before = {p["metadata"]["name"] for p in fleet.gateway_pods()}
    started = time.monotonic()
    upgrade = helm(cluster, "upgrade", RELEASE, str(checkout_path("charts", "inference-operator")),
                   "--namespace", installation.namespace, "--reuse-values",
                   "--set-string", f"podAnnotations.e2e/upgraded-at={int(time.time())}",
                   "--wait", "--timeout=300s", timeout=330)
    assert upgrade.returncode == 0, upgrade.stderr
    elapsed("helm upgrade --wait (fleet)", started)
    # Until the last old replica has drained and gone, and a few seconds more.
    poll(lambda: not before & {p["metadata"]["name"] for p in pods(
        kubectl, installation.namespace, fleet.selector)}, timeout=90, interval=0.5,
         message="the old gateway Pods did not go")
    gone_at = time.time()
    poll(lambda: len([r for r in outcomes() if r.at > gone_at]) >= 30, timeout=60,
         interval=0.5, message="the client loop stopped")
    disruption = Disruption.of(outcomes())
    kubectl.run("delete", "pod", "-n", client_namespace, loop, "--timeout=60s", timeout=70)
    print(f"[e2e] fleet upgrade disruption ({datetime.now(UTC):%Y-%m-%d}, {REPLICAS} "
          f"replicas, a completion every 100 ms at most): {disruption}", flush=True)
    assert disruption.failed == 0, disruption
