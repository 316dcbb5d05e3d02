"""Flux syncs InferenceEndpoints from Git into the cluster: it applies them, waits on
their health (our kstatus conditions), follows changes, reports refusals with the API
server's message, corrects drift and prunes."""

from __future__ import annotations

import json
from typing import Any

import flux_waits
import pytest
from flux_objects import endpoint_check, kustomization

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.waiting import poll
from operator_support import (
    complete,
    condition,
    emulator_requests_for,
    ready_now,
    wait_caught_up,
)
from resources import REFUSED_CHANGES, endpoint, secret


def _ready(obj: dict[str, Any]) -> bool:
    return condition(obj).get("status") == "True"


def _sample(kubectl: Kubectl, ks_name: str, namespace: str, name: str, wanted: str
            ) -> tuple[bool, bool]:
    """(Kustomization Ready at ``wanted``, endpoint Ready at its generation), read in
    that order: an endpoint Ready only in the second read cannot excuse the first."""
    ks = flux_waits.kustomization(kubectl, ks_name)
    ks_ready = _ready(ks) and (ks.get("status") or {}).get("lastAppliedRevision") == wanted
    return ks_ready, ready_now(kubectl, namespace, name)


def test_a_commit_is_applied_and_ready_only_after_the_endpoint_is(
        stack, kubectl, namespace, gitops, folder, write_folder):
    iid = f"{namespace}-chat"
    sha = write_folder({"endpoint.yaml": [secret("anthropic"),
                                          endpoint("chat", inference_id=iid)]})
    name = gitops.create(kustomization(namespace, folder, target_namespace=namespace))
    flux_waits.fetch_source(kubectl, sha)
    wanted = flux_waits.revision(sha)

    samples: list[tuple[bool, bool]] = []

    def settled() -> bool:
        samples.append(_sample(kubectl, name, namespace, "chat", wanted))
        return samples[-1][0]

    poll(settled, timeout=60, interval=0.05, message="Kustomization never Ready")
    assert not [s for s in samples if s[0] and not s[1]], (
        "Flux said Ready while the endpoint was not", samples)
    ks = flux_waits.kustomization(kubectl, name)
    ep = kubectl.get("iep", "chat", namespace)
    # Seconds-resolution timestamps, written by two controllers: not earlier is the claim.
    assert condition(ks)["lastTransitionTime"] >= condition(ep)["lastTransitionTime"]
    assert condition(ks, "Healthy")["status"] == "True"
    assert condition(ks)["message"] == f"Applied revision: {wanted}"
    status, answer = complete(stack, iid, "Say hi")
    assert status == 200, answer
    assert answer["completion"][0]["result"]


def test_a_changed_max_tokens_reaches_the_upstream(
        stack, kubectl, namespace, gitops, folder, write_folder):
    iid, model = f"{namespace}-gen", f"claude-{namespace}"
    files = lambda tokens: {"endpoint.yaml": [  # noqa: E731 (two commits, one shape)
        secret("anthropic"), endpoint("gen", inference_id=iid, model=model, max_tokens=tokens)]}
    name = gitops.create(kustomization(namespace, folder, target_namespace=namespace))
    flux_waits.wait_ready(kubectl, name, flux_waits.revision(
        _synced(kubectl, name, write_folder(files(64)))))
    first = kubectl.get("iep", "gen", namespace)["metadata"]["generation"]

    sha = write_folder(files(321))
    ks = flux_waits.sync(kubectl, name, sha)

    assert _ready(ks), condition(ks)
    obj = wait_caught_up(kubectl, namespace, "gen")
    assert obj["metadata"]["generation"] > first
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert complete(stack, iid)[0] == 200
    sent = [r for r in emulator_requests_for(stack, model) if r["path"] == "/v1/messages"]
    assert sent[-1]["body"]["max_tokens"] == 321


@pytest.mark.parametrize(("change", "field", "reason"), REFUSED_CHANGES.values(),
                         ids=REFUSED_CHANGES.keys())
def test_an_invalid_commit_is_refused_with_the_api_servers_message_and_the_last_good_serves(
        stack, kubectl, namespace, gitops, folder, write_folder, change, field, reason):
    iid = f"{namespace}-keep"
    good = endpoint("keep", inference_id=iid)
    name = gitops.create(kustomization(namespace, folder, target_namespace=namespace))
    flux_waits.wait_ready(kubectl, name, flux_waits.revision(
        _synced(kubectl, name, write_folder({"endpoint.yaml": [secret("anthropic"), good]}))))

    bad = {**good, "spec": {**good["spec"], **change}}
    ks = flux_waits.sync(kubectl, name, write_folder({"endpoint.yaml": [secret("anthropic"),
                                                                        bad]}))

    ready = condition(ks)
    assert ready["status"] == "False", ready
    assert field in ready["message"] and reason in ready["message"], ready["message"]
    assert f"InferenceEndpoint/{namespace}/keep" in ready["message"]
    obj = kubectl.get("iep", "keep", namespace)
    assert obj["spec"]["task_settings"] == {"max_tokens": 64}
    assert obj["spec"]["service_settings"]["api_key"] == {
        "secret_key_ref": {"name": "anthropic", "key": "api_key"}}
    assert _ready(obj)
    assert complete(stack, iid)[0] == 200


