"""An organisation's rate limits, enforced the way Anthropic documents them
(docs/emulator.md "Organisation rate limits"), so a gateway's admission can be tested
offline against the real rules:

- requests, input tokens and output tokens per minute, each a token bucket refilled
  continuously up to its per-minute limit, one set per model class (Sonnet 4 and 4.5
  share one, as on the real API);
- a request's input tokens are charged and its ``max_tokens`` reserved against the output
  limit when it is admitted; the unused part is refunded when the answer ends;
- every answer carries ``anthropic-ratelimit-*-limit/-remaining/-reset``; one that does
  not fit gets 429 ``rate_limit_error`` naming the limit, with ``retry-after``;
- optionally, the monthly spend limit reached (429 without ``retry-after``, never
  retryable), and an unseen other user of the organisation using a share of every limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inference_operator.anthropic.errors import SPEND_LIMIT_CODE
from inference_operator.anthropic.model_classes import model_class
from inference_operator.clock import SYSTEM_CLOCK, Clock
from inference_operator.emulator.wire import error_body

DOCS = "https://docs.claude.com/en/api/rate-limits"


class Rates(BaseModel):
    """Per-minute limits of one model class; an unset one is not limited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1)
    input_tokens_per_minute: int | None = Field(default=None, ge=1)
    output_tokens_per_minute: int | None = Field(default=None, ge=1)


class OrgLimits(Rates):
    """The organisation's limits: the same for every model class unless ``classes``
    names one (``sonnet-4``, ``haiku-4``, ...: ``model_class`` says which a model is in)."""

    classes: dict[str, Rates] = Field(default_factory=dict)
    other_user_share: float = Field(
        default=0.0, ge=0, lt=1,
        description="share of every limit an unseen user of the organisation keeps using")
    spend_limit_reached: bool = Field(
        default=False, description="every request gets the spend limit's 429")
    round_remaining: bool = Field(
        default=True, description="token remaining headers rounded to the nearest thousand, "
                                  "as Anthropic sends them")

    def rates(self, model_class: str) -> Rates:
        return self.classes.get(model_class, self)


@dataclass
class Bucket:
    """A per-minute limit as a token bucket: holds up to ``limit``, refills ``limit`` a
    minute, less what the other user takes."""

    limit: int
    refill_per_second: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + self.refill_per_second * (now - self.at))
        self.at = now

    def wait_for(self, cost: int) -> float:
        """Seconds until ``cost`` fits (for one larger than the bucket: until it is full)."""
        return max(0.0, min(cost, self.limit) - self.level) / self.refill_per_second

    def until_full(self) -> float:
        return (self.limit - self.level) / self.refill_per_second


# The three dimensions: their header names and the words of a 429's message.
DIMENSIONS = (
    ("requests", "requests_per_minute", "requests"),
    ("input-tokens", "input_tokens_per_minute", "input tokens"),
    ("output-tokens", "output_tokens_per_minute", "output tokens"),
)


@dataclass
class Refusal:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Admission:
    """A request let in: its output reservation is settled once, when it ends."""

    headers: dict[str, str]
    _output: Bucket | None
    _reserved: int
    _clock: Clock
    _settled: bool = False

    def settle(self, output_tokens: int) -> None:
        """Refunds what of ``max_tokens`` the answer did not use (all of it for one that
        failed before its first token)."""
        if self._settled or self._output is None:
            return
        self._settled = True
        self._output.refill(self._clock.now())
        self._output.level = min(self._output.limit,
                                 self._output.level + max(0, self._reserved - output_tokens))


@dataclass
class Organisation:
    limits: OrgLimits
    clock: Clock = SYSTEM_CLOCK
    # Only for the reset headers' RFC 3339 times.
    wall_clock: Callable[[], float] = time.time
    _buckets: dict[str, dict[str, Bucket]] = field(default_factory=dict)

    def buckets(self, name: str) -> dict[str, Bucket]:
        """The buckets of model class ``name`` that are limited, by header name, refilled
        to now."""
        buckets = self._buckets.get(name)
        now = self.clock.now()
        if buckets is None:
            rates = self.limits.rates(name)
            share = 1 - self.limits.other_user_share
            buckets = self._buckets[name] = {
                header: Bucket(limit, limit * share / 60, float(limit), now)
                for header, attribute, _ in DIMENSIONS
                if (limit := getattr(rates, attribute)) is not None
            }
        for bucket in buckets.values():
            bucket.refill(now)
        return buckets

    def admit(self, model: str, input_tokens: int, max_tokens: int) -> Admission | Refusal:
        if self.limits.spend_limit_reached:
            return self._spend_limit()
        buckets = self.buckets(model_class(model))
        costs = {"requests": 1, "input-tokens": input_tokens, "output-tokens": max_tokens}
        short = [(bucket.wait_for(costs[header]), header) for header, bucket in buckets.items()
                 if bucket.level < costs[header]]
        if short:
            wait, header = max(short)
            return self._rate_limited(model, header, wait, buckets)
        for header, bucket in buckets.items():
            bucket.level -= costs[header]
        return Admission(self._headers(buckets), buckets.get("output-tokens"), max_tokens,
                         self.clock)

    def state(self) -> dict[str, Any]:
        """Each class seen so far: limit and level of each bucket, now."""
        return {name: {header: {"limit": bucket.limit, "remaining": math.floor(bucket.level)}
                       for header, bucket in self.buckets(name).items()}
                for name in list(self._buckets)}

    def _rate_limited(self, model: str, header: str, wait: float,
                      buckets: dict[str, Bucket]) -> Refusal:
        limit = buckets[header].limit
        words = next(words for name, _, words in DIMENSIONS if name == header)
        message = (f"This request would exceed the rate limit for your organization of "
                   f"{limit:,} {words} per minute (model: {model}). For details, refer to: "
                   f"{DOCS}. You can see the response headers for current usage. Please "
                   f"reduce the prompt length or the maximum tokens requested, or try again "
                   f"later.")
        body = error_body(429, message)
        headers = {**self._headers(buckets), "retry-after": str(max(1, math.ceil(wait))),
                   "x-should-retry": "true"}
        return Refusal(429, body, headers)

    def _spend_limit(self) -> Refusal:
        body = error_body(429, "You have reached your organization's monthly usage limit. "
                               "Your access will resume at the start of next month.")
        body["error"]["details"] = {"error_code": SPEND_LIMIT_CODE}
        return Refusal(429, body, {"x-should-retry": "false"})

    def _headers(self, buckets: dict[str, Bucket]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for header, bucket in buckets.items():
            tokens = header != "requests"
            headers |= self._triple(header, bucket.limit, bucket.level, bucket.until_full(),
                                    tokens)
        # "tokens": the most restrictive token limit in effect; without workspace limits,
        # input and output together.
        token_buckets = [b for h, b in buckets.items() if h != "requests"]
        if token_buckets:
            headers |= self._triple("tokens", sum(b.limit for b in token_buckets),
                                    sum(b.level for b in token_buckets),
                                    max(b.until_full() for b in token_buckets), True)
        return headers

    def _triple(self, name: str, limit: int, level: float, until_full: float,
                tokens: bool) -> dict[str, str]:
        remaining = max(0, math.floor(level))
        if tokens and self.limits.round_remaining:
            remaining = round(remaining, -3)
        reset = datetime.fromtimestamp(math.ceil(self.wall_clock() + until_full), UTC)
        prefix = f"anthropic-ratelimit-{name}"
        return {f"{prefix}-limit": str(limit), f"{prefix}-remaining": str(remaining),
                f"{prefix}-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ")}

