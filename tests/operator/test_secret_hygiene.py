"""The API key appears in no status, Event, annotation, log line, metric or GET response."""

from __future__ import annotations

import json
import urllib.request

from operator_support import (
    ALL_KEYS,
    KEY,
    REJECTED_KEY,
    ROTATED_KEY,
    complete,
    endpoint,
    http,
    secret,
    wait_reason,
)


def test_no_key_leaks_through_any_output(stack, kubectl, namespace):
    # The main flows, with distinctive keys: serve, rotate, reject, conflict, delete.
    kubectl.apply([secret("anthropic", KEY), secret("bad", REJECTED_KEY),
                   endpoint("clean", inference_id=f"{namespace}-clean"),
                   endpoint("rejected", "bad")], namespace)
    kubectl.wait_for_condition("iep/clean", "Ready", namespace)
    assert complete(stack, f"{namespace}-clean")[0] == 200
    kubectl.apply(secret("anthropic", ROTATED_KEY), namespace)
    wait_reason(kubectl, namespace, "rejected", "UpstreamAuthFailed")
    kubectl.apply(endpoint("twin", inference_id=f"{namespace}-clean"), namespace)
    wait_reason(kubectl, namespace, "twin", "InferenceIdConflict")
    kubectl.run("delete", "iep", "twin", "-n", namespace, "--timeout=20s")

    outputs = {
        "endpoints (status, annotations, managedFields)":
            kubectl.run("get", "iep", "-A", "-o", "json").stdout,
        "events": kubectl.run("get", "events", "-A", "-o", "json").stdout,
        "describe": kubectl.run("describe", "iep", "-n", namespace).stdout,
        "operator log": stack.services["operator"].log_text(),
        "gateway log": stack.services["gateway"].log_text(),
        "gateway GET _inference": json.dumps(
            http("GET", f"{stack.gateway_url}/_inference/_all")[1]),
        "gateway admin GET _inference": json.dumps(
            http("GET", f"{stack.admin_url}/_inference/_all", token=stack.admin_token)[1]),
        "gateway metrics": urllib.request.urlopen(f"{stack.gateway_url}/metrics").read().decode(),
        "gateway healthz": urllib.request.urlopen(f"{stack.gateway_url}/healthz").read().decode(),
    }
    leaks = [(where, key) for where, text in outputs.items() for key in ALL_KEYS
             if key in text]
    assert leaks == []
    # The searches looked at real content, not empty strings.
    assert f"{namespace}-clean" in outputs["gateway GET _inference"]
    assert "UpstreamAuthFailed" in outputs["events"]
    assert "Serving" in outputs["operator log"]
