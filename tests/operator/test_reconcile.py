"""kubectl apply → a Ready endpoint that answers through the gateway, and the status
contract on the way there."""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from inference_devkit.waiting import poll
from operator_support import complete, condition, emulator_requests, wait_caught_up, wait_reason
from resources import KEY, REJECTED_KEY, ROTATED_KEY, endpoint, secret

REPO = Path(__file__).resolve().parents[2]


def test_apply_secret_and_endpoint_serves_completions(stack, kubectl, namespace):
    kubectl.apply([secret("anthropic"), endpoint("chat", inference_id=f"{namespace}-chat")],
                  namespace)

    kubectl.wait_for_condition("iep/chat", "Ready", namespace, timeout=30)

    status, answer = complete(stack, f"{namespace}-chat", "Say hi")
    assert status == 200, answer
    assert answer["completion"][0]["result"]
    obj = kubectl.get("iep", "chat", namespace)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["inference_id"] == f"{namespace}-chat"
    assert obj["status"]["url"] == f"{stack.gateway_url}/_inference/completion/{namespace}-chat"
    assert obj["status"]["secret_resource_version"]
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]} == {
        "Ready": "True", "Reconciling": "False", "Stalled": "False"}
    table = kubectl.run("get", "iep", "-n", namespace).stdout
    assert table.split("\n")[1].split()[:3] == ["chat", "True", "Serving"]


def test_a_chat_completion_endpoint_becomes_ready_and_streams_a_chat(stack, kubectl, namespace):
    iid = f"{namespace}-assistant"
    kubectl.apply([secret("anthropic"),
                   endpoint("assistant", inference_id=iid, task_type="chat_completion")],
                  namespace)

    kubectl.wait_for_condition("iep/assistant", "Ready", namespace, timeout=30)

    obj = kubectl.get("iep", "assistant", namespace)
    url = f"{stack.gateway_url}/_inference/chat_completion/{iid}"
    assert obj["status"]["url"] == url
    table = kubectl.run("get", "iep", "assistant", "-n", namespace).stdout.split("\n")
    assert table[0].split()[:4] == ["NAME", "READY", "REASON", "TASK-TYPE"]
    assert table[1].split()[:4] == ["assistant", "True", "Serving", "chat_completion"]
    request = urllib.request.Request(url + "/_stream", method="POST", data=json.dumps(
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Say hi"}]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        lines = response.read().decode().splitlines()
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.endswith("You said: Say hi")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    sent = emulator_requests(stack)[-1]["body"]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}] and sent["max_tokens"] == 64


def test_changed_max_tokens_reaches_the_emulator(stack, kubectl, namespace):
    iid = f"{namespace}-gen"
    kubectl.apply([secret("anthropic"), endpoint("gen", inference_id=iid, max_tokens=64)],
                  namespace)
    kubectl.wait_for_condition("iep/gen", "Ready", namespace)
    first = kubectl.get("iep", "gen", namespace)

    kubectl.apply(endpoint("gen", inference_id=iid, max_tokens=321), namespace)

    def caught_up():
        obj = kubectl.get("iep", "gen", namespace)
        return obj["metadata"]["generation"] == obj["status"].get("observedGeneration") and obj

    obj = poll(caught_up, timeout=20, message="observedGeneration did not catch up")
    assert obj["metadata"]["generation"] > first["metadata"]["generation"]
    assert complete(stack, iid)[0] == 200
    assert emulator_requests(stack)[-1]["body"]["max_tokens"] == 321


def test_the_operator_adds_its_finalizer_and_no_annotation(stack, kubectl, namespace):
    """Its writes to a resource are the finalizer and the status; kopf's diff-base and
    marker annotations were one more patch after each create and each spec change."""
    kubectl.apply([secret("anthropic"), endpoint("meta", inference_id=f"{namespace}-meta")],
                  namespace)
    kubectl.wait_for_condition("iep/meta", "Ready", namespace)
    kubectl.apply(endpoint("meta", inference_id=f"{namespace}-meta", max_tokens=99), namespace)
    wait_caught_up(kubectl, namespace, "meta")

    metadata = kubectl.get("iep", "meta", namespace)["metadata"]
    assert metadata["finalizers"] == ["inference-operator.dev/finalizer"]
    ours = [k for k in metadata.get("annotations") or {} if "inference-operator.dev" in k]
    assert ours == []


