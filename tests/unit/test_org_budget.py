"""The gateway's organisation budget (gateway/org_limits.py): limits learned from
Anthropic's headers, levels clamped to what remains, input estimated and corrected,
max_tokens reserved and the unused part refunded, 429s and 529s pausing everyone.
Virtual time: a stepped FakeClock."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest
from controller_fakes import FakeClock
from multidict import CIMultiDict

from inference_operator.anthropic.errors import (
    SPEND_LIMIT_CODE,
    ConnectionFailed,
    NoConnection,
    StatusError,
)
from inference_operator.gateway.org_limits import (
    INPUT,
    OUTPUT,
    REQUESTS,
    Ceiling,
    Cost,
    OrgBudget,
    OrgBudgets,
    Ticket,
    TooLarge,
)
from inference_operator.gateway.ratelimit import QueueFull


def limits(requests: int = 600, input_tokens: int = 60_000, output_tokens: int = 6_000,
           **remaining: int) -> CIMultiDict[str]:
    """Anthropic's headers for these per-minute limits; ``remaining`` by limit
    (``input_tokens_remaining=...``), else full."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, limit in ((REQUESTS, requests), (INPUT, input_tokens), (OUTPUT, output_tokens)):
        left = remaining.get(f"{name.replace('-', '_')}_remaining", limit)
        headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(left)
        headers[f"anthropic-ratelimit-{name}-reset"] = "2026-12-07T00:00:00Z"
    return headers


def budget(clock: FakeClock, capacity: int = 100, jitter: float = 1.0) -> OrgBudget:
    return OrgBudget("sonnet-4#1", "sonnet-4", clock, capacity, jitter=lambda: jitter)


def learned(clock: FakeClock, **kwargs: Any) -> OrgBudget:
    """A budget whose limits an answer has told (all full unless ``kwargs`` say)."""
    org = budget(clock)
    ticket = org.try_reserve(Cost(1, 1, 1), 3)
    assert ticket is not None
    ticket.answered(limits(**kwargs))
    ticket.ended()
    return org


def level(org: OrgBudget, name: str) -> float:
    org.utilisation()  # refilled to now
    return org.levels[name].level


async def test_until_an_answer_tells_the_limits_every_request_goes() -> None:
    org = budget(FakeClock())
    tickets = [org.try_reserve(Cost(1, 10_000, 100_000), 30_000) for _ in range(50)]
    assert all(tickets)
    assert org.levels == {}


async def test_the_first_answer_tells_the_limits_and_its_own_reservation_is_in_remaining() -> None:
    clock = FakeClock()
    org = budget(clock)
    ticket = org.try_reserve(Cost(1, 100, 1_000), 300)
    assert ticket is not None
    ticket.answered(limits(output_tokens=6_000, output_tokens_remaining=5_000))
    assert level(org, OUTPUT) == 5_000
    ticket.usage({"input_tokens": 100, "output_tokens": 200})
    ticket.ended()
    # Anthropic refunds the 800 unused: so does the gateway.
    assert level(org, OUTPUT) == 5_800


async def test_a_cost_that_does_not_fit_waits_exactly_until_the_refill_covers_it() -> None:
    clock = FakeClock()
    org = learned(clock, output_tokens=6_000, output_tokens_remaining=1_000)  # 100 a second
    waiter = asyncio.create_task(org.reserve(Cost(1, 1, 1_500), 3))
    assert await clock.next_sleep() == pytest.approx(5.0, abs=0.02)
    await clock.advance(4.9)
    assert not waiter.done()
    await clock.advance(0.2)
    ticket = await waiter
    assert level(org, OUTPUT) == pytest.approx(11)  # 1,001 + 510 refilled - 1,500
    assert ticket.charged == {REQUESTS, INPUT, OUTPUT}


async def test_an_answer_clamps_the_level_to_remaining_plus_the_refill_since_it_was_sent() -> None:
    clock = FakeClock()
    org = learned(clock)  # output: 6,000 a minute, full
    ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
    assert ticket is not None
    await clock.advance(10)  # 1,000 refilled meanwhile; capped at the limit
    # Another user of the organisation took most of it: 500 remained when it was sent.
    ticket.answered(limits(output_tokens_remaining=500))
    assert level(org, OUTPUT) == pytest.approx(500 + 10 * 100)


