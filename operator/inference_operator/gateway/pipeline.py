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
from inference_operator.anthropic.stream import MessageStream
from inference_operator.clock import Clock
from inference_operator.gateway import errors
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics, Usage
from inference_operator.gateway.retry import RetryPolicy, run_with_retries
from inference_operator.gateway.timeunits import TimeValue
from inference_operator.gateway.tracing import RequestTrace
from inference_operator.gateway.translators.base import Translator
from inference_operator.gateway.upstream_failures import es_error, verdict

log = logging.getLogger(__name__)
T = TypeVar("T")


class Admission(Protocol):
    async def admit(self, endpoint: Endpoint, *, priority: bool) -> None:
        """Return when the endpoint's next attempt may be made (``priority``: a retry);
        ESError to refuse the request instead."""


@dataclass(frozen=True)
class Pipeline:
    admission: Admission
    retry: RetryPolicy
    metrics: GatewayMetrics
    clock: Clock

    async def complete(self, endpoint: Endpoint, translator: Translator, body: bytes,
                       time_limit: TimeValue, usage: Usage | None = None,
                       trace: RequestTrace | None = None) -> dict[str, Any]:
        """The Message for an encoded Messages API request (``client.encode``): all a
        request keeps while it waits. ``usage``: where this request's token counts are
        added (the caller's metrics, the access log); ``trace``: its spans, when tracing
        is on."""
        message = await self._within(time_limit,
                                     self._call(endpoint, body, False, time_limit, trace))
        self.metrics.count_tokens(endpoint.inference_id, *translator.usage(message), usage)
        return message

    async def stream(self, endpoint: Endpoint, translator: Translator, body: bytes,
                     time_limit: TimeValue, usage: Usage | None = None,
                     trace: RequestTrace | None = None
                     ) -> AsyncGenerator[dict[str, Any], None]:
        """Open the upstream stream of an encoded request (``client.encode(...,
        stream=True)``) within the timeout (errors raise here), then return its events as
        they arrive; later failures raise ESError from the iterator."""
        upstream = await self._within(time_limit,
                                      self._call(endpoint, body, True, time_limit, trace))
        return self._events(endpoint, translator, upstream, usage, trace)

    async def _events(self, endpoint: Endpoint, translator: Translator,
                      upstream: MessageStream, usage: Usage | None,
                      trace: RequestTrace | None) -> AsyncGenerator[dict[str, Any], None]:
        attempt = None if trace is None else trace.stream
        failure = None
        try:
            async for event in upstream.events():
                reported = translator.event_usage(event)
                if reported is not None:
                    self.metrics.count_tokens(endpoint.inference_id, *reported, usage)
                if attempt is not None:
                    attempt.event(event)
                yield event
        except AnthropicError as error:
            self.metrics.upstream.labels(endpoint.inference_id, error.label).inc()
            failure = error.label
            raise self._failure(endpoint, error) from None
        except BaseException:  # the client went away, or a bug
            failure = "cancelled"
            raise
        finally:
            # Also runs when the client went away: closing drops the upstream connection.
            upstream.close()
            if attempt is not None and trace is not None:
                trace.stream = None
                attempt.end(failure)

    async def _call(self, endpoint: Endpoint, body: bytes, stream: bool,
                    time_limit: TimeValue, trace: RequestTrace | None) -> Any:
        clock = self.clock
        deadline = None if time_limit.seconds is None else clock.now() + time_limit.seconds
        inference_id = endpoint.inference_id
        await self._admit(endpoint, False, trace)

        async def attempt() -> Any:
            if trace is None:
                return await self._attempt(endpoint, body, stream)
            traced = trace.attempt()
            try:
                result = await self._attempt(endpoint, body, stream, traced.headers)
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
            self.metrics.retries.labels(inference_id, error.label).inc()
            log.info("retrying [%s] after upstream %s in %.2fs", inference_id, error.label,
                     delay)
            await asyncio.sleep(delay)
            await self._admit(endpoint, True, trace)

        try:
            return await run_with_retries(self.retry, attempt, retry_on=AnthropicError,
                                          judge=verdict, before_retry=before_retry,
                                          now=clock.now, deadline=deadline)
        except AnthropicError as error:
            raise self._failure(endpoint, error) from None

    async def _attempt(self, endpoint: Endpoint, body: bytes, stream: bool,
                       headers: dict[str, str] | None = None) -> Any:
        try:
            result = await (endpoint.client.stream(body, headers) if stream
                            else endpoint.client.create(body, headers))
        except AnthropicError as error:
            self.metrics.upstream.labels(endpoint.inference_id, error.label).inc()
            raise
        self.metrics.upstream.labels(endpoint.inference_id, "200").inc()
        return result

    async def _admit(self, endpoint: Endpoint, priority: bool,
                     trace: RequestTrace | None) -> None:
        if trace is None:
            return await self.admission.admit(endpoint, priority=priority)
        started = self.clock.now()
        try:
            await self.admission.admit(endpoint, priority=priority)
        except ESError as refused:
            trace.admission(refused.type, self.clock.now() - started)
            raise
        except BaseException:  # the request's timeout, or its client went away
            trace.admission("cancelled", self.clock.now() - started)
            raise
        trace.admission("admitted", self.clock.now() - started)

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
