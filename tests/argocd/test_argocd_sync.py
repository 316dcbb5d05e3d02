"""Argo CD syncs InferenceEndpoints from Git: it applies them, shows their health through the
shipped Lua script (docs/argocd-health.lua), follows changes, reports refusals with the API
server's message, prunes, reverts drift, and never mistakes the operator's own writes for
drift."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from argocd_support import HEALTH_KEY, HEALTH_LUA, NAMESPACE, application, resource
from inference_devkit.waiting import poll
from operator_support import (
    complete,
    condition,
    emulator_requests_for,
    ready_now,
    wait_caught_up,
)
from resources import KEY, REFUSED_CHANGES, REJECTED_KEY, endpoint, secret

KIND = "InferenceEndpoint"


def _health(app: dict[str, Any]) -> str | None:
    return ((app.get("status") or {}).get("health") or {}).get("status")


def _last_max_tokens(stack, model: str) -> int:
    sent = [r for r in emulator_requests_for(stack, model) if r["path"] == "/v1/messages"]
    return sent[-1]["body"]["max_tokens"]


def test_argo_cd_runs_the_health_check_the_docs_ship(argocd_system, kubectl):
    """One source: what Argo CD loaded from argocd-cm is docs/argocd-health.lua."""
    data = kubectl.get("configmap", "argocd-cm", NAMESPACE)["data"]
    assert data[HEALTH_KEY] == HEALTH_LUA.read_text()


def test_an_application_syncs_and_turns_healthy_only_once_the_endpoint_is_ready(
        stack, kubectl, namespace, argo, folder, write_folder):
    iid = f"{namespace}-chat"
    sha = write_folder({"endpoint.yaml": [secret("anthropic"),
                                          endpoint("chat", inference_id=iid)]})
    name = argo.create(application(namespace, argo.git.url, folder, namespace))

    samples: list[tuple[str | None, bool]] = []

    def healthy() -> bool:
        # The Application first, then the endpoint: an endpoint Ready only in the second
        # read cannot excuse a Healthy in the first. Only once it compared the commit and
        # holds the endpoint: before, an Application with nothing in it is Healthy.
        app = argo.get(name)
        status = app.get("status") or {}
        if (status.get("sync") or {}).get("revision") != sha or not resource(app, KIND, "chat"):
            return False
        samples.append((_health(app), ready_now(kubectl, namespace, "chat")))
        return samples[-1][0] == "Healthy"

    poll(healthy, timeout=90, interval=0.05, message=f"Application never Healthy: {samples}")
    assert not [s for s in samples if s[0] == "Healthy" and not s[1]], (
        "Argo CD said Healthy while the endpoint was not Ready", samples)
    app = argo.wait(name, revision=sha, health="Healthy")
    entry = resource(app, KIND, "chat")
    assert entry["status"] == "Synced"
    # The script's message: the Ready condition's reason and message.
    assert entry["health"]["status"] == "Healthy"
    assert entry["health"]["message"].startswith(condition(kubectl.get("iep", "chat", namespace))
                                                 ["reason"] + ": ")
    status, answer = complete(stack, iid, "Say hi")
    assert status == 200, answer
    assert answer["completion"][0]["result"]


def test_a_missing_secret_is_progressing_with_the_operators_reason_until_it_is_committed(
        stack, kubectl, namespace, argo, folder, write_folder):
    iid = f"{namespace}-late"
    sha = write_folder({"endpoint.yaml": [endpoint("late", "late-secret", inference_id=iid)]})
    name = argo.create(application(namespace, argo.git.url, folder, namespace))

    argo.wait(name, revision=sha, health="Progressing")

    # The operator's verdict, not the script's first "waiting for the operator".
    def reported() -> dict[str, Any] | None:
        app = argo.get(name)
        health = resource(app, KIND, "late").get("health") or {}
        return app if "SecretNotFound" in health.get("message", "") else None

    app = poll(reported, timeout=30, interval=0.2,
               message="the endpoint's health never carried the operator's reason")
    entry = resource(app, KIND, "late")
    assert entry["health"]["status"] == "Progressing"  # the script keeps Degraded for Stalled
    assert "late-secret" in entry["health"]["message"]
    assert _health(app) == "Progressing"
    assert complete(stack, iid)[0] == 404

    sha = write_folder({"secret.yaml": [secret("late-secret")]})
    app = argo.wait(name, revision=sha, health="Healthy", timeout=90)

    assert resource(app, KIND, "late")["health"]["status"] == "Healthy"
    assert complete(stack, iid)[0] == 200


def test_a_refused_key_is_degraded_with_the_operators_message_and_a_good_key_heals_it(
        stack, kubectl, namespace, argo, folder, write_folder):
    iid = f"{namespace}-key"
    files = lambda key: {"endpoint.yaml": [  # noqa: E731 (two commits, one shape)
        secret("anthropic", key), endpoint("key", inference_id=iid)]}
    sha = write_folder(files(REJECTED_KEY))
    name = argo.create(application(namespace, argo.git.url, folder, namespace))

    app = argo.wait(name, revision=sha, health="Degraded", timeout=90)

    entry = resource(app, KIND, "key")
    assert entry["health"]["status"] == "Degraded"
    assert entry["health"]["message"].startswith("UpstreamAuthFailed: ")
    assert REJECTED_KEY not in json.dumps(app)  # the key never reaches Argo CD's status

    argo.wait(name, revision=write_folder(files(KEY)), health="Healthy", timeout=90)
    assert complete(stack, iid)[0] == 200


def test_a_changed_max_tokens_reaches_anthropic(
        stack, kubectl, namespace, argo, folder, write_folder):
    iid, model = f"{namespace}-gen", f"claude-{namespace}"
    files = lambda tokens: {"endpoint.yaml": [  # noqa: E731 (two commits, one shape)
        secret("anthropic"), endpoint("gen", inference_id=iid, model=model, max_tokens=tokens)]}
    name = argo.create(application(namespace, argo.git.url, folder, namespace))
    argo.wait(name, revision=write_folder(files(64)), health="Healthy", timeout=90)
    first = kubectl.get("iep", "gen", namespace)["metadata"]["generation"]

    argo.wait(name, revision=write_folder(files(321)), health="Healthy", timeout=90)

    obj = wait_caught_up(kubectl, namespace, "gen")
    assert obj["metadata"]["generation"] > first
    assert complete(stack, iid)[0] == 200
    assert _last_max_tokens(stack, model) == 321


def test_an_endpoint_removed_from_git_is_pruned_and_leaves_the_gateway(
        stack, kubectl, namespace, argo, folder, write_folder):
    iid = f"{namespace}-gone"
    sha = write_folder({"secret.yaml": [secret("anthropic")],
                        "endpoint.yaml": [endpoint("gone", inference_id=iid)]})
    name = argo.create(application(namespace, argo.git.url, folder, namespace))
    argo.wait(name, revision=sha, health="Healthy", timeout=90)
    assert complete(stack, iid)[0] == 200

    app = argo.wait(name, revision=write_folder({"endpoint.yaml": None}), health="Healthy")

    assert resource(app, KIND, "gone") == {}
    # Gone, not just marked: the operator's finalizer ran, and the gateway dropped it.
    poll(lambda: kubectl.run("get", "iep", "-n", namespace, "-o", "name").stdout == "",
         timeout=30, interval=0.2, message="the pruned endpoint is still there")
    status, answer = complete(stack, iid)
    assert status == 404, answer
    assert kubectl.run("get", "secret", "anthropic", "-n", namespace).returncode == 0


def test_self_heal_reverts_a_kubectl_edit_and_the_gateway_follows(
        stack, kubectl, namespace, argo, folder, write_folder):
    iid, model = f"{namespace}-drift", f"claude-{namespace}"
    sha = write_folder({"endpoint.yaml": [
        secret("anthropic"), endpoint("drift", inference_id=iid, model=model, max_tokens=64)]})
    name = argo.create(application(namespace, argo.git.url, folder, namespace))
    argo.wait(name, revision=sha, health="Healthy", timeout=90)

    edited = json.loads(kubectl.run(
        "patch", "iep", "drift", "-n", namespace, "--type=merge", "-o", "json",
        "-p", '{"spec": {"task_settings": {"max_tokens": 999}}}').stdout)
    assert edited["spec"]["task_settings"]["max_tokens"] == 999

    # No refresh asked for: the controller watches what it applied and heals on its own.
    def reverted() -> dict[str, Any] | None:
        obj = kubectl.get("iep", "drift", namespace)
        generation = obj["metadata"]["generation"] > edited["metadata"]["generation"]
        return obj if generation and obj["spec"]["task_settings"]["max_tokens"] == 64 else None

    poll(reverted, timeout=60, interval=0.2, message="self-heal never reverted the edit")
    wait_caught_up(kubectl, namespace, "drift")
    assert complete(stack, iid)[0] == 200
    assert _last_max_tokens(stack, model) == 64
    argo.wait(name, revision=sha, health="Healthy")


def test_the_operators_status_and_finalizer_never_make_the_application_out_of_sync(
        stack, kubectl, namespace, argo, folder, write_folder):
    """The operator writes status, a finalizer and defaults Git never holds; with its
    default diff (three-way against what it applied) Argo CD needs no ignore rule."""
    sha = write_folder({"endpoint.yaml": [secret("anthropic"),
                                          endpoint("quiet", inference_id=f"{namespace}-q")]})
    name = argo.create(application(namespace, argo.git.url, folder, namespace))
    argo.wait(name, revision=sha, health="Healthy", timeout=90)
    live = kubectl.get("iep", "quiet", namespace)
    assert "inference-operator.dev/finalizer" in live["metadata"]["finalizers"]
    assert live["status"]["observedGeneration"] == live["metadata"]["generation"]

    # The operator writes status again: a new generation (a label Git does not hold) and
    # a hard refresh, which compares without the cache, while we sample.
    kubectl.run("label", "iep", "quiet", "-n", namespace, "team=blue")
    seen: list[str | None] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        argo.refresh(name, "hard")
        app = argo.get(name)
        seen.append(((app.get("status") or {}).get("sync") or {}).get("status"))
        time.sleep(0.5)

    assert set(seen) == {"Synced"}, seen
    assert resource(argo.get(name), KIND, "quiet")["status"] == "Synced"


@pytest.mark.parametrize(("change", "field", "reason"), REFUSED_CHANGES.values(),
                         ids=REFUSED_CHANGES.keys())
def test_an_invalid_commit_fails_the_sync_with_the_api_servers_message_and_the_last_good_serves(
        stack, kubectl, namespace, argo, folder, write_folder, change, field, reason):
    iid = f"{namespace}-keep"
    good = endpoint("keep", inference_id=iid)
    name = argo.create(application(namespace, argo.git.url, folder, namespace))
    argo.wait(name, revision=write_folder({"endpoint.yaml": [secret("anthropic"), good]}),
              health="Healthy", timeout=90)

    bad = {**good, "spec": {**good["spec"], **change}}
    sha = write_folder({"endpoint.yaml": [secret("anthropic"), bad]})
    argo.refresh(name)

    # Automated sync retries a failed one with backoff (five times, by default), each
    # attempt refused the same way: the first refusal is what a user reads.
    def refused() -> dict[str, Any] | None:
        app = argo.get(name)
        operation = (app.get("status") or {}).get("operationState") or {}
        result = operation.get("syncResult") or {}
        entries = [r for r in result.get("resources") or () if r["kind"] == KIND]
        failed = result.get("revision") == sha and entries and entries[0]["status"] == "SyncFailed"
        return app if failed else None

    app = poll(refused, timeout=60, interval=0.2, message="the invalid commit never failed")
    assert app["status"]["sync"]["status"] == "OutOfSync"
    operation = app["status"]["operationState"]
    (entry,) = [r for r in operation["syncResult"]["resources"] if r["kind"] == KIND]
    assert field in entry["message"] and reason in entry["message"], entry
    obj = kubectl.get("iep", "keep", namespace)
    assert obj["spec"]["task_settings"] == {"max_tokens": 64}
    assert condition(obj)["status"] == "True"
    assert complete(stack, iid)[0] == 200

    # Committing the fix ends the retries: the next one syncs the latest commit.
    argo.wait(name, revision=write_folder({"endpoint.yaml": [secret("anthropic"), good]}),
              health="Healthy", timeout=90)
