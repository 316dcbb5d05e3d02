"""The operator's /metrics (controller/metrics.py) against the real API server: reconciles
by outcome, time to Ready, endpoints by Ready state and reason (no stale counts after
deletes), the queue of pending work and the last reconcile's time."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_devkit.loopback import free_port
from inference_devkit.waiting import poll
from operator_support import restarted_with, wait_reason
from resources import endpoint, secret

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample, keyed by its name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape_until(url: str, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``done``: the counts follow the status patch by a moment."""
    def probe() -> Samples | None:
        samples = scrape(url)
        return samples if done(samples) else None

    return poll(probe, timeout=10, interval=0.1, message="the metrics did not follow")


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def serving(url: str) -> Samples | None:
    try:
        return scrape(url)
    except (urllib.error.URLError, OSError):
        return None


@pytest.fixture(scope="module")
def metrics_url(stack) -> Iterator[str]:
    """The session's operator, restarted with its metrics listener for this module."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with restarted_with(stack.services["operator"], f"--metrics-port={port}",
                        "--metrics-address=127.0.0.1"):
        poll(lambda: serving(url), timeout=30, interval=0.2, message="no operator /metrics")
        yield url


def endpoints(samples: Samples, ready: str, reason: str) -> float:
    return value(samples, "inference_operator_endpoints", ready=ready, reason=reason)



def delete_and_wait_uncounted(kubectl, namespace: str, name: str, metrics_url: str,
                              count_before: float, ready: str, reason: str) -> None:
    """Delete the endpoint; the (ready, reason) count goes back to what it was."""
    kubectl.run("delete", "iep", name, "-n", namespace, "--timeout=20s")
    poll(lambda: endpoints(scrape(metrics_url), ready, reason) == count_before,
         timeout=20, message="the deleted endpoint is still counted")

def test_a_ready_endpoint_is_counted_by_outcome_state_and_time_to_ready(
    stack, kubectl, namespace, metrics_url
):
    before = scrape(metrics_url)
    kubectl.apply([secret("anthropic"), endpoint("ready", inference_id=f"{namespace}-ready")],
                  namespace)
    kubectl.wait_for_condition("iep/ready", "Ready", namespace, timeout=30)

    after = scrape_until(metrics_url, lambda s: value(
        s, "inference_operator_time_to_ready_seconds_count") > value(
        before, "inference_operator_time_to_ready_seconds_count"))
    serving_total = "inference_operator_reconciles_total"
    assert value(after, serving_total, outcome="Serving") > value(
        before, serving_total, outcome="Serving")
    assert endpoints(after, "True", "Serving") >= 1
    assert endpoints(after, "True", "Serving") == endpoints(before, "True", "Serving") + 1
    assert value(after, "inference_operator_reconcile_duration_seconds_count") > value(
        before, "inference_operator_reconcile_duration_seconds_count")
    last = value(after, "inference_operator_last_reconcile_timestamp_seconds")
    assert time.time() - 60 < last <= time.time() + 1
    # Nothing left running or queued once the endpoint is Ready and the burst is over.
    poll(lambda: value(scrape(metrics_url), "inference_operator_pending_reconciles") == 0,
         timeout=20, message="reconciles still pending")

    delete_and_wait_uncounted(kubectl, namespace, "ready", metrics_url,
                              endpoints(before, "True", "Serving"), "True", "Serving")


def test_an_endpoint_without_its_secret_is_counted_until_deleted(
    stack, kubectl, namespace, metrics_url
):
    before = scrape(metrics_url)
    kubectl.apply(endpoint("orphan", "absent", inference_id=f"{namespace}-orphan"), namespace)
    wait_reason(kubectl, namespace, "orphan", "SecretNotFound")

    after = scrape_until(metrics_url, lambda s: endpoints(s, "False", "SecretNotFound") > (
        endpoints(before, "False", "SecretNotFound")))
    assert endpoints(after, "False", "SecretNotFound") == endpoints(
        before, "False", "SecretNotFound") + 1
    total = "inference_operator_reconciles_total"
    assert value(after, total, outcome="SecretNotFound") > value(
        before, total, outcome="SecretNotFound")

    delete_and_wait_uncounted(kubectl, namespace, "orphan", metrics_url,
                              endpoints(before, "False", "SecretNotFound"),
                              "False", "SecretNotFound")


def test_a_reason_no_endpoint_has_any_more_leaves_the_gauge(
    stack, kubectl, namespace, metrics_url
):
    """One endpoint moves from SecretNotFound to Serving: its old pair's count drops."""
    before = scrape(metrics_url)
    kubectl.apply(endpoint("late", "late", inference_id=f"{namespace}-late"), namespace)
    wait_reason(kubectl, namespace, "late", "SecretNotFound")
    waiting = endpoints(scrape_until(metrics_url, lambda s: endpoints(
        s, "False", "SecretNotFound") > endpoints(before, "False", "SecretNotFound")),
        "False", "SecretNotFound")
    assert waiting == endpoints(before, "False", "SecretNotFound") + 1

    kubectl.apply(secret("late"), namespace)
    kubectl.wait_for_condition("iep/late", "Ready", namespace, timeout=30)

    after = scrape_until(metrics_url, lambda s: endpoints(s, "True", "Serving") > (
        endpoints(before, "True", "Serving")))
    assert endpoints(after, "False", "SecretNotFound") == waiting - 1
    assert endpoints(after, "True", "Serving") == endpoints(before, "True", "Serving") + 1
    labels = {dict(key[1]).get("reason") for key in after
              if key[0] == "inference_operator_endpoints"}
    assert labels <= {"Serving", "SecretNotFound", "SecretKeyMissing", "SecretKeyInvalid",
                      "SpecInvalid", "InferenceIdConflict", "GatewayUnavailable",
                      "GatewayPending", "UpstreamAuthFailed", "ModelNotFound",
                      "UpstreamUnavailable", "ReconcileFailed", "Unknown"}
