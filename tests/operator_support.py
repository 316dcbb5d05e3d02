"""Helpers for the tests that drive the session's ``stack`` (tests/operator,
tests/reliability): status probes, gateway and emulator calls, restarts with
other flags, and the search for leaked keys."""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Service, Stack
from inference_devkit.waiting import poll
from resources import ALL_KEYS, KEY, REJECTED_KEY, ROTATED_KEY, endpoint, secret


def condition(obj: dict[str, Any], kind: str = "Ready") -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or ():
        if item["type"] == kind:
            return item
    return {}


def wait_reason(
    kubectl: Kubectl, namespace: str, name: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = kubectl.get("iep", name, namespace)
        return obj if condition(obj).get("reason") == reason else None

    return poll(probe, timeout=timeout, interval=0.2, message=f"{name} never reached {reason}")


def http(method: str, url: str, body: Any = None, token: str | None = None,
         timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def complete(stack: Stack, inference_id: str, text: str = "hello") -> tuple[int, Any]:
    return http("POST", f"{stack.gateway_url}/_inference/completion/{inference_id}",
                {"input": text})


def emulator_requests(stack: Stack) -> list[dict[str, Any]]:
    return http("GET", f"{stack.emulator_url}/_emulator/requests")[1]


def caught_up(obj: dict[str, Any]) -> bool:
    """Ready=True for the endpoint's current generation, not for an earlier spec."""
    current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
    return current and condition(obj).get("status") == "True"


def ready_now(kubectl: Kubectl, namespace: str, name: str) -> bool:
    """The endpoint exists and is caught up, read once."""
    found = kubectl.run("get", "iep", name, "-n", namespace, "-o", "json", check=False)
    return found.returncode == 0 and caught_up(json.loads(found.stdout))


def wait_caught_up(
    kubectl: Kubectl, namespace: str, name: str, timeout: float = 30
) -> dict[str, Any]:
    """Ready=True for the current generation: a ``kubectl wait`` on Ready alone would pass
    on the status written for the previous spec."""
    def probe() -> dict[str, Any] | None:
        obj = kubectl.get("iep", name, namespace)
        return obj if caught_up(obj) else None

    return poll(probe, timeout=timeout, interval=0.2,
                message=f"{name} not Ready at its current generation")


def events(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]


def event_counts(kubectl: Kubectl, namespace: str) -> collections.Counter[tuple[str, str]]:
    """How many Events each (object name, reason) got."""
    return collections.Counter(
        (e["involvedObject"]["name"], e["reason"]) for e in events(kubectl, namespace))


@contextmanager
def restarted_with(service: Service, *extra: str,
                   env: Mapping[str, str | None] | None = None) -> Iterator[Service]:
    """Run ``service`` with extra flags (later flags win in argparse) and environment,
    then put the original back, so the session's other tests see the stack they expect."""
    original, original_env = list(service.argv), dict(service.env)
    service.stop()
    service.argv = [*original, *extra]
    service.env.update(env or {})
    service.start()
    try:
        yield service
    finally:
        service.stop()
        service.argv, service.env = original, original_env
        service.start()


def key_forms(key: str) -> dict[str, str]:
    """Every form a key could leak in: as is, as a Secret's ``data`` holds it, and as a
    fingerprint (the status may carry neither the key nor a hash of it)."""
    return {
        "literal": key,
        "base64": base64.b64encode(key.encode()).decode(),
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
    }


def find_leaks(
    outputs: Mapping[str, str], keys: Iterable[str] = ALL_KEYS
) -> list[tuple[str, str, str]]:
    """(where, key, form) for every output that holds any form of any key."""
    return [(where, key, form) for where, text in outputs.items() for key in keys
            for form, value in key_forms(key).items() if value in text]


def observable_outputs(stack: Stack, kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """Everything a user, an admin or a log collector can read, by where it came from."""
    return {
        "endpoints (status, annotations, managedFields)": kubectl.run(
            "get", "iep", "-A", "-o", "json", "--show-managed-fields").stdout,
        "events": kubectl.run("get", "events", "-A", "-o", "json").stdout,
        "describe": kubectl.run("describe", "iep", "-n", namespace).stdout,
        "operator log": stack.services["operator"].log_text(),
        "gateway log": stack.services["gateway"].log_text(),
        "gateway GET _inference": json.dumps(
            http("GET", f"{stack.gateway_url}/_inference/_all")[1]),
        "gateway metrics": urllib.request.urlopen(stack.gateway_metrics_url).read().decode(),
        "gateway healthz": urllib.request.urlopen(f"{stack.gateway_url}/healthz").read().decode(),
    }


def run_main_flows(stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    """Every main flow once, with the distinctive keys, for the leak searches: serve,
    rotate, reject, conflict, delete, and a Secret deleted, recreated without the data
    key, then fixed."""
    clean = f"{namespace}-clean"
    # Ids are unique across namespaces: both hygiene tests run these flows, and the first
    # one's namespace may still be terminating (a control-plane restart delays that).
    kubectl.apply([secret("anthropic", KEY), secret("bad", REJECTED_KEY),
                   endpoint("clean", inference_id=clean),
                   endpoint("rejected", "bad", inference_id=f"{namespace}-rejected")],
                  namespace)
    kubectl.wait_for_condition("iep/clean", "Ready", namespace)
    assert complete(stack, clean)[0] == 200
    kubectl.apply(secret("anthropic", ROTATED_KEY), namespace)
    wait_reason(kubectl, namespace, "rejected", "UpstreamAuthFailed")
    kubectl.apply(endpoint("twin", inference_id=clean), namespace)
    wait_reason(kubectl, namespace, "twin", "InferenceIdConflict")
    kubectl.run("delete", "iep", "twin", "-n", namespace, "--timeout=20s")

    kubectl.run("delete", "secret", "anthropic", "-n", namespace)
    wait_reason(kubectl, namespace, "clean", "SecretNotFound")
    kubectl.apply(secret("anthropic", KEY, data_key="token"), namespace)
    wait_reason(kubectl, namespace, "clean", "SecretKeyMissing")
    kubectl.apply(secret("anthropic", KEY), namespace)
    wait_reason(kubectl, namespace, "clean", "Serving")
    poll(lambda: complete(stack, clean)[0] == 200, timeout=10, message="not served again")


def assert_outputs_were_read(outputs: Mapping[str, str], namespace: str) -> None:
    """The searches looked at real content, not empty strings or error pages."""
    assert f"{namespace}-clean" in outputs["gateway GET _inference"]
    assert "UpstreamAuthFailed" in outputs["events"]
    assert "SecretNotFound" in outputs["events"]
    assert "managedFields" in outputs["endpoints (status, annotations, managedFields)"]
    assert "Serving" in outputs["operator log"]


def emulator_requests_for(stack: Stack, model: str, after_seq: int = 0) -> list[dict[str, Any]]:
    """The emulator's log for one model (completions and Models API checks alike): a
    model id of a test's own keeps other tests' traffic out of the picture."""
    return [r for r in emulator_requests(stack) if r["seq"] > after_seq and (
        (r.get("body") or {}).get("model") == model or r["path"] == f"/v1/models/{model}")]


def assert_stopped(services: Iterable[Service]) -> None:
    """Nothing of a fixture is left running: stop signalled each whole process group."""
    for service in services:
        assert not service.running(), f"{service.name} still running"
        if service.popen is not None:
            try:
                os.killpg(service.pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"a process of {service.name}'s group is still running")


@contextmanager
def running_stack(work_dir: Path, kubeconfig: Path) -> Iterator[Stack]:
    """The operator against the control plane, a real gateway and the emulator, each a
    separate process started the way a user starts it; stopped on leaving."""
    stack = Stack(work_dir, api_keys=(KEY, ROTATED_KEY), kubeconfig=kubeconfig)
    try:
        stack.start(stack.emulator())
        stack.start(stack.gateway())
        stack.start(stack.operator())
        yield stack
    finally:
        stack.stop()
