"""Admission: whether, and when, a request may make its next upstream attempt. The
pipeline asks before every attempt, retries included (pipeline.py, ``Admission``); this
one is the endpoint's request-rate bucket and its queue."""

from __future__ import annotations

from inference_operator.clock import Clock
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.ratelimit import QueueFull


class RateAdmission:
    def __init__(self, metrics: GatewayMetrics, clock: Clock) -> None:
        self._metrics = metrics
        self._clock = clock

    async def admit(self, endpoint: Endpoint, *, priority: bool) -> None:
        """A token of the endpoint's bucket, at once or after a wait in its queue
        (``priority``: a retry, ahead of new requests); 429 when the queue is full."""
        queued = self._metrics.queued.labels(endpoint.inference_id)  # its series exists
        if endpoint.bucket.try_acquire():
            # No wait: the gauge would go up and down with no await in between, which no
            # scrape can see, so it is left alone.
            self._metrics.queue_wait.labels(endpoint.inference_id).observe(0.0)
            return
        started = self._clock.now()
        queued.inc()
        try:
            await endpoint.bucket.acquire(priority=priority)
        except QueueFull as full:
            raise ESError(
                429, "es_rejected_execution_exception",
                f"Failed to execute task for inference id [{endpoint.inference_id}] because "
                f"the request service [{full.group}] queue is full",
                headers={"Retry-After": str(full.retry_after)},
            ) from None
        finally:
            queued.dec()
        self._metrics.queue_wait.labels(endpoint.inference_id).observe(
            self._clock.now() - started)
