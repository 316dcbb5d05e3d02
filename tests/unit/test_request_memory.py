"""The request memory budget (gateway/request_memory.py): an endpoint's
share, the gateway's whole budget, what a refusal says, and the default's sizing."""

from __future__ import annotations

import pytest

from inference_operator.gateway.errors import ESError
from inference_operator.gateway.request_memory import MIB, RequestMemory, default_budget


def test_an_endpoint_holds_at_most_its_share_and_gets_its_retry_after() -> None:
    memory = RequestMemory(budget=400, endpoint_share=0.25)
    with memory.reserve("a", 60), memory.reserve("a", 40):
        with pytest.raises(ESError) as refused:
            memory.reserve("a", 1, retry_after=60)
        assert (refused.value.status, refused.value.type) == (
            429, "es_rejected_execution_exception")
        assert refused.value.headers == {"Retry-After": "60"}
        assert "inference id [a]" in refused.value.reason
        assert "[100] bytes of its share of [100]" in refused.value.reason
        with memory.reserve("b", 100):  # another endpoint: its own share
            assert memory.held == 200
    assert memory.held == 0 and memory.endpoint_held("a") == 0


def test_the_whole_budget_bounds_every_endpoint_together() -> None:
    memory = RequestMemory(budget=250, endpoint_share=0.5)
    with memory.reserve("a", 125), memory.reserve("b", 100):
        with pytest.raises(ESError) as refused:
            memory.reserve("c", 26, retry_after=60)
        assert refused.value.headers == {"Retry-After": "1"}  # any request's end frees room
        assert "[225] bytes of the gateway's budget of [250]" in refused.value.reason
        assert memory.reserve("c", 25).size == 25  # what fits still does


def test_a_reservation_resized_down_never_fails_and_up_may() -> None:
    memory = RequestMemory(budget=100, endpoint_share=1)
    with memory.reserve("a", 90) as held:
        held.resize(10)  # the body was smaller than its Content-Length said
        assert memory.held == 10
        with pytest.raises(ESError):
            held.resize(101)  # its upstream request grew past the budget
        assert memory.held == 10 and held.size == 10
    assert memory.held == 0


def test_a_refusal_holds_nothing() -> None:
    memory = RequestMemory(budget=100, endpoint_share=1)
    with pytest.raises(ESError):
        memory.reserve("a", 101)
    assert memory.held == 0 and memory.endpoint_held("a") == 0


@pytest.mark.parametrize(("limit", "budget"), [
    (None, 128 * MIB),  # no limit: sized as for the chart's 512Mi
    (512 * MIB, 128 * MIB),
    (2048 * MIB, 512 * MIB),
])
def test_the_default_budget_is_a_quarter_of_the_memory_limit(limit: int | None,
                                                              budget: int) -> None:
    assert default_budget(limit) == budget


@pytest.mark.parametrize(("budget", "share"), [(0, 0.25), (100, 0), (100, 1.5)])
def test_nonsense_is_refused(budget: int, share: float) -> None:
    with pytest.raises(ValueError):
        RequestMemory(budget, share)
