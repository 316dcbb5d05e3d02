"""Labelled Prometheus metrics whose children are looked up once, for hot paths; shared
by the gateway and the operator."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up once: prometheus_client's
    ``labels()`` validates, takes a lock and builds a tuple on every call, which showed
    in the profile of the request path (docs/benchmarks.md, "Reading the results")."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child

    def remove_first(self, value: str) -> None:
        """Drop every series whose first label is ``value`` (all go through ``labels``,
        so the cache knows them all)."""
        for values in [v for v in self._children if v[0] == value]:
            del self._children[values]
            self.metric.remove(*values)
