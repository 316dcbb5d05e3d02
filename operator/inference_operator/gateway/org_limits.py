"""The organisation limits of one API key and model class, as the gateway learns them from
Anthropic's answers, shared by every endpoint on that key (docs/gateway.md "Organisation
limits").

Anthropic admits a request when each of its token buckets covers it (one request, the
input tokens, ``max_tokens`` reserved against output), refills them continuously up to
the per-minute limit, and refunds the unused output at the end. The gateway does the same
one step ahead, so that Anthropic has nothing to refuse:

- the limits come from the ``anthropic-ratelimit-*-limit`` headers; until an answer tells
  them, requests go unchecked (as before this budget existed: holding them back until the
  first answer would hold every request on the key behind one long generation);
- each answer clamps the local level to its ``-remaining``, moved on by the refill since
  the request was sent: other users of the organisation show there;
- input is estimated from the request's size times a ratio learned from ``usage``, and
  corrected when ``usage`` arrives; output is reserved whole and the unused part refunded;
- a safety factor on every limit shrinks on a 429 and recovers slowly;
- a 429's ``retry-after`` pauses the budget for everyone, and a 529 too (a jittered,
  growing pause that leaves the limits alone: overload is Anthropic's, not ours);
- with N ready gateways (``--peers-service``) each holds 1/N of every limit, so that
  together they stay within it: each learns the whole limit and clamps to the whole
  ``remaining``, but spends only its share; with peer admission the budget's owner holds
  it whole and the others reserve from it (peering/routing.py);
- a limit declared ahead (``--org-limit``, a ``Ceiling``) holds from the start, before
  any answer, and a learned one is never taken above it.

Waiters are served first come, first served (retries first), as the endpoint's own
request-rate bucket (ratelimit.py) serves them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference_operator.anthropic.errors import AnthropicError, NoConnection, StatusError
from inference_operator.anthropic.model_classes import model_class
from inference_operator.clock import Clock
from inference_operator.gateway.peering import owners
from inference_operator.gateway.ratelimit import QueueFull

log = logging.getLogger(__name__)

REQUESTS, INPUT, OUTPUT = "requests", "input-tokens", "output-tokens"
LIMITS = (REQUESTS, INPUT, OUTPUT)
# A first guess on the safe side (English runs nearer 4 bytes a token); the ratio of what
# usage reports to it is learned per budget.
BYTES_PER_TOKEN = 3
# How fast the learned input ratio follows lower observations (a higher one is taken at
# once): a few dozen answers.
RATIO_DECAY = 0.95
SAFETY_SHRINK = 0.8  # the factor on every limit after a 429
SAFETY_FLOOR = 0.5
SAFETY_RECOVERY = 0.05  # per minute without a 429, up to 1
OVERLOAD_PAUSE = (1.0, 8.0)  # a 529's pause: from 1 s, doubling per 529 in a row, at most 8 s


class TooLarge(Exception):
    """A request Anthropic would never admit: it reserves more output than a minute holds."""

    def __init__(self, need: int, limit: int, model_class: str) -> None:
        self.limit = limit
        super().__init__(
            f"max_tokens [{need}] is more than the organisation's limit of {limit:,} output "
            f"tokens per minute for model class [{model_class}]: Anthropic would refuse it")


@dataclass(frozen=True)
class Cost:
    requests: int
    input_tokens: int
    output_tokens: int

    def of(self, limit: str) -> int:
        return {REQUESTS: self.requests, INPUT: self.input_tokens,
                OUTPUT: self.output_tokens}[limit]


@dataclass(frozen=True)
class Ceiling:
    """An organisation limit declared before any answer tells it: one model class's
    requests, input or output tokens per minute."""

    model_class: str
    limit: str
    per_minute: int

    @classmethod
    def parse(cls, text: str) -> Ceiling:
        """``CLASS:LIMIT=N``, e.g. ``sonnet-4:output-tokens=80000``; ValueError saying
        what is wrong otherwise."""
        model_class, _, rest = text.partition(":")
        limit, _, number = rest.partition("=")
        if not model_class or not number:
            raise ValueError(f"{text!r}: expected CLASS:LIMIT=N, e.g. "
                             "sonnet-4:output-tokens=80000")
        if limit not in LIMITS:
            raise ValueError(f"{text!r}: the limit is one of {', '.join(LIMITS)}")
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"{text!r}: the limit per minute is a whole number from 1")
        return cls(model_class, limit, int(number))


@dataclass(eq=False)
class Waiter:
    cost: Cost
    body_bytes: int
    future: asyncio.Future[Ticket]


@dataclass
class Level:
    """One per-minute limit as a token bucket, held at ``factor`` of the limit."""

    limit: int
    level: float
    at: float

    def refill(self, now: float, factor: float) -> None:
        capacity = self.limit * factor
        self.level = min(capacity, self.level + self.per_second(factor) * (now - self.at))
        self.at = now

    def per_second(self, factor: float) -> float:
        return self.limit * factor / 60

    def wait_for(self, cost: int, factor: float) -> float:
        """Seconds until ``cost`` fits (one larger than the bucket: until it is full)."""
        need = min(cost, self.limit * factor)
        return max(0.0, need - self.level) / self.per_second(factor)


# What a budget takes from its limits and gives back, counted (metrics.py):
# (RESERVED or REFUNDED, model class, limit, amount).
Tally = Callable[[str, str, str, float], None]
RESERVED, REFUNDED = "reserved", "refunded"


class OrgBudget:
    def __init__(self, name: str, model_class: str, clock: Clock, queue_capacity: int,
                 jitter: Callable[[], float] = random.random, *, learn: bool = True,
                 share: float = 1.0, ceilings: Mapping[str, int] | None = None,
                 group_id: str = "", tally: Tally | None = None) -> None:
        """``learn`` False: no limit is ever learned, so the budget admits everything;
        ``share``: of every limit, this gateway's; ``ceilings``: per limit, what it is
        until an answer tells it, and at most after; ``group_id``: its name among peers;
        ``tally``: where what it reserves and refunds is counted."""
        self.name = name  # shown in errors and logs: never derived from the key
        self.group_id = group_id
        self._tally = tally or (lambda event, model_class, limit, amount: None)
        self._learn = learn
        self.model_class = model_class
        self._clock = clock
        self._capacity = queue_capacity
        self._jitter = jitter
        self.safety = 1.0
        self.share = share  # of every limit, this gateway's: 1 / the ready gateways
        self._ceilings = dict(ceilings or {})
        # The limits known so far: declared, then learned.
        self.levels: dict[str, Level] = {
            name: Level(per_minute, per_minute * self._factor, clock.now())
            for name, per_minute in self._ceilings.items()}
        self._safety_at = clock.now()
        self._paused_until = -math.inf
        self._overloads = 0  # 529s in a row
        self._input_ratio = 1.0
        # Anthropic's last word was the spend-limit 429, and no answer came since.
        self.spend_limit_reached = False
        self._waiters: deque[Waiter] = deque()
        self._dispatcher: asyncio.Task[None] | None = None

    def cost(self, body_bytes: int, max_tokens: int) -> Cost:
        return Cost(1, max(1, math.ceil(body_bytes / BYTES_PER_TOKEN * self._input_ratio)),
                    max_tokens)

    def queued(self) -> int:
        return len(self._waiters)

    @property
    def _factor(self) -> float:
        """What every limit is held at here: the safety factor, of this gateway's share."""
        return self.safety * self.share

    def reshare(self, share: float) -> None:
        """Hold ``share`` of every limit from now on (levels above it fall to it)."""
        self._refill(self._clock.now())
        self.share = share
        self._refill(self._clock.now())
        self._wake()

    def utilisation(self) -> dict[str, tuple[int, float]]:
        """Each learned limit and the share of it in use (reserved, or not refilled yet)."""
        self._refill(self._clock.now())
        return {name: (level.limit, 1 - max(0.0, level.level) / (level.limit * self.share))
                for name, level in self.levels.items()}

    def try_reserve(self, cost: Cost, body_bytes: int) -> Ticket | None:
        """A reservation at once if the cost fits and nobody waits; never waits."""
        if self._waiters or self._delay(cost, self._clock.now()) > 0:
            return None
        return self._grant(cost, body_bytes)

    async def reserve(self, cost: Cost, body_bytes: int, *, priority: bool = False) -> Ticket:
        """Wait until ``cost`` fits; ``priority`` (a retry) goes to the head of the queue
        and is never refused. TooLarge for a cost no minute holds."""
        ticket = self.try_reserve(cost, body_bytes)
        if ticket is not None:
            return ticket
        if not priority and 0 < self._capacity <= len(self._waiters):
            raise QueueFull(self.name, max(1, math.ceil(self._delay(cost, self._clock.now()))))
        entry = Waiter(cost, body_bytes, asyncio.get_running_loop().create_future())
        if priority:
            self._waiters.appendleft(entry)
        else:
            self._waiters.append(entry)
        self._wake()
        try:
            return await entry.future
        except asyncio.CancelledError:
            if entry.future.done() and not entry.future.cancelled():  # granted meanwhile
                entry.future.result().release()
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def check(self, cost: Cost) -> None:
        """TooLarge for what no minute of the learned limits holds."""
        output = self.levels.get(OUTPUT)
        if output is not None and cost.output_tokens > output.limit:
            raise TooLarge(cost.output_tokens, output.limit, self.model_class)

    def _delay(self, cost: Cost, now: float) -> float:
        """Seconds until ``cost`` fits."""
        if now < self._paused_until:
            return self._paused_until - now
        self._refill(now)
        return max((level.wait_for(cost.of(name), self._factor)
                    for name, level in self.levels.items()), default=0.0)

    def _refill(self, now: float) -> None:
        if self.safety < 1:
            self.safety = min(1.0, self.safety + SAFETY_RECOVERY * (now - self._safety_at) / 60)
        self._safety_at = now
        for level in self.levels.values():
            level.refill(now, self._factor)

    def _grant(self, cost: Cost, body_bytes: int) -> Ticket:
        for name, level in self.levels.items():
            level.level -= cost.of(name)
            self._tally(RESERVED, self.model_class, name, cost.of(name))
        return Ticket(self, cost, body_bytes, self._clock.now(), frozenset(self.levels))

    def _wake(self) -> None:
        """(Re)start the dispatcher: something changed that may let the head in sooner.
        It is only ever cancelled while asleep."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        if self._waiters:
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"budget {self.name}")

    async def _dispatch(self) -> None:
        try:
            while self._waiters:
                head = self._waiters[0]
                if head.future.done():
                    self._waiters.popleft()
                    continue
                try:
                    self.check(head.cost)  # limits learned while it waited
                except TooLarge as error:
                    self._waiters.popleft()
                    head.future.set_exception(error)
                    continue
                delay = self._delay(head.cost, self._clock.now())
                if delay > 0:
                    await self._clock.sleep(delay)
                    continue
                self._waiters.popleft()
                head.future.set_result(self._grant(head.cost, head.body_bytes))
        finally:
            if self._dispatcher is asyncio.current_task():
                self._dispatcher = None

    # What an answer tells (Ticket calls these).

    def observe(self, headers: Mapping[str, str], sent_at: float) -> None:
        """Learn the limits from an answer's headers and clamp each level to what
        Anthropic says remains, moved on by the refill since ``sent_at``."""
        if not self._learn:
            return
        now = self._clock.now()
        self._refill(now)
        for name in LIMITS:
            limit = _header_int(headers, f"anthropic-ratelimit-{name}-limit")
            remaining = _header_int(headers, f"anthropic-ratelimit-{name}-remaining")
            if limit is None or limit < 1 or remaining is None:
                continue
            limit = min(limit, self._ceilings.get(name, limit))
            level = self.levels.get(name)
            if level is None:
                # This gateway's share of what remains: the others start with theirs.
                level = self.levels[name] = Level(limit, remaining * self.share, now)
                log.info("organisation limit for [%s]: %d %s per minute", self.name, limit,
                         name.replace("-", " "))
            elif level.limit != limit:
                log.info("organisation limit for [%s] changed: %d %s per minute (was %d)",
                         self.name, limit, name.replace("-", " "), level.limit)
                level.limit = limit
            # Anthropic's remaining is the whole organisation's, refilled at the whole
            # rate: what the other gateways and users spent shows there, so it bounds
            # this share as it is.
            level.level = min(level.level, limit * self._factor,
                              remaining + level.per_second(self.safety) * (now - sent_at))
        self._wake()

    def answered(self, headers: Mapping[str, str], sent_at: float) -> None:
        self.observe(headers, sent_at)
        self._overloads = 0
        if self.spend_limit_reached:
            self.spend_limit_reached = False
            log.info("Anthropic answers requests of [%s] again: its spend limit no longer "
                     "refuses them", self.name)

    def spend_limited(self) -> None:
        """Anthropic refused for the organisation's spend limit: shown (metrics, and the
        endpoints' status through the operator) until an answer comes again."""
        if not self.spend_limit_reached:
            self.spend_limit_reached = True
            log.warning("Anthropic refuses requests of [%s]: the organisation's spend limit "
                        "is reached", self.name)

    def rate_limited(self, retry_after: float | None) -> None:
        """Anthropic refused for a limit: everyone waits its ``retry-after``, and every
        limit is held lower for a while."""
        now = self._clock.now()
        self._refill(now)
        self.safety = max(SAFETY_FLOOR, self.safety * SAFETY_SHRINK)
        self._paused_until = max(self._paused_until, now + (retry_after or 1.0))
        log.warning("Anthropic refused a request of [%s] for a rate limit: every request of "
                    "its budget waits %.1fs, and its limits are held at %.0f%%", self.name,
                    self._paused_until - now, self.safety * 100)

    def overloaded(self) -> None:
        """A 529: everyone backs off together, jittered, longer for each in a row."""
        self._overloads += 1
        bound = min(OVERLOAD_PAUSE[0] * 2 ** (self._overloads - 1), OVERLOAD_PAUSE[1])
        pause = bound / 2 + self._jitter() * bound / 2
        self._paused_until = max(self._paused_until, self._clock.now() + pause)

    def refund(self, name: str, tokens: float) -> None:
        """Give back (or, negative, charge) ``tokens`` of a limit."""
        level = self.levels.get(name)
        if level is not None and tokens:
            level.refill(self._clock.now(), self._factor)
            level.level = min(level.limit * self._factor, level.level + tokens)
            self._tally(REFUNDED if tokens > 0 else RESERVED, self.model_class, name,
                        abs(tokens))
            self._wake()

    def learn_input(self, body_bytes: int, actual: int, charged: int | None) -> None:
        """``actual`` input tokens of a request of ``body_bytes``: the ratio learned, and
        what was ``charged`` for it (None: nothing) corrected."""
        if body_bytes > 0:
            observed = actual * BYTES_PER_TOKEN / body_bytes
            self._input_ratio = (observed if observed > self._input_ratio else
                                 RATIO_DECAY * self._input_ratio + (1 - RATIO_DECAY) * observed)
        if charged is not None:
            self.refund(INPUT, charged - actual)


