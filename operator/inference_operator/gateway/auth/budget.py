"""The budget of TokenReviews for tokens the gateway does not know: at most ``in_flight``
at once and ``per_second`` on average (a bucket holding one second's worth, so a burst of
new callers is not refused). Beyond it a fast 429 ``es_rejected_execution_exception``
with ``Retry-After``, as Elasticsearch answers when its queues are full (its clients
retry a 429); nothing waits, so a flood of made-up tokens holds no memory either. Known
callers (a decision kept, or a token that authenticated before) never spend from it."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from inference_operator.gateway import errors


class ReviewBudget:
    def __init__(self, in_flight: int, per_second: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if in_flight < 1 or per_second <= 0:
            raise ValueError("a review budget allows at least one review in flight and "
                             "more than none per second")
        self._free = in_flight
        self._rate = per_second
        self._capacity = max(1.0, per_second)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()

    @contextlib.contextmanager
    def spend(self) -> Iterator[None]:
        """Around one review; ESError 429 when the budget has none to give now."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._free < 1:
            raise errors.reviews_exhausted(1)
        if self._tokens < 1:
            raise errors.reviews_exhausted(math.ceil((1 - self._tokens) / self._rate))
        self._tokens -= 1
        self._free -= 1
        try:
            yield
        finally:
            self._free += 1
