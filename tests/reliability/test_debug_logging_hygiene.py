"""Debug logging must not change the key hygiene: the operator runs with ``--verbose``
(kopf debug: the root logger at DEBUG, so every library's debug lines too) through the
main flows, and no form of any key shows up anywhere a user or a log collector reads."""

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


def test_no_key_leaks_with_debug_logging(stack, kubectl, namespace):
    operator = stack.services["operator"]
    log_before = len(operator.log_text())
    port = free_port()
    with restarted_with(operator, "--verbose", f"--metrics-port={port}",
                        "--metrics-address=127.0.0.1"):
        run_main_flows(stack, kubectl, namespace)
        outputs = observable_outputs(stack, kubectl, namespace)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            outputs["operator metrics"] = answer.read().decode()

    leaks = find_leaks(outputs)
    assert leaks == [], leaks
    assert_outputs_were_read(outputs, namespace)
    assert "inference_operator_reconciles_total" in outputs["operator metrics"]
    # Debug lines were written, so the search covered them: kopf's own, Secret events
    # and the patches it sends included. (The HTTP libraries' traces stay off whatever
    # the level: kubeclient.py.)
    debug_part = outputs["operator log"][log_before:]
    assert "Handler 'secret_event' succeeded" in debug_part
    assert "patching the resource with:" in debug_part
