"""Admission: whether, and when, a request may make its next upstream attempt. The
pipeline asks before every attempt, retries included (pipeline.py, ``Admission``): first
the endpoint's request-rate bucket and its queue (ratelimit.py), then the organisation
budget its key shares with every endpoint on that key and model class (org_limits.py);
with peer admission on, each of them its owner's (peering/routing.py)."""

from __future__ import annotations

from inference_operator.clock import Clock
from inference_operator.gateway import errors
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import Cost, Reservation, TooLarge
from inference_operator.gateway.peering.routing import RateRouting
from inference_operator.gateway.ratelimit import QueueFull, TurnTooLate
from inference_operator.gateway.timeunits import Deadline


class RateAdmission:
    def __init__(self, metrics: GatewayMetrics, clock: Clock, routing: RateRouting) -> None:
        self._metrics = metrics
        self._clock = clock
        self._routing = routing

    async def admit(self, endpoint: Endpoint, *, priority: bool, body_bytes: int,
                    max_tokens: int, deadline: Deadline | None = None) -> Reservation:
        """A token of the endpoint's bucket and a reservation of its organisation budget,
        at once or after waits in their queues (``priority``: a retry, ahead of new
        requests); 429 when a queue is full or the bucket's turn would come after the
        request's ``deadline``, 400 for what Anthropic would never admit."""
        budget = endpoint.budget
        cost = budget.cost(body_bytes, max_tokens)
        try:
            budget.check(cost)
            if not self._routing.try_acquire(endpoint.bucket):
                return await self._wait(endpoint, priority, cost, body_bytes,
                                        token=True, deadline=deadline)
            ticket = self._routing.try_reserve(budget, cost, body_bytes)
            if ticket is None:
                return await self._wait(endpoint, priority, cost, body_bytes)
            # No wait: the gauge would go up and down with no await in between, which no
            # scrape can see, so it is left alone.
            self._metrics.queue_wait.labels(endpoint.inference_id).observe(0.0)
            return ticket
        except TooLarge as error:
            raise errors.bad_request(f"{error} (inference id [{endpoint.inference_id}])"
                                     ) from None

    async def _wait(self, endpoint: Endpoint, priority: bool, cost: Cost, body_bytes: int, *,
                    token: bool = False, deadline: Deadline | None = None) -> Reservation:
        """Wait for the bucket's ``token`` (unless taken already; refused at once when its
        turn comes after the ``deadline``), then for the budget."""
        queued = self._metrics.queued.labels(endpoint.inference_id)  # its series exists
        started = self._clock.now()
        queued.inc()
        try:
            if token:
                await self._routing.acquire(
                    endpoint.bucket, priority=priority,
                    deadline=None if deadline is None else deadline.at)
            ticket = await self._routing.reserve(endpoint.budget, cost, body_bytes,
                                                 priority=priority)
        except TurnTooLate as late:
            assert deadline is not None
            raise ESError(
                429, "es_rejected_execution_exception",
                f"Failed to execute task for inference id [{endpoint.inference_id}] because "
                f"the request service [{late.group}] cannot admit it within its timeout "
                f"[{deadline.written}]: its turn comes in {late.retry_after}s",
                headers={"Retry-After": str(late.retry_after)},
            ) from None
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
        return ticket
