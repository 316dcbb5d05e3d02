"""What the API server counts of the requests it answered, read from its ``/metrics``
with prometheus_client's parser: how tests and benchmarks see how many reviews the
gateways asked for."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families


def requests_by_resource(metrics: str, resources: Iterable[str]) -> dict[str, float]:
    """``apiserver_request_total`` summed over every verb and code, per resource."""
    counts = dict.fromkeys(resources, 0.0)
    for family in text_string_to_metric_families(metrics):
        if family.name != "apiserver_request":  # the parser drops a counter's _total
            continue
        for sample in family.samples:
            resource = sample.labels.get("resource")
            if sample.name == "apiserver_request_total" and resource in counts:
                counts[resource] += sample.value
    return counts
