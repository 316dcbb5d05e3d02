"""A Secret deleted while its endpoint serves traffic: the endpoint says so, the old key is
not used any more, and recreating the Secret brings the endpoint back untouched."""

from __future__ import annotations

import threading

from inference_devkit.waiting import poll
from operator_support import (
    complete,
    condition,
    emulator_requests,
    emulator_requests_for,
    wait_caught_up,
    wait_reason,
)
from resources import KEY, ROTATED_KEY, endpoint, secret


def test_a_deleted_secret_withdraws_its_key_and_a_recreated_one_serves_again(
    stack, kubectl, namespace
):
    iid, model = f"{namespace}-sec", f"claude-secret-{namespace}"
    kubectl.apply([secret("anthropic", KEY), endpoint("sec", inference_id=iid, model=model)],
                  namespace)
    kubectl.wait_for_condition("iep/sec", "Ready", namespace)
    generation = kubectl.get("iep", "sec", namespace)["metadata"]["generation"]

    # Traffic throughout: what clients see while the Secret goes and comes back.
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            statuses.append(complete(stack, iid)[0])

    worker = threading.Thread(target=load)
    worker.start()
    try:
        poll(lambda: 200 in statuses, timeout=10, message="no completion before the delete")
        kubectl.run("delete", "secret", "anthropic", "-n", namespace)

        obj = wait_reason(kubectl, namespace, "sec", "SecretNotFound")
        assert condition(obj)["status"] == "False"
        assert condition(obj, "Reconciling")["status"] == "True"  # waits, by itself
        assert condition(obj, "Stalled")["status"] == "False"
        assert "anthropic" in condition(obj)["message"]
        # The endpoint left the gateway before the status said so: from here on, every
        # request is refused and none reaches the upstream with the deleted key.
        marker = max(r["seq"] for r in emulator_requests(stack))
        refused_from = len(statuses)
        poll(lambda: len(statuses) > refused_from + 5, timeout=20,
             message="the load stopped")
        assert set(statuses[refused_from:]) == {404}
        status, answer = complete(stack, iid)
        assert status == 404 and answer["error"]["type"] == "resource_not_found_exception"
        assert emulator_requests_for(stack, model, marker) == []

        kubectl.apply(secret("anthropic", ROTATED_KEY), namespace)
        obj = wait_caught_up(kubectl, namespace, "sec", timeout=30)
        poll(lambda: statuses[-1] == 200, timeout=10, message="not served again")
    finally:
        stop.set()
        worker.join(30)

    # Never an error other than "not found" for clients, at any point.
    assert set(statuses) == {200, 404}
    # Back with the new Secret's key, and nothing else: no request used the old key.
    uses = emulator_requests_for(stack, model, marker)
    assert uses and {r["key_index"] for r in uses} == {1}
    assert condition(obj)["reason"] == "Serving"
    assert obj["metadata"]["generation"] == generation  # the resource was not touched
