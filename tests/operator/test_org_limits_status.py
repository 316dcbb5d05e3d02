"""What the gateway learned of the organisation's limits, in the endpoint's status and in
``kubectl get iep -o wide``, and the spend limit as the SpendLimitReached condition and a
Warning Event: the real operator reading the real gateway's metrics listener, the
emulator in its organisation-limit mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from inference_devkit.waiting import poll
from inference_operator.anthropic.model_classes import model_class
from operator_support import complete, condition, events, http, key_forms, restarted_with
from resources import KEY, endpoint, secret

LIMITS = {"requests_per_minute": 1_000, "input_tokens_per_minute": 400_000,
          "output_tokens_per_minute": 90_000, "round_remaining": False}


@pytest.fixture(scope="module")
def org_limits(stack) -> Iterator[None]:
    """The session's operator reading the gateway's organisation limits every 0.3 s, and
    the emulator limiting its organisation; both put back afterwards."""
    with restarted_with(stack.services["operator"], "--org-limits-poll-seconds=0.3"):
        assert http("PUT", f"{stack.emulator_url}/_emulator/limits", LIMITS)[0] == 200
        try:
            yield
        finally:
            http("DELETE", f"{stack.emulator_url}/_emulator/limits")


def spend_limit(stack, reached: bool) -> None:
    assert http("PUT", f"{stack.emulator_url}/_emulator/limits",
                {**LIMITS, "spend_limit_reached": reached})[0] == 200


def spend_condition_becomes(kubectl, namespace: str, name: str, status: str
                            ) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = kubectl.get("iep", name, namespace)
        return obj if condition(obj, "SpendLimitReached").get("status") == status else None
    return poll(probe, timeout=15, interval=0.2, message=f"SpendLimitReached never {status}")


def status_of(kubectl, namespace: str, name: str) -> dict[str, Any]:
    return kubectl.get("iep", name, namespace).get("status") or {}


def test_the_learned_limits_and_their_use_show_in_status_and_wide_output(
        stack, kubectl, namespace, org_limits):
    model = "claude-statuslimits-1"  # a model class of its own: no other test's budget
    kubectl.apply([secret("anthropic"),
                   endpoint("limits", inference_id=f"{namespace}-limits", model=model)],
                  namespace)
    kubectl.wait_for_condition("iep/limits", "Ready", namespace, timeout=30)
    before = status_of(kubectl, namespace, "limits")
    assert "organisation_limits" not in before  # nothing answered yet: nothing learned
    assert not condition({"status": before}, "SpendLimitReached")

    assert complete(stack, f"{namespace}-limits")[0] == 200

    limits = poll(lambda: status_of(kubectl, namespace, "limits").get("organisation_limits"),
                  timeout=15, interval=0.2, message="no organisation limits in status")
    assert limits == {"model_class": model_class(model), "requests_per_minute": 1_000,
                      "input_tokens_per_minute": 400_000,
                      "output_tokens_per_minute": 90_000, "used_percent": 0}
    spend = condition({"status": status_of(kubectl, namespace, "limits")}, "SpendLimitReached")
    assert (spend["status"], spend["reason"]) == ("False", "WithinSpendLimit")
    wide = kubectl.run("get", "iep", "limits", "-n", namespace, "-o", "wide").stdout.split("\n")
    assert wide[0].split()[-2:] == ["ORG-OUTPUT-TPM", "ORG-USED-PCT"], wide[0]
    assert wide[1].split()[-2:] == ["90000", "0"], wide[1]
    text = json.dumps(kubectl.get("iep", "limits", namespace))
    assert not any(form in text for form in key_forms(KEY).values())


def test_the_spend_limit_is_a_condition_and_a_warning_event_until_answers_come_again(
        stack, kubectl, namespace, org_limits):
    model = "claude-spendlimit-1"
    iid = f"{namespace}-spend"
    kubectl.apply([secret("anthropic"), endpoint("spend", inference_id=iid, model=model)],
                  namespace)
    kubectl.wait_for_condition("iep/spend", "Ready", namespace, timeout=30)
    spend_limit(stack, True)
    try:
        status, answer = complete(stack, iid)
        assert status == 429, answer
        obj = spend_condition_becomes(kubectl, namespace, "spend", "True")
        reached = condition(obj, "SpendLimitReached")
        assert reached["reason"] == "SpendLimitReached"
        assert "spend limit" in reached["message"]
        assert condition(obj)["status"] == "True"  # configured and served all along
        warnings = [e for e in events(kubectl, namespace) if e["involvedObject"]["name"]
                    == "spend" and e["reason"] == "SpendLimitReached"]
        assert [e["type"] for e in warnings] == ["Warning"]
    finally:
        spend_limit(stack, False)

    assert complete(stack, iid)[0] == 200
    obj = spend_condition_becomes(kubectl, namespace, "spend", "False")
    assert condition(obj, "SpendLimitReached")["reason"] == "WithinSpendLimit"
    assert obj["status"]["organisation_limits"]["output_tokens_per_minute"] == 90_000