async def test_a_remaining_above_the_local_level_does_not_raise_it() -> None:
    clock = FakeClock()
    org = learned(clock)
    held = [org.try_reserve(Cost(1, 1, 1_000), 3) for _ in range(5)]  # 5,000 reserved here
    assert all(held)
    ticket = held[0]
    assert ticket is not None
    # Sent before Anthropic saw the others: its remaining does not show them.
    ticket.answered(limits(output_tokens_remaining=5_000))
    assert level(org, OUTPUT) == 1_000


@pytest.mark.parametrize(("usage", "refunded"), [
    ({"input_tokens": 5, "output_tokens": 300}, 700),
    ({"input_tokens": 5, "output_tokens": 1_000}, 0),
    ({"input_tokens": 5}, 1_000),  # no output reported: none generated
])
async def test_the_unused_part_of_max_tokens_comes_back(usage: dict[str, int],
                                                         refunded: int) -> None:
    org = learned(FakeClock())
    ticket = org.try_reserve(Cost(1, 5, 1_000), 15)
    assert ticket is not None
    ticket.usage(usage)
    ticket.ended()
    ticket.ended()  # once only
    assert level(org, OUTPUT) == 5_000 + refunded


async def test_a_streams_output_is_the_last_count_reported() -> None:
    org = learned(FakeClock())
    ticket = org.try_reserve(Cost(1, 5, 1_000), 15)
    assert ticket is not None
    ticket.usage({"input_tokens": 5, "output_tokens": 1})  # message_start
    ticket.usage({"output_tokens": 420})  # message_delta
    ticket.ended()
    assert level(org, OUTPUT) == 5_000 + 580


async def test_input_is_estimated_from_the_size_and_corrected_from_usage() -> None:
    org = learned(FakeClock())
    assert org.cost(3_000, 10).input_tokens == 1_000  # 3 bytes a token at first
    ticket = org.try_reserve(org.cost(3_000, 10), 3_000)
    assert ticket is not None
    assert level(org, INPUT) == 59_000
    ticket.usage({"input_tokens": 400, "cache_creation_input_tokens": 100, "output_tokens": 1})
    # Charged what Anthropic counts (uncached input and cache writes), not the estimate.
    assert level(org, INPUT) == 59_500
    # A lower ratio is followed slowly; a higher one at once.
    assert 500 < org.cost(3_000, 10).input_tokens < 1_000
    ticket = org.try_reserve(org.cost(300, 10), 300)
    assert ticket is not None
    ticket.usage({"input_tokens": 200})
    assert org.cost(300, 10).input_tokens == 200


async def test_max_tokens_above_the_output_limit_is_refused_at_once() -> None:
    org = learned(FakeClock(), output_tokens=4_000)
    with pytest.raises(TooLarge, match=r"max_tokens \[8000\] is more than the organisation's "
                                       r"limit of 4,000 output tokens per minute"):
        org.check(Cost(1, 1, 8_000))
    org.check(Cost(1, 1, 4_000))


async def test_a_waiter_that_learns_it_can_never_fit_is_refused() -> None:
    clock = FakeClock()
    org = budget(clock)
    first = org.try_reserve(Cost(1, 1, 1), 3)
    assert first is not None
    org._paused_until = clock.now() + 5  # something holds the queue
    waiter = asyncio.create_task(org.reserve(Cost(1, 1, 8_000), 3))
    await clock.next_sleep()
    first.answered(limits(output_tokens=4_000))
    await clock.advance(5)
    with pytest.raises(TooLarge):
        await waiter


async def test_waiters_go_first_come_first_served_and_retries_first() -> None:
    clock = FakeClock()
    org = learned(clock, output_tokens=6_000, output_tokens_remaining=0)
    order: list[str] = []

    async def take(name: str, output: int, priority: bool = False) -> None:
        await org.reserve(Cost(1, 1, output), 3, priority=priority)
        order.append(name)

    tasks = [asyncio.create_task(take("big", 3_000))]
    await clock.next_sleep()
    tasks.append(asyncio.create_task(take("small", 10)))  # never overtakes the big one
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(take("retry", 10, priority=True)))
    for _ in range(40):
        await clock.advance(1)
    await asyncio.gather(*tasks)
    assert order == ["retry", "big", "small"]


