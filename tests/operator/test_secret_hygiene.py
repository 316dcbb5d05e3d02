"""The API key appears in no status, Event, annotation, log line, metric or GET response.
(tests/reliability/test_debug_logging_hygiene.py repeats this with debug logging on.)"""

from __future__ import annotations

from operator_support import (
    assert_outputs_were_read,
    find_leaks,
    observable_outputs,
    run_main_flows,
)


def test_no_key_leaks_through_any_output(stack, kubectl, namespace):
    run_main_flows(stack, kubectl, namespace)

    outputs = observable_outputs(stack, kubectl, namespace)

    assert find_leaks(outputs) == []
    assert_outputs_were_read(outputs, namespace)
