"""The API key appears in no status, Event, annotation, log line, metric or GET response.
(tests/reliability/test_debug_logging_hygiene.py repeats this with debug logging on.)"""

from __future__ import annotations

import urllib.request

from inference_devkit.loopback import free_port
from operator_support import (
    assert_outputs_were_read,
    find_leaks,
    observable_outputs,
    restarted_with,
    run_main_flows,
)


def operator_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_no_key_leaks_through_any_output(stack, kubectl, namespace):
    # The session's operator serves no metrics; this run does, so they are searched too.
    port = free_port()
    with restarted_with(stack.services["operator"], f"--metrics-port={port}",
                        "--metrics-address=127.0.0.1"):
        run_main_flows(stack, kubectl, namespace)
        outputs = observable_outputs(stack, kubectl, namespace)
        outputs["operator metrics"] = operator_metrics(port)

    assert find_leaks(outputs) == []
    assert_outputs_were_read(outputs, namespace)
    metrics = outputs["operator metrics"]
    assert 'inference_operator_reconciles_total{outcome="UpstreamAuthFailed"}' in metrics
    # Labels are reasons and Ready states only: no namespace, name or inference id.
    assert namespace not in metrics