async def test_a_full_queue_refuses_at_once_but_never_a_retry() -> None:
    clock = FakeClock()
    org = OrgBudget("sonnet-4#1", "sonnet-4", clock, 2)
    first = org.try_reserve(Cost(1, 1, 1), 3)
    assert first is not None
    first.answered(limits(requests=60, requests_remaining=0))
    waiters = [asyncio.create_task(org.reserve(Cost(1, 1, 1), 3)) for _ in range(2)]
    await clock.next_sleep()
    with pytest.raises(QueueFull) as full:
        await org.reserve(Cost(1, 1, 1), 3)
    assert full.value.retry_after == 1
    retry = asyncio.create_task(org.reserve(Cost(1, 1, 1), 3, priority=True))
    await clock.advance(1)
    assert retry.done() and not any(w.done() for w in waiters)
    for waiter in waiters:
        waiter.cancel()


async def test_a_waiter_that_gives_up_leaves_nothing_behind() -> None:
    clock = FakeClock()
    org = learned(clock, output_tokens_remaining=0)
    waiter = asyncio.create_task(org.reserve(Cost(1, 1, 1_000), 3))
    await clock.next_sleep()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert org.queued() == 0
    await clock.advance(60)
    assert level(org, OUTPUT) == 6_000


def status_error(status: int, headers: dict[str, str], error_type: str,
                 details: Any = None) -> StatusError:
    error: dict[str, Any] = {"type": error_type, "message": "no"}
    if details is not None:
        error["details"] = details
    return StatusError(status, CIMultiDict(headers), {"type": "error", "error": error})


async def test_a_429_pauses_everyone_for_its_retry_after_and_holds_the_limits_lower() -> None:
    clock = FakeClock()
    org = learned(clock)
    ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
    assert ticket is not None
    ticket.failed(status_error(429, {"retry-after": "7", **limits(output_tokens_remaining=0)},
                               "rate_limit_error"))
    # Refused before it was counted: its reservation comes back (onto remaining 0).
    assert level(org, OUTPUT) == 1_000
    assert org.safety == pytest.approx(0.8)
    assert org.try_reserve(Cost(1, 1, 1), 3) is None
    waiter = asyncio.create_task(org.reserve(Cost(1, 1, 1), 3))
    assert await clock.next_sleep() == pytest.approx(7)
    await clock.advance(7)
    await waiter
    # Recovers slowly: 4 minutes without a 429 bring it back to the whole limit.
    await clock.advance(113)
    org.utilisation()
    assert org.safety == pytest.approx(0.9)
    await clock.advance(120)
    org.utilisation()
    assert org.safety == 1.0


async def test_529s_pause_everyone_longer_each_time_without_touching_the_limits() -> None:
    clock = FakeClock()
    org = learned(clock)
    pauses = []
    for _ in range(5):
        ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
        if ticket is None:
            await clock.advance(org._paused_until - clock.now())
            ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
        assert ticket is not None
        ticket.failed(status_error(529, {}, "overloaded_error"))
        pauses.append(org._paused_until - clock.now())
    assert pauses == [1.0, 2.0, 4.0, 8.0, 8.0]  # jitter at its top here
    assert org.safety == 1.0
    assert level(org, OUTPUT) == pytest.approx(6_000)
    await clock.advance(8)
    ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
    assert ticket is not None
    ticket.answered(limits())
    ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
    assert ticket is not None
    ticket.failed(status_error(529, {}, "overloaded_error"))
    assert org._paused_until - clock.now() == 1.0  # an answer ended the run


@pytest.mark.parametrize(("error", "output_back", "requests_back"), [
    (NoConnection("pool full", 1.0), 1_000, 1),  # never sent
    (ConnectionFailed("reset"), 1_000, 0),  # may have been counted
    (status_error(500, {}, "api_error"), 1_000, 0),
    (status_error(429, {"x-should-retry": "false"}, "rate_limit_error",
                  {"error_code": SPEND_LIMIT_CODE}), 1_000, 1),  # refused
])
async def test_what_a_failure_gives_back(error: Exception, output_back: int,
                                         requests_back: int) -> None:
    clock = FakeClock()
    org = learned(clock)
    ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
    assert isinstance(ticket, Ticket)
    ticket.failed(error)  # type: ignore[arg-type]
    assert level(org, OUTPUT) == 5_000 + output_back
    assert level(org, REQUESTS) == 599 + requests_back
    assert org.safety == 1.0 and org._paused_until == -math.inf  # the spend limit: no pause


