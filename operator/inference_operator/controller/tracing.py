"""The operator's spans, when tracing is on (telemetry.py): one per reconcile of an
endpoint, from the kopf handler's call to the status patch, and one under it for each
step that waits on something else (the key's check with Anthropic, the configuration
write, the gateways taking it, the status write), so a slow Ready can be followed. No
key, and nothing of a Secret, is ever an attribute."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from inference_operator import telemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

NAMESPACE = "inference_operator.endpoint.namespace"
NAME = "inference_operator.endpoint.name"
GENERATION = "inference_operator.endpoint.generation"
QUEUE_WAIT = "inference_operator.queue.wait"  # seconds waiting for the endpoint's lock
REASON = "inference_operator.reason"  # the Ready condition's reason the reconcile reached
READY = "inference_operator.ready"
ERROR_TYPE = telemetry.ERROR_TYPE
RECONCILE = "reconcile InferenceEndpoint"
# The steps' span names.
VERIFY = "verify key"
PUBLISH = "publish"
GATEWAYS = "wait for gateways"
WITHDRAW = "withdraw"
STATUS = "write status"


class ReconcileTracing(telemetry.SpanMaker):
    def __init__(self, provider: TracerProvider) -> None:
        super().__init__(provider, "inference_operator.controller")

    @contextlib.contextmanager
    def reconcile(self, namespace: str, name: str) -> Iterator[Span]:
        """The reconcile's span, current for the steps started under it."""
        with self._tracer.start_as_current_span(
                RECONCILE, attributes={NAMESPACE: namespace, NAME: name},
                record_exception=False) as span:
            yield span

    def step(self, name: str) -> contextlib.AbstractContextManager[Any]:
        return self._tracer.start_as_current_span(name, record_exception=False)