def test_endpoint_before_its_secret_waits_then_serves(stack, kubectl, namespace):
    iid = f"{namespace}-early"
    kubectl.apply(endpoint("early", "late-secret", inference_id=iid), namespace)

    obj = wait_reason(kubectl, namespace, "early", "SecretNotFound")
    assert condition(obj)["status"] == "False"
    assert condition(obj, "Stalled")["status"] == "False"
    assert condition(obj, "Reconciling")["status"] == "True"
    assert "late-secret" in condition(obj)["message"]
    assert complete(stack, iid)[0] == 404

    resource_version = obj["metadata"]["resourceVersion"]
    kubectl.apply(secret("late-secret"), namespace)

    kubectl.wait_for_condition("iep/early", "Ready", namespace, timeout=10)
    assert complete(stack, iid)[0] == 200
    spec_after = kubectl.get("iep", "early", namespace)
    assert spec_after["metadata"]["generation"] == obj["metadata"]["generation"]
    assert spec_after["metadata"]["resourceVersion"] != resource_version  # status only


def test_a_missing_key_in_the_secret_is_reported(stack, kubectl, namespace):
    kubectl.apply([secret("wrong-key", data_key="token"), endpoint("nokey", "wrong-key")],
                  namespace)
    obj = wait_reason(kubectl, namespace, "nokey", "SecretKeyMissing")
    assert "'api_key'" in condition(obj)["message"] and "token" in condition(obj)["message"]


def test_rotating_the_key_drops_no_request(stack, kubectl, namespace):
    iid = f"{namespace}-rot"
    kubectl.apply([secret("anthropic", KEY), endpoint("rot", inference_id=iid)], namespace)
    kubectl.wait_for_condition("iep/rot", "Ready", namespace)

    failures: list[tuple[int, object]] = []
    sent = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal sent
        while not stop.is_set():
            status, answer = complete(stack, iid)
            sent += 1
            if status != 200:
                failures.append((status, answer))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        rotated_at = time.monotonic()
        kubectl.apply(secret("anthropic", ROTATED_KEY), namespace)

        def new_key_seen() -> bool:
            return any(r["key_index"] == 1 and r["path"] == "/v1/messages"
                       for r in emulator_requests(stack)[-20:])

        poll(new_key_seen, timeout=5, message="the emulator never saw the rotated key")
        took = time.monotonic() - rotated_at
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(30)
    assert failures == []
    assert sent > 10
    assert took < 5


@pytest.mark.parametrize("change", ["deleted", "rotated"])
def test_a_secret_changed_while_unreferenced_is_read_afresh_when_referenced_again(
    stack, kubectl, namespace, change
):
    """The operator's copy of a Secret never outlives the watch's view of it: a key
    revoked or rotated while no endpoint used it never comes back."""
    iid = f"{namespace}-back"
    kubectl.apply([secret("first", KEY), secret("second", KEY),
                   endpoint("back", "first", inference_id=iid)], namespace)
    wait_caught_up(kubectl, namespace, "back")
    kubectl.apply(endpoint("back", "second", inference_id=iid), namespace)
    wait_caught_up(kubectl, namespace, "back")

    if change == "deleted":
        kubectl.run("delete", "secret", "first", "-n", namespace)
    else:
        kubectl.apply(secret("first", ROTATED_KEY), namespace)
    kubectl.apply(endpoint("back", "first", inference_id=iid), namespace)

    if change == "deleted":
        obj = wait_reason(kubectl, namespace, "back", "SecretNotFound")
        assert "'first'" in condition(obj)["message"]
        assert complete(stack, iid)[0] == 404
    else:
        wait_caught_up(kubectl, namespace, "back")
        assert complete(stack, iid)[0] == 200
        assert emulator_requests(stack)[-1]["key_index"] == 1  # ROTATED_KEY


def test_rejected_key_stalls_with_upstream_auth_failed(stack, kubectl, namespace):
    kubectl.apply([secret("bad", REJECTED_KEY), endpoint("badkey", "bad")], namespace)
    obj = wait_reason(kubectl, namespace, "badkey", "UpstreamAuthFailed")
    assert condition(obj, "Stalled")["status"] == "True"
    assert condition(obj)["status"] == "False"
    assert complete(stack, "badkey")[0] == 404


