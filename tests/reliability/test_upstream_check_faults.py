"""Anthropic's Models API failing with 500 and 529 while the operator verifies a key: a
transient fault, so the endpoint keeps (or gets) served, is never marked Stalled, and is
Ready again by itself once the upstream recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from models_api_faults import ModelsApiFaults

from inference_devkit.waiting import poll
from operator_support import (
    complete,
    condition,
    emulator_requests_for,
    event_counts,
    restarted_with,
    wait_caught_up,
    wait_reason,
)
from resources import ROTATED_KEY, endpoint, secret

UNAVAILABLE = "UpstreamUnavailable"
WINDOW = 10.0


@pytest.fixture(scope="module")
def models_api(stack) -> Iterator[ModelsApiFaults]:
    """The operator's Models API checks go through the fault hop for this module's tests
    (faults are per model id, and each test uses model ids of its own)."""
    with ModelsApiFaults(stack.emulator_url) as faults, restarted_with(
        stack.services["operator"], "--anthropic-base-url", faults.url
    ):
        yield faults


def test_models_api_500_and_529_are_transient(stack, kubectl, namespace, models_api):
    old_model = f"claude-old-{namespace}"
    new_model = f"claude-new-{namespace}"
    old, new = f"{namespace}-old", f"{namespace}-new"
    kubectl.apply([secret("anthropic"), secret("other", ROTATED_KEY),
                   endpoint("old", inference_id=old, model=old_model)], namespace)
    wait_caught_up(kubectl, namespace, "old")

    models_api.fail(old_model, 500)
    models_api.fail(new_model, 529)
    # A served endpoint whose new key must be checked, and a new endpoint.
    kubectl.apply([endpoint("old", "other", inference_id=old, model=old_model),
                   endpoint("new", inference_id=new, model=new_model)], namespace)

    for name, model, iid, fault in (("old", old_model, old, 500), ("new", new_model, new, 529)):
        obj = wait_reason(kubectl, namespace, name, UNAVAILABLE)
        assert condition(obj)["status"] == "False"
        assert condition(obj, "Reconciling")["status"] == "True"
        assert condition(obj, "Stalled")["status"] == "False"
        # Served meanwhile: a check that could not run is no reason to refuse traffic.
        assert complete(stack, iid)[0] == 200
        assert f"answered {fault}" in condition(obj)["message"]
        # Retried, not taken as a verdict.
        poll(lambda m=model: len(models_api.answered(m)) >= 2, timeout=30,
             message=f"the operator did not retry the check for {model}")
        assert condition(kubectl.get("iep", name, namespace), "Stalled")["status"] == "False"
    # The served endpoint already runs on the new key, checked or not.
    served = [r for r in emulator_requests_for(stack, old_model) if r["path"] == "/v1/messages"]
    assert served[-1]["key_index"] == 1

    models_api.recover(old_model)
    models_api.recover(new_model)
    # The retries' backoff (2, 5, 10, 30 s) brings both back without any change.
    for name, model in (("old", old_model), ("new", new_model)):
        obj = wait_caught_up(kubectl, namespace, name, timeout=60)
        assert condition(obj)["reason"] == "Serving"
        assert models_api.answered(model)[-1] == 200
    assert complete(stack, old)[0] == 200 and complete(stack, new)[0] == 200

    counts = event_counts(kubectl, namespace)
    # Never announced as needing a human, and one Event per transition, not per retry.
    assert not any(reason in ("UpstreamAuthFailed", "ModelNotFound") for _, reason in counts)
    assert counts[("new", UNAVAILABLE)] == 1 and counts[("old", UNAVAILABLE)] == 1, counts


# Regression: the status message carries the upstream's code, so a Models API flapping
# between 500 and 529 changed the status on every check, and the echo of the operator's
# own status patch reconciled and checked again at once, bypassing the retry backoff
# (~470 checks and ~490 status patches in 20 s before the fix; 2 with a steady 500).
def test_a_flapping_models_api_is_checked_at_the_backoff_pace(
    stack, kubectl, namespace, models_api
):
    model = f"claude-flap-{namespace}"
    models_api.fail(model, 500, 529)
    kubectl.apply([secret("anthropic"), endpoint("flap", model=model)], namespace)
    wait_reason(kubectl, namespace, "flap", UNAVAILABLE)
    checks = len(models_api.answered(model))

    time.sleep(WINDOW)  # an observation window: the count in it is what is asserted

    # Backoff retries at 2, 5 and 10 s fit into the window, plus a few event-driven ones.
    # (Each check in the loop also costs a status patch on the API server.)
    assert len(models_api.answered(model)) - checks <= 8
