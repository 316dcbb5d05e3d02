"""Inference through Anthropic, the same for every task type: admit (admission.py), attempt,
retry (retry.py), account (the tokens Anthropic reports), all within the request's
timeout. Requests and answers arrive here already translated (translators/), as the
encoded Messages API request and Anthropic's Message or stream events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from inference_operator.anthropic.errors import AnthropicError
from inference_operator.anthropic.replies import usage_object
from inference_operator.anthropic.stream import MessageStream
from inference_operator.clock import Clock
from inference_operator.gateway import errors
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics, Usage
from inference_operator.gateway.org_limits import Reservation
from inference_operator.gateway.retry import RetryPolicy, run_with_retries
from inference_operator.gateway.timeunits import Deadline, TimeValue
from inference_operator.gateway.tracing import RequestTrace
from inference_operator.gateway.translators.base import Translator
from inference_operator.gateway.upstream_failures import es_error, verdict

log = logging.getLogger(__name__)
T = TypeVar("T")


class Admission(Protocol):
    async def admit(self, endpoint: Endpoint, *, priority: bool, body_bytes: int,
                    max_tokens: int, deadline: Deadline | None) -> Reservation:
        """Return when the endpoint's next attempt may be made (``priority``: a retry),
        with what it reserved to be settled from the answer; ESError to refuse the
        request instead (at once when it cannot be admitted before ``deadline``)."""


@dataclass(frozen=True)
class UpstreamRequest:
    """An encoded Messages API request (``client.encode``), all a request keeps while it
    waits, and the ``max_tokens`` it asks for (what admission reserves)."""

    body: bytes
    max_tokens: int


@dataclass(frozen=True)
class Pipeline:
    admission: Admission
    retry: RetryPolicy
    metrics: GatewayMetrics
    clock: Clock

    async def complete(self, endpoint: Endpoint, translator: Translator,
                       request: UpstreamRequest, time_limit: TimeValue,
                       usage: Usage | None = None,
                       trace: RequestTrace | None = None) -> dict[str, Any]:
        """The Message for a request. ``usage``: where this request's token counts are
        added (the caller's metrics, the access log); ``trace``: its spans, when tracing
        is on."""
        message, _ = await self._within(
            time_limit, self._call(endpoint, request, False, time_limit, trace))
        self.metrics.count_tokens(endpoint.inference_id, *translator.usage(message), usage)
        return message

    async def stream(self, endpoint: Endpoint, translator: Translator,
                     request: UpstreamRequest, time_limit: TimeValue,
                     usage: Usage | None = None, trace: RequestTrace | None = None
                     ) -> AsyncGenerator[dict[str, Any], None]:
        """Open the upstream stream of a request (encoded with ``stream=True``) within
        the timeout (errors raise here), then return its events as they arrive; later
        failures raise ESError from the iterator."""
        upstream, ticket = await self._within(
            time_limit, self._call(endpoint, request, True, time_limit, trace))
        return self._events(endpoint, translator, upstream, ticket, usage, trace)

    async def _events(self, endpoint: Endpoint, translator: Translator,
                      upstream: MessageStream, ticket: Reservation, usage: Usage | None,
                      trace: RequestTrace | None) -> AsyncGenerator[dict[str, Any], None]:
        attempt = None if trace is None else trace.stream
        failure = None
        try:
            async for event in upstream.events():
                ticket.usage(usage_object(event))
                reported = translator.event_usage(event)
                if reported is not None:
                    self.metrics.count_tokens(endpoint.inference_id, *reported, usage)
                if attempt is not None:
                    attempt.event(event)
                yield event
        except AnthropicError as error:
            self.metrics.upstream.labels(endpoint.inference_id, error.label).inc()
            failure = error.label
            ticket.failed(error)
            raise self._failure(endpoint, error) from None
        except BaseException:  # the client went away, or a bug
            failure = "cancelled"
            raise
        finally:
            # Also runs when the client went away: closing drops the upstream connection.
            upstream.close()
            ticket.ended()
            if attempt is not None and trace is not None:
                trace.stream = None
                attempt.end(failure)

    async def _call(self, endpoint: Endpoint, request: UpstreamRequest, stream: bool,
                    time_limit: TimeValue, trace: RequestTrace | None) -> tuple[Any, Reservation]:
        """The answer (a Message, or an open stream) and the reservation behind it."""
        clock = self.clock
        deadline = None if time_limit.seconds is None else clock.now() + time_limit.seconds
        inference_id = endpoint.inference_id
        body = request.body
        first = None if deadline is None else Deadline(deadline, time_limit.text)
        ticket = await self._admit(endpoint, False, request, trace, first)

        async def attempt() -> Any:
            try:
                return await traced_attempt()
            except AnthropicError as error:
                ticket.failed(error)
                raise
            except BaseException:  # the request's timeout, or its client went away
                ticket.ended()
                raise

        async def traced_attempt() -> Any:
            if trace is None:
                return await self._attempt(endpoint, ticket, body, stream)
            traced = trace.attempt()
            try:
                result = await self._attempt(endpoint, ticket, body, stream, traced.headers)
            except AnthropicError as error:
                traced.failed(error.label)
                raise
            except BaseException:  # the request's timeout, or its client went away
                traced.failed("cancelled")
                raise
            if stream:
                trace.stream = traced  # ended with the stream's last event (_events)
            else:
                traced.answered(result)
            return result

        async def before_retry(error: AnthropicError, delay: float) -> None:
            nonlocal ticket
            self.metrics.retries.labels(inference_id, error.label).inc()
            log.info("retrying [%s] after upstream %s in %.2fs", inference_id, error.label,
                     delay)
            await asyncio.sleep(delay)
            ticket = await self._admit(endpoint, True, request, trace)

        try:
            result = await run_with_retries(self.retry, attempt, retry_on=AnthropicError,
                                            judge=verdict, before_retry=before_retry,
                                            now=clock.now, deadline=deadline)
        except AnthropicError as error:
            raise self._failure(endpoint, error) from None
        return result, ticket

    async def _attempt(self, endpoint: Endpoint, ticket: Reservation, body: bytes, stream: bool,
                       headers: dict[str, str] | None = None) -> Any:
        try:
            if stream:
                return_value: Any = await endpoint.client.stream(body, headers,
                                                                 ticket.answered)
            else:
                return_value = await endpoint.client.create(body, headers, ticket.answered)
                ticket.usage(return_value.get("usage"))
                ticket.ended()
        except AnthropicError as error:
            self.metrics.upstream.labels(endpoint.inference_id, error.label).inc()
            raise
        self.metrics.upstream.labels(endpoint.inference_id, "200").inc()
        return return_value

    async def _admit(self, endpoint: Endpoint, priority: bool, request: UpstreamRequest,
                     trace: RequestTrace | None, deadline: Deadline | None = None) -> Reservation:
        """``deadline``: the first attempt's (a retry is never refused for it)."""
        admit = self.admission.admit(endpoint, priority=priority,
                                     body_bytes=len(request.body),
                                     max_tokens=request.max_tokens, deadline=deadline)
        if trace is None:
            return await admit
        started = self.clock.now()
        try:
            ticket = await admit
        except ESError as refused:
            trace.admission(refused.type, self.clock.now() - started)
            raise
        except BaseException:  # the request's timeout, or its client went away
            trace.admission("cancelled", self.clock.now() - started)
            raise
        trace.admission("admitted", self.clock.now() - started)
        return ticket

    @staticmethod
    def _failure(endpoint: Endpoint, error: AnthropicError) -> ESError:
        failure = es_error(error, endpoint.inference_id, endpoint.api_key.get_secret_value())
        log.warning("upstream call for [%s] failed: %s", endpoint.inference_id, failure)
        return failure

    @staticmethod
    async def _within(time_limit: TimeValue, work: Awaitable[T]) -> T:
        """Run ``work`` under the request's timeout (queue wait plus the upstream call)."""
        if time_limit.seconds is None:
            return await work
        limit = asyncio.timeout(time_limit.seconds)
        try:
            async with limit:
                return await work
        except TimeoutError:
            if limit.expired():
                raise errors.timed_out(time_limit.text) from None
            raise

