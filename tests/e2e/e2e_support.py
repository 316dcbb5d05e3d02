"""What the end-to-end tests do the way a user does it: helm and kubectl against the
cluster, Pods in restricted namespaces running the project image as clients."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import (
    AUDIENCE,
    Installation,
    elapsed,
    pods,
    restricted_container,
)
from inference_devkit.waiting import poll

CLIENT_PROGRAM = (Path(__file__).parent / "client_pod.py").read_text()
TOKEN_DIR = "/var/run/secrets/inference-operator"


def caller_facing_service_accounts(kubectl: Kubectl, installation: Installation) -> set[str]:
    """The ServiceAccounts of the running Pods behind the Service callers use: the
    identities the container that serves callers holds."""
    service = kubectl.get("service", installation.service, installation.namespace)
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    serving = pods(kubectl, installation.namespace, selector)
    assert serving, f"no Pod behind {installation.service}"
    return {pod["spec"]["serviceAccountName"] for pod in serving}


def can_i(kubectl: Kubectl, namespace: str, account: str, *what: str) -> str:
    """``kubectl auth can-i WHAT --as`` the ServiceAccount: "yes" or "no"."""
    answer = kubectl.run("auth", "can-i", *what,
                         f"--as=system:serviceaccount:{namespace}:{account}", check=False)
    return answer.stdout.strip()


def resource_versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """Every InferenceEndpoint and Secret of a namespace: kind/name -> resourceVersion."""
    listed = json.loads(kubectl.run("get", "iep,secret", "-n", namespace, "-o", "json").stdout)
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for o in listed["items"]}


def start_client(kubectl: Kubectl, namespace: str, image: str, *args: str,
                 service_account: str | None = "default") -> str:
    """A Pod that runs client_pod.py with ``args``; returns its name. Its ServiceAccount's
    projected token (audience inference-operator, and no other token) goes with every
    call, as an application sends it; ``service_account=None``: no token at all."""
    name = f"client-{uuid.uuid4().hex[:6]}"
    container = restricted_container("client", image, ["-c", CLIENT_PROGRAM, *args],
                                     command=["python"])
    spec: dict[str, Any] = {"restartPolicy": "Never", "automountServiceAccountToken": False,
                            "enableServiceLinks": False, "containers": [container]}
    if service_account is not None:
        spec["serviceAccountName"] = service_account
        spec["volumes"] = [{"name": "inference-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": AUDIENCE, "expirationSeconds": 3600,
                                     "path": "token"}}]}}]
        container["volumeMounts"] = [{"name": "inference-token", "mountPath": TOKEN_DIR,
                                      "readOnly": True}]
        container["env"] = [{"name": "TOKEN_FILE", "value": f"{TOKEN_DIR}/token"}]
    kubectl.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": spec}, namespace)
    return name


def phase(kubectl: Kubectl, namespace: str, pod: str) -> str:
    return kubectl.get("pod", pod, namespace).get("status", {}).get("phase", "")


def logs(kubectl: Kubectl, namespace: str, pod: str) -> str:
    return kubectl.run("logs", "-n", namespace, pod, check=False).stdout


def finish_client(kubectl: Kubectl, namespace: str, pod: str, timeout: float = 120) -> str:
    """Wait for the client Pod to end; its output (it must have succeeded)."""
    ended = poll(lambda: phase(kubectl, namespace, pod) in ("Succeeded", "Failed"),
                 timeout=timeout, interval=0.5, message=f"client Pod {pod} did not finish")
    assert ended
    output = logs(kubectl, namespace, pod)
    final = phase(kubectl, namespace, pod)
    kubectl.run("delete", "pod", "-n", namespace, pod, "--wait=false", check=False)
    assert final == "Succeeded", f"client Pod {pod} ended {final}:\n{output}"
    return output


def call_from_pod(kubectl: Kubectl, namespace: str, image: str,
                  requests: list[dict[str, Any]],
                  service_account: str | None = "default") -> list[dict[str, Any]]:
    """Each request ({"method", "url", "body"}) from one client Pod: [{"status", "body",
    "www_authenticate"}]."""
    started = time.monotonic()
    pod = start_client(kubectl, namespace, image, "calls", json.dumps(requests),
                       service_account=service_account)
    output = finish_client(kubectl, namespace, pod)
    elapsed(f"client Pod with {len(requests)} call(s)", started)
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def assert_first_endpoint_answers(kubectl: Kubectl, installation: Installation, team: Any,
                                  client_namespace: str, image: str) -> None:
    """The team's first endpoint, at the URL its status gives (the installation's Service),
    answers a completion to a Pod in ``client_namespace``."""
    name, inference_id = next(iter(team.endpoints.items()))
    url = kubectl.get("iep", name, team.namespace)["status"]["url"]
    assert url == f"{installation.public_url}/_inference/completion/{inference_id}"
    (answer,) = call_from_pod(kubectl, client_namespace, image, [completion(url)])
    assert answer["status"] == 200, answer
    assert json.loads(answer["body"])["completion"][0]["result"].strip(), answer


def completion(url: str, stream: bool = False) -> dict[str, Any]:
    return {"method": "POST", "url": url + ("/_stream" if stream else ""),
            "body": {"input": "What is Elastic?"}}


@dataclass(frozen=True)
class Request:
    at: float  # unix time it was sent
    outcome: str  # HTTP status or error:<kind>
    millis: float


@dataclass(frozen=True)
class Disruption:
    total: int
    failed: int
    window: float  # first failure to the first success after the last failure, seconds
    kinds: dict[str, int]
    median_millis: float  # of the successful requests
    span: float  # first request to last, seconds

    @classmethod
    def of(cls, requests: list[Request]) -> Disruption:
        failures = [i for i, r in enumerate(requests) if r.outcome != "200"]
        kinds = Counter(requests[i].outcome for i in failures)
        ok = [r.millis for r in requests if r.outcome == "200"]
        window = 0.0
        if failures:
            back = failures[-1] + 1
            end = requests[back].at if back < len(requests) else requests[-1].at
            window = end - requests[failures[0]].at
        return cls(len(requests), len(failures), window, dict(kinds),
                   median(ok) if ok else 0, requests[-1].at - requests[0].at)

    def __str__(self) -> str:
        return (f"{self.failed} of {self.total} requests (sent over {self.span:.1f}s) failed "
                f"over {self.window:.1f}s ({self.kinds}); successful requests took "
                f"{self.median_millis:.0f} ms (median)")


def parse_loop(output: str) -> list[Request]:
    """client_pod.py loop's lines."""
    parsed = []
    for line in output.splitlines():
        stamp, outcome, millis = line.split()
        parsed.append(Request(float(stamp), outcome, float(millis)))
    return parsed