@dataclass(eq=False)
class Ticket:
    """One attempt's reservation, settled once from what its answer says. ``charged``:
    the limits it was charged against (none before any was known)."""

    budget: OrgBudget
    cost: Cost
    body_bytes: int
    sent_at: float
    charged: frozenset[str]
    _answered: bool = field(default=False, init=False)
    _input_settled: bool = field(default=False, init=False)
    _output: int = field(default=0, init=False)  # generated so far, as the answer reports
    _ended: bool = field(default=False, init=False)

    def answered(self, headers: Mapping[str, str]) -> None:
        """The answer's status (200) and headers arrived: a Message, or a stream opening."""
        self._answered = True
        self.budget.answered(headers, self.sent_at)

    def usage(self, usage: Any) -> None:
        """A ``usage`` the answer reported (the Message's, or a stream's ``message_start``
        and ``message_delta``): the input estimate corrected once, and the output so far."""
        if not isinstance(usage, dict):
            return
        self._output = max(self._output, _int(usage.get("output_tokens")))
        actual = _int(usage.get("input_tokens")) + _int(usage.get("cache_creation_input_tokens"))
        if actual and not self._input_settled:
            self._input_settled = True
            self.budget.learn_input(self.body_bytes, actual,
                                    self.cost.input_tokens if INPUT in self.charged else None)

    def ended(self) -> None:
        """The answer ended, broke off or was abandoned: what of ``max_tokens`` it did not
        generate comes back, as Anthropic refunds it (also for a request let in before the
        limits were known: its reservation is in the remaining its answer reported)."""
        if not self._ended:
            self._ended = True
            self.budget.refund(OUTPUT, self.cost.output_tokens - self._output)

    def failed(self, error: AnthropicError) -> None:
        self.failure(*failure_of(error))

    def failure(self, kind: str, retry_after: float | None,
                headers: Mapping[str, str]) -> None:
        """The attempt failed (``kind``: failure_of's). A refusal (429, 529) was charged
        nothing, and pauses everyone unless it is the spend limit's (no wait cures that);
        after any other failure only the unused output comes back, since Anthropic may
        have counted the request and its input."""
        if headers:
            self.budget.observe(headers, self.sent_at)
        if kind == SPEND_LIMITED:
            self.budget.spend_limited()
        elif kind == RATE_LIMITED:
            self.budget.rate_limited(retry_after)
        elif kind == OVERLOADED:
            self.budget.overloaded()
        if kind == NOT_SENT or (kind in REFUSALS and not self._answered):
            return self.release()
        self.ended()

    def release(self) -> None:
        """Give back all it was charged: the attempt was never made, or refused before
        Anthropic counted it."""
        if self._ended:
            return
        self._ended = True
        for name in self.charged:
            self.budget.refund(name, self.cost.of(name))