@pytest.mark.parametrize("learn", [True, False])
async def test_the_spend_limit_is_reached_from_its_429_to_the_next_answer(learn: bool) -> None:
    """What the operator shows as the SpendLimitReached condition, with --no-org-limits
    too; other refusals say nothing of it."""
    org = OrgBudget("sonnet-4#1", "sonnet-4", FakeClock(), 10, learn=learn)
    spend = status_error(429, {"x-should-retry": "false"}, "rate_limit_error",
                         {"error_code": SPEND_LIMIT_CODE})
    for error, reached in [(status_error(429, {"retry-after": "1"}, "rate_limit_error"), False),
                           (status_error(529, {}, "overloaded_error"), False),
                           (spend, True), (status_error(500, {}, "api_error"), True),
                           (spend, True)]:
        # A ticket of its own for each: the 429 and the 529 pause the budget.
        Ticket(org, Cost(1, 1, 10), 3, 0.0, frozenset()).failed(error)
        assert org.spend_limit_reached is reached, error
    Ticket(org, Cost(1, 1, 10), 3, 0.0, frozenset()).answered(limits())
    assert org.spend_limit_reached is False


async def test_what_a_budget_reserves_and_refunds_is_counted_by_model_class() -> None:
    tally: Counter[tuple[str, str, str]] = Counter()
    budgets = OrgBudgets(FakeClock(), 10, tally=lambda event, model_class, limit, amount:
                         tally.update({(event, model_class, limit): amount}))
    org = budgets.budget("key-a", "claude-sonnet-4-5")
    first = org.try_reserve(Cost(1, 1, 1), 3)
    assert first is not None
    first.answered(limits())  # learned: charged from now on
    first.ended()
    tally.clear()
    ticket = org.try_reserve(Cost(1, 30, 100), 90)
    assert ticket is not None
    ticket.answered(limits())
    ticket.usage({"input_tokens": 20, "output_tokens": 40})
    ticket.ended()
    assert tally == {("reserved", "sonnet-4", REQUESTS): 1,
                     ("reserved", "sonnet-4", INPUT): 30,
                     ("reserved", "sonnet-4", OUTPUT): 100,
                     ("refunded", "sonnet-4", INPUT): 10,  # estimated 30, used 20
                     ("refunded", "sonnet-4", OUTPUT): 60}  # max_tokens 100, generated 40


async def test_one_budget_per_key_and_model_class() -> None:
    budgets = OrgBudgets(FakeClock(), 10)
    sonnet = budgets.budget("key-a", "claude-sonnet-4-5-20250929")
    assert budgets.budget("key-a", "claude-sonnet-4-20250514") is sonnet
    assert budgets.budget("key-b", "claude-sonnet-4-5-20250929") is not sonnet
    assert budgets.budget("key-a", "claude-haiku-4-5") is not sonnet
    assert "key" not in sonnet.name


async def test_a_budget_told_not_to_learn_admits_everything() -> None:
    """``--no-org-limits``: each endpoint's requests_per_minute only."""
    org = OrgBudget("sonnet-4#1", "sonnet-4", FakeClock(), 10, learn=False)
    ticket = org.try_reserve(Cost(1, 1, 1_000), 3)
    assert ticket is not None
    ticket.answered(limits(output_tokens=1_000, output_tokens_remaining=0))
    assert org.levels == {}
    assert org.try_reserve(Cost(1, 1, 1_000), 3) is not None


