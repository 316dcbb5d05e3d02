"""Crashes on either side of the configuration Secrets: nothing lost, no resource
touched, and the gateway serves on without the operator."""

from __future__ import annotations

import json
import time

from inference_devkit.waiting import poll
from operator_support import complete
from resources import endpoint, secret


def _resource_versions(kubectl, namespace: str) -> dict[str, str]:
    listed = json.loads(kubectl.run("get", "iep", "-n", namespace, "-o", "json").stdout)
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in listed["items"]}


def _apply(kubectl, namespace: str, names: list[str]) -> None:
    """The Secret and one endpoint per name, served at ``<namespace>-<name>``."""
    kubectl.apply([secret("anthropic")] + [
        endpoint(n, inference_id=f"{namespace}-{n}") for n in names], namespace)


def _ready(kubectl, namespace: str, names: list[str]) -> dict[str, str]:
    """Applied and Ready: their resource versions."""
    _apply(kubectl, namespace, names)
    for name in names:
        kubectl.wait_for_condition(f"iep/{name}", "Ready", namespace)
    return _resource_versions(kubectl, namespace)


def test_a_killed_gateway_is_refilled_within_seconds_without_touching_resources(
    stack, kubectl, namespace
):
    names = [f"g{i}" for i in range(5)]
    before = _ready(kubectl, namespace, names)

    gateway = stack.services["gateway"]
    gateway.kill()  # SIGKILL: the new gateway reads everything from the Secrets
    restarted_at = time.monotonic()
    gateway.start()

    def all_served() -> bool:
        return all(complete(stack, f"{namespace}-{n}")[0] == 200 for n in names)

    poll(all_served, timeout=10, interval=0.2, message="endpoints not served again")
    took = time.monotonic() - restarted_at
    assert took < 10
    assert _resource_versions(kubectl, namespace) == before
    print(f"gateway refilled {len(names)} endpoints {took:.2f}s after restart")


def test_an_operator_killed_mid_reconcile_converges_after_restart(
    stack, kubectl, namespace, control_plane
):
    operator = stack.services["operator"]
    names = [f"o{i}" for i in range(20)]
    _apply(kubectl, namespace, names)
    time.sleep(0.3)  # some reconciled, some not
    operator.kill()
    operator.start()

    for name in names:
        kubectl.wait_for_condition(f"iep/{name}", "Ready", namespace, timeout=30)
    for name in names:
        assert complete(stack, f"{namespace}-{name}")[0] == 200

    events = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)
    serving = {}
    for event in events["items"]:
        if event["reason"] == "Serving":
            name = event["involvedObject"]["name"]
            serving[name] = serving.get(name, 0) + 1
    assert set(serving) == set(names)
    # At most one per operator life: the status is read back, so no repeat after restart
    # for an object whose Ready was already written.
    assert max(serving.values()) <= 2, serving


def test_a_gateway_restarted_while_the_operator_is_down_serves_everything(
    stack, kubectl, namespace
):
    names = [f"d{i}" for i in range(3)]
    before = _ready(kubectl, namespace, names)
    operator, gateway = stack.services["operator"], stack.services["gateway"]
    syncs = operator.log_text().count("first full sync done")
    operator.stop()
    try:
        gateway.kill()
        gateway.start()
        poll(lambda: all(complete(stack, f"{namespace}-{n}")[0] == 200 for n in names),
             timeout=10, interval=0.2, message="not served without the operator")
    finally:
        operator.start()
    poll(lambda: operator.log_text().count("first full sync done") > syncs, timeout=30,
         message="the operator did not come back")
    assert _resource_versions(kubectl, namespace) == before


def test_deleting_while_the_gateway_is_down_does_not_hang(stack, kubectl, namespace):
    iid = f"{namespace}-orphan"
    kubectl.apply([secret("anthropic"), endpoint("orphan", inference_id=iid)], namespace)
    kubectl.wait_for_condition("iep/orphan", "Ready", namespace)
    poll(lambda: complete(stack, iid)[0] == 200, timeout=10, message="never served")

    gateway = stack.services["gateway"]
    gateway.kill()
    try:
        kubectl.run("delete", "iep", "orphan", "-n", namespace, "--timeout=15s")
    finally:
        gateway.start()

    # It reads the configuration the operator wrote meanwhile: without the orphan.
    poll(lambda: complete(stack, iid)[0] == 404, timeout=10,
         message="the deleted endpoint is still served after the gateway's return")