def test_an_endpoint_without_its_secret_fails_the_health_check_until_the_secret_is_committed(
        stack, kubectl, namespace, gitops, folder, write_folder):
    iid = f"{namespace}-late"
    # The explicit form, as examples/flux/ has it: no wait, a health check per endpoint.
    name = gitops.create(kustomization(
        namespace, folder, target_namespace=namespace, wait=False,
        health_checks=[endpoint_check("late", namespace)]))
    sha = write_folder({"endpoint.yaml": [endpoint("late", "late-secret", inference_id=iid)]})

    # Up to two health-check timeouts (30 s, the least Flux takes): the first reconcile,
    # started before the commit, waits for an endpoint that is not there yet.
    ks = flux_waits.sync(kubectl, name, sha, timeout=150)

    ready = condition(ks)
    assert (ready["status"], ready["reason"]) == ("False", "HealthCheckFailed"), ready
    # Flux's message names the object and its kstatus; the reason is on the endpoint.
    assert f"InferenceEndpoint/{namespace}/late status: 'InProgress'" in ready["message"]
    obj = kubectl.get("iep", "late", namespace)
    assert condition(obj)["reason"] == "SecretNotFound"
    assert "late-secret" in condition(obj)["message"]
    assert complete(stack, iid)[0] == 404

    sha = write_folder({"secret.yaml": [secret("late-secret")]})
    ks = flux_waits.wait_ready(kubectl, name, flux_waits.revision(_synced(kubectl, name, sha)))

    assert condition(ks, "Healthy")["status"] == "True"
    assert complete(stack, iid)[0] == 200


def test_a_kubectl_edit_is_reverted_at_the_next_sync_and_the_operator_follows(
        stack, kubectl, namespace, gitops, folder, write_folder):
    iid, model = f"{namespace}-drift", f"claude-{namespace}"
    name = gitops.create(kustomization(namespace, folder, target_namespace=namespace))
    sha = write_folder({"endpoint.yaml": [
        secret("anthropic"), endpoint("drift", inference_id=iid, model=model, max_tokens=64)]})
    flux_waits.wait_ready(kubectl, name, flux_waits.revision(_synced(kubectl, name, sha)))

    edited = json.loads(kubectl.run(
        "patch", "iep", "drift", "-n", namespace, "--type=merge", "-o", "json",
        "-p", '{"spec": {"task_settings": {"max_tokens": 999}}}').stdout)
    assert edited["spec"]["task_settings"]["max_tokens"] == 999

    # The edit is not checked at the gateway first: a sync already queued (the source's
    # new revision also wakes the Kustomization) may revert it at once, as it should.
    ks = flux_waits.reconciled(kubectl, name, flux_waits.request_reconcile(
        kubectl, "kustomization", name), flux_waits.revision(sha))

    assert _ready(ks), condition(ks)
    obj = wait_caught_up(kubectl, namespace, "drift")
    assert obj["metadata"]["generation"] > edited["metadata"]["generation"]  # reverted
    assert obj["spec"]["task_settings"]["max_tokens"] == 64
    assert complete(stack, iid)[0] == 200
    assert _last_max_tokens(stack, model) == 64


def test_a_commit_that_removes_the_endpoint_prunes_it_from_the_cluster_and_the_gateway(
        stack, kubectl, namespace, gitops, folder, write_folder):
    iid = f"{namespace}-gone"
    name = gitops.create(kustomization(namespace, folder, target_namespace=namespace))
    sha = write_folder({"secret.yaml": [secret("anthropic")],
                        "endpoint.yaml": [endpoint("gone", inference_id=iid)]})
    flux_waits.wait_ready(kubectl, name, flux_waits.revision(_synced(kubectl, name, sha)))
    assert complete(stack, iid)[0] == 200

    ks = flux_waits.sync(kubectl, name, write_folder({"endpoint.yaml": None}))

    assert _ready(ks), condition(ks)
    # Prune deletes and (wait: true) waits for the object to be gone: the finalizer ran.
    left = kubectl.run("get", "iep", "-n", namespace, "-o", "name").stdout
    assert left == ""
    status, answer = complete(stack, iid)
    assert status == 404, answer
    assert kubectl.run("get", "secret", "anthropic", "-n", namespace).returncode == 0


def _synced(kubectl: Kubectl, name: str, sha: str) -> str:
    """Ask for the sync of ``sha`` without waiting on its outcome; ``sha``."""
    flux_waits.fetch_source(kubectl, sha)
    flux_waits.request_reconcile(kubectl, "kustomization", name)
    return sha


def _last_max_tokens(stack, model: str) -> int:
    sent = [r for r in emulator_requests_for(stack, model) if r["path"] == "/v1/messages"]
    return sent[-1]["body"]["max_tokens"]