async def test_ready_gateways_each_hold_their_share_of_every_limit() -> None:
    """Two gateways: each starts with half of what remains and refills at half the rate,
    so together they never exceed the organisation's limit."""
    clock = FakeClock()
    budgets = OrgBudgets(clock, 10)
    budgets.reshare(2)
    org = budgets.budget("key-a", "claude-sonnet-4-5")
    ticket = org.try_reserve(Cost(1, 1, 1), 3)
    assert ticket is not None
    ticket.answered(limits(output_tokens=6_000, output_tokens_remaining=5_000))
    assert level(org, OUTPUT) == 2_500
    assert org.try_reserve(Cost(1, 1, 2_500), 3) is not None
    waiter = asyncio.create_task(org.reserve(Cost(1, 1, 100), 3))
    assert await clock.next_sleep() == pytest.approx(2.0, abs=0.02)  # 50 a second
    await clock.advance(2.01)
    assert (await waiter).charged == {REQUESTS, INPUT, OUTPUT}


async def test_a_change_of_ready_gateways_reshares_the_budgets_there_are() -> None:
    clock = FakeClock()
    budgets = OrgBudgets(clock, 10)
    org = budgets.budget("key-a", "claude-sonnet-4-5")
    ticket = org.try_reserve(Cost(1, 1, 1), 3)
    assert ticket is not None
    ticket.answered(limits(output_tokens=6_000))
    ticket.ended()
    budgets.reshare(3)
    assert level(org, OUTPUT) == pytest.approx(2_000)  # what is above the share goes
    assert org.utilisation()[OUTPUT] == (6_000, pytest.approx(0.0))  # of the share
    budgets.reshare(1)
    await clock.advance(10)
    assert level(org, OUTPUT) == pytest.approx(3_000)  # back to 100 a second


async def test_a_declared_ceiling_holds_from_the_first_request_and_caps_what_is_learned() -> None:
    clock = FakeClock()
    budgets = OrgBudgets(clock, 10, ceilings=[Ceiling("sonnet-4", OUTPUT, 1_200)])
    org = budgets.budget("key-a", "claude-sonnet-4-5")
    haiku = budgets.budget("key-a", "claude-haiku-4-5")
    assert haiku.levels == {}  # another class: nothing declared, nothing checked yet
    first = org.try_reserve(Cost(1, 1, 1_200), 3)  # before any answer: the ceiling's
    assert first is not None
    assert org.try_reserve(Cost(1, 1, 100), 3) is None
    waiter = asyncio.create_task(org.reserve(Cost(1, 1, 100), 3))
    assert await clock.next_sleep() == pytest.approx(5.0, abs=0.02)  # 20 a second
    await clock.advance(5.01)
    (await waiter).ended()
    first.answered(limits(output_tokens=6_000))  # Anthropic allows more: still 1,200
    assert org.levels[OUTPUT].limit == 1_200
    with pytest.raises(TooLarge):
        org.check(Cost(1, 1, 1_201))
    first.answered(limits(output_tokens=600, output_tokens_remaining=600))  # less: 600
    assert org.levels[OUTPUT].limit == 600


@pytest.mark.parametrize(("text", "problem"), [
    ("sonnet-4:output-tokens=80000", None),
    ("sonnet-4:output-tokens", "expected CLASS:LIMIT=N"),
    (":requests=5", "expected CLASS:LIMIT=N"),
    ("sonnet-4:tokens=5", "the limit is one of requests, input-tokens, output-tokens"),
    ("sonnet-4:requests=0", "a whole number from 1"),
    ("sonnet-4:requests=1.5", "a whole number from 1"),
])
def test_a_ceiling_is_class_limit_and_a_positive_whole_number(text: str,
                                                              problem: str | None) -> None:
    if problem is None:
        assert Ceiling.parse(text) == Ceiling("sonnet-4", OUTPUT, 80_000)
    else:
        with pytest.raises(ValueError, match=problem):
            Ceiling.parse(text)


@pytest.mark.parametrize(("ceilings", "learn", "problem"), [
    ([Ceiling("sonnet-4", OUTPUT, 1), Ceiling("sonnet-4", OUTPUT, 2)], True, "twice"),
    ([Ceiling("sonnet-4", OUTPUT, 1)], False, "--no-org-limits turns off"),
])
def test_ceilings_that_cannot_hold_are_refused_at_start(ceilings: list[Ceiling], learn: bool,
                                                        problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        OrgBudgets(FakeClock(), 10, learn=learn, ceilings=ceilings)