SPEND_LIMITED, RATE_LIMITED, OVERLOADED, NOT_SENT, FAILED = (
    "spend_limited", "rate_limited", "overloaded", "not_sent", "failed")
REFUSALS = (SPEND_LIMITED, RATE_LIMITED, OVERLOADED)
FAILURES = (*REFUSALS, NOT_SENT, FAILED)


def failure_of(error: AnthropicError) -> tuple[str, float | None, dict[str, str]]:
    """What a failed attempt tells its budget: its kind, Anthropic's retry-after and the
    rate-limit headers (in a form a peer can be sent, peering/wire.py)."""
    if isinstance(error, NoConnection):  # never sent
        return NOT_SENT, None, {}
    if not isinstance(error, StatusError):
        return FAILED, None, {}
    headers = ratelimit_headers(error.headers)
    if error.spend_limit:
        return SPEND_LIMITED, None, headers
    if error.failure_status == 429:
        return RATE_LIMITED, error.retry_after, headers
    if error.failure_status == 529:
        return OVERLOADED, None, headers
    return FAILED, None, headers


_LEARNED_HEADERS = frozenset(f"anthropic-ratelimit-{name}-{kind}"
                             for name in LIMITS for kind in ("limit", "remaining"))


def ratelimit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Of an answer's headers, the rate-limit ones a budget learns from (observe): a few,
    so a peer can be sent them whatever else Anthropic adds."""
    return {name.lower(): value for name, value in headers.items()
            if name.lower() in _LEARNED_HEADERS and len(value) <= 64}


class Reservation(Protocol):
    """An attempt's reservation as the pipeline settles it: a Ticket of a budget here, or
    of the budget's owner among the peers (peering/links.py)."""

    def answered(self, headers: Mapping[str, str]) -> None: ...
    def usage(self, usage: Any) -> None: ...
    def ended(self) -> None: ...
    def failed(self, error: AnthropicError) -> None: ...
    def release(self) -> None: ...


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, TypeError, ValueError):
        return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


