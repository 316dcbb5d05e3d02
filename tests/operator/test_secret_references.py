"""A Secret changed or deleted while no endpoint references it is seen as it is now when
an endpoint references it again: the operator's copy never outlives the watch's view."""

from __future__ import annotations

from operator_support import (
    KEY,
    ROTATED_KEY,
    complete,
    condition,
    emulator_requests,
    endpoint,
    secret,
    wait_caught_up,
    wait_reason,
)


def _key_used(stack, inference_id: str) -> int:
    """The emulator's index of the key the gateway sent for one completion (0: KEY)."""
    status, answer = complete(stack, inference_id)
    assert status == 200, answer
    return emulator_requests(stack)[-1]["key_index"]


def test_a_secret_deleted_while_unreferenced_is_not_served_when_referenced_again(
    stack, kubectl, namespace
):
    iid = f"{namespace}-back"
    kubectl.apply([secret("first", KEY), secret("second", ROTATED_KEY),
                   endpoint("back", "first", inference_id=iid)], namespace)
    wait_caught_up(kubectl, namespace, "back")
    kubectl.apply(endpoint("back", "second", inference_id=iid), namespace)
    wait_caught_up(kubectl, namespace, "back")
    assert _key_used(stack, iid) == 1

    kubectl.run("delete", "secret", "first", "-n", namespace)  # revoked, unreferenced
    kubectl.apply(endpoint("back", "first", inference_id=iid), namespace)

    obj = wait_reason(kubectl, namespace, "back", "SecretNotFound")
    assert "'first'" in condition(obj)["message"]
    assert complete(stack, iid)[0] == 404


def test_a_secret_rotated_while_unreferenced_serves_its_new_key(stack, kubectl, namespace):
    iid = f"{namespace}-rot-away"
    kubectl.apply([secret("first", KEY), secret("second", KEY),
                   endpoint("away", "first", inference_id=iid)], namespace)
    wait_caught_up(kubectl, namespace, "away")
    kubectl.apply(endpoint("away", "second", inference_id=iid), namespace)
    wait_caught_up(kubectl, namespace, "away")

    kubectl.apply(secret("first", ROTATED_KEY), namespace)  # rotated, unreferenced
    kubectl.apply(endpoint("away", "first", inference_id=iid), namespace)
    wait_caught_up(kubectl, namespace, "away")

    assert _key_used(stack, iid) == 1
