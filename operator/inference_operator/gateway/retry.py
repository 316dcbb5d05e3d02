"""The gateway's own retry policy (the SDK's retries are off): at most 3 attempts within
30 s, jittered exponential backoff from 1 s to 5 s, an upstream ``retry-after`` honoured.
Mirrors Elasticsearch's RetryingHttpSender, with the delay drawn from [bound/2, bound]."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    budget: float = 30.0  # seconds from the first attempt; no retry starts after it
    initial_delay: float = 1.0
    max_delay: float = 5.0
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based) without an upstream hint."""
        bound = min(self.initial_delay * 2 ** (retry - 1), self.max_delay)
        return bound / 2 + self.jitter() * bound / 2


@dataclass(frozen=True)
class Verdict:
    retryable: bool
    retry_after: float | None = None  # the upstream's hint, in seconds


NOT_RETRIED = Verdict(False)


async def run_with_retries(
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: type[E],
    judge: Callable[[E], Verdict],
    before_retry: Callable[[E, float], Awaitable[None]],
    now: Callable[[], float],
    deadline: float | None,
) -> T:
    """Call ``attempt`` until it succeeds or may not be retried; re-raise the last error.

    Only ``retry_on`` errors are judged; any other exception (a bug) passes at once.
    A retry is skipped (and the error returned at once) when its delay would end past the
    budget or past the caller's deadline: the upstream's error is more useful than a 408.
    ``before_retry(error, delay)`` sleeps and takes a rate-limit token."""
    started = now()
    for number in range(1, policy.max_attempts + 1):
        try:
            return await attempt()
        except retry_on as error:
            verdict = judge(error)
            if not verdict.retryable or number == policy.max_attempts:
                raise
            delay = verdict.retry_after
            if delay is None:
                delay = policy.backoff(number)
            resume = now() + delay
            if resume > started + policy.budget or (deadline is not None and resume > deadline):
                raise
            await before_retry(error, delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