def test_unknown_model_stalls_with_model_not_found(stack, kubectl, namespace):
    kubectl.apply([secret("anthropic"), endpoint("nomodel", model="gpt-unknown-1")], namespace)
    obj = wait_reason(kubectl, namespace, "nomodel", "ModelNotFound")
    assert condition(obj, "Stalled")["status"] == "True"
    assert "gpt-unknown-1" in condition(obj)["message"]


def test_delete_removes_the_endpoint_from_the_gateway(stack, kubectl, namespace):
    iid = f"{namespace}-del"
    kubectl.apply([secret("anthropic"), endpoint("del", inference_id=iid)], namespace)
    kubectl.wait_for_condition("iep/del", "Ready", namespace)
    assert "inference-operator.dev/finalizer" in kubectl.get("iep", "del", namespace)[
        "metadata"]["finalizers"]

    kubectl.run("delete", "iep", "del", "-n", namespace, "--timeout=20s")

    assert complete(stack, iid)[0] == 404
    gone = kubectl.run("get", "iep", "del", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_the_older_claim_on_an_inference_id_wins_and_the_other_takes_over(
    stack, kubectl, namespace
):
    shared = f"{namespace}-shared"
    kubectl.apply([secret("anthropic"), endpoint("first", inference_id=shared, max_tokens=11)],
                  namespace)
    kubectl.wait_for_condition("iep/first", "Ready", namespace)
    time.sleep(1.1)  # creation timestamps have one-second resolution
    kubectl.apply(endpoint("second", inference_id=shared, max_tokens=22), namespace)

    obj = wait_reason(kubectl, namespace, "second", "InferenceIdConflict")
    assert f"{namespace}/first" in condition(obj)["message"]
    assert condition(obj, "Stalled")["status"] == "True"
    complete(stack, shared)
    assert emulator_requests(stack)[-1]["body"]["max_tokens"] == 11

    kubectl.run("delete", "iep", "first", "-n", namespace, "--timeout=20s")

    kubectl.wait_for_condition("iep/second", "Ready", namespace, timeout=10)
    assert complete(stack, shared)[0] == 200
    assert emulator_requests(stack)[-1]["body"]["max_tokens"] == 22


def test_a_spec_stored_under_a_laxer_crd_is_reported_invalid(stack, kubectl, namespace):
    crd_name = "inferenceendpoints.inference-operator.dev"
    crd = kubectl.get("crd", crd_name)
    lax = copy.deepcopy(crd)
    for key in ("status", "metadata"):
        lax.pop(key)
    lax["metadata"] = {"name": crd_name}
    version = lax["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    invalid = endpoint("lax", max_tokens=0)
    invalid["spec"]["task_settings"]["temperature"] = 1.5
    try:
        kubectl.run("replace", "-f", "-", stdin=json.dumps(lax))
        poll(lambda: kubectl.apply(invalid, namespace, "--dry-run=server",
                                   check=False).returncode == 0,
             timeout=20, message="the laxer CRD never took effect")
        kubectl.apply([secret("anthropic"), invalid], namespace)
    finally:
        kubectl.run("apply", "-f", str(REPO / "crds" / f"{crd_name}.yaml"))

    obj = wait_reason(kubectl, namespace, "lax", "SpecInvalid")
    message = condition(obj)["message"]
    assert "spec.task_settings.max_tokens: must be greater than or equal to 1" in message
    assert "spec.task_settings.temperature: must be less than or equal to 1" in message
    assert condition(obj, "Stalled")["status"] == "True"
    assert complete(stack, "lax")[0] == 404


def test_deleting_the_namespace_does_not_hang(stack, kubectl, control_plane):
    if control_plane.is_local and "kube-controller-manager" not in control_plane.logs():
        pytest.skip("no kube-controller-manager (KUBEBUILDER_ASSETS without it)")
    namespace = f"gone-{uuid.uuid4().hex[:8]}"
    iid = f"{namespace}-ep"
    kubectl.run("create", "namespace", namespace)
    kubectl.apply([secret("anthropic"), endpoint("ep", inference_id=iid)], namespace)
    kubectl.wait_for_condition("iep/ep", "Ready", namespace)

    kubectl.run("delete", "namespace", namespace, "--timeout=60s", timeout=90)

    assert complete(stack, iid)[0] == 404
    assert kubectl.run("get", "namespace", namespace, check=False).returncode != 0