class OrgBudgets:
    """Hands out the shared budget of an (API key, model class). Budgets are held by the
    endpoints that use them (and by requests in flight) and vanish with the last one."""

    def __init__(self, clock: Clock, queue_capacity: int, *, learn: bool = True,
                 ceilings: Sequence[Ceiling] = (), tally: Tally | None = None) -> None:
        """ValueError for ceilings without learning, or one declared twice; ``tally``:
        where the budgets' reservations and refunds are counted."""
        if ceilings and not learn:
            raise ValueError("--org-limit declares organisation limits, which "
                             "--no-org-limits turns off")
        self._ceilings: dict[str, dict[str, int]] = {}
        for ceiling in ceilings:
            declared = self._ceilings.setdefault(ceiling.model_class, {})
            if ceiling.limit in declared:
                raise ValueError(f"--org-limit declares {ceiling.model_class}:"
                                 f"{ceiling.limit} twice")
            declared[ceiling.limit] = ceiling.per_minute
        self._clock = clock
        self._capacity = queue_capacity
        self._learn = learn
        self._tally = tally
        self._budgets: weakref.WeakValueDictionary[tuple[str, str], OrgBudget] = (
            weakref.WeakValueDictionary())
        self._groups: weakref.WeakValueDictionary[str, OrgBudget] = (
            weakref.WeakValueDictionary())
        self._ordinal = itertools.count(1)
        self.replicas = 1  # the ready gateways (--peers-service)
        # What a budget divides its limits by: the replicas, unless peer admission
        # (peering/routing.py) says otherwise budget by budget.
        self.divisor: Callable[[str], float] = lambda group_id: self.replicas

    def reshare(self, replicas: int | None = None) -> None:
        """Every budget to its share, after a change of the ready gateways (``replicas``)
        or of what ``divisor`` answers."""
        if replicas is not None:
            self.replicas = max(1, replicas)
        for budget in self.budgets():
            budget.reshare(1 / self.divisor(budget.group_id))

    def budgets(self) -> list[OrgBudget]:
        return list(self._budgets.values())

    def by_group(self, group_id: str) -> OrgBudget | None:
        return self._groups.get(group_id)

    def budget(self, api_key: str, model_id: str) -> OrgBudget:
        group = (api_key, model_class(model_id))
        budget = self._budgets.get(group)
        if budget is None:
            group_id = owners.group_id(api_key, group[1], 0)
            budget = OrgBudget(f"{group[1]}#{next(self._ordinal)}", group[1], self._clock,
                               self._capacity, learn=self._learn,
                               share=1 / self.divisor(group_id),
                               ceilings=self._ceilings.get(group[1]), group_id=group_id,
                               tally=self._tally)
            self._budgets[group] = self._groups[group_id] = budget
        return budget
