"""The emulator's organisation limits (emulator/limits.py) follow Anthropic's documented
rules: continuous token buckets per model class, max_tokens reserved then refunded, the
headers, 429s naming the limit with the wait until the request fits. A stepped clock, no
server."""

from __future__ import annotations

import pytest
from controller_fakes import FakeClock

from inference_operator.anthropic.model_classes import model_class
from inference_operator.emulator.limits import (
    SPEND_LIMIT_CODE,
    Admission,
    Organisation,
    OrgLimits,
    Refusal,
)

WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def organisation(clock: FakeClock, **limits) -> Organisation:
    """Its wall clock reads WALL when the test starts and moves with ``clock``."""
    start = clock.time
    return Organisation(OrgLimits(round_remaining=False, **limits), clock=clock,
                        wall_clock=lambda: WALL + clock.time - start)


@pytest.mark.parametrize(("model", "expected"), [
    ("claude-sonnet-4-5-20250929", "sonnet-4"),
    ("claude-sonnet-4-20250514", "sonnet-4"),
    ("claude-opus-4-1-20250805", "opus-4"),
    ("claude-opus-4-5", "opus-4"),
    ("claude-haiku-4-5", "haiku-4"),
    ("claude-3-5-haiku-20241022", "haiku-3"),
    ("claude-3-haiku-20240307", "haiku-3"),
    ("claude-x", "claude-x"),
])
def test_models_of_one_family_and_major_version_share_limits(model: str, expected: str):
    assert model_class(model) == expected


def test_max_tokens_is_reserved_and_the_unused_part_refunded_at_the_end():
    clock = FakeClock()
    org = organisation(clock, output_tokens_per_minute=1000)
    first = org.admit("claude-sonnet-4-5", 10, 600)
    assert isinstance(first, Admission)
    assert first.headers["anthropic-ratelimit-output-tokens-remaining"] == "400"
    refused = org.admit("claude-sonnet-4-5", 10, 600)
    assert isinstance(refused, Refusal)
    first.settle(100)  # 500 of the 600 reserved come back
    first.settle(0)  # once only
    assert org.state()["sonnet-4"]["output-tokens"]["remaining"] == 900
    assert isinstance(org.admit("claude-sonnet-4-5", 10, 600), Admission)


def test_the_buckets_refill_continuously_not_at_the_minute():
    clock = FakeClock()
    org = organisation(clock, requests_per_minute=60)
    for _ in range(60):
        assert isinstance(org.admit("claude-haiku-4-5", 1, 1), Admission)
    refused = org.admit("claude-haiku-4-5", 1, 1)
    assert isinstance(refused, Refusal)
    assert refused.headers["retry-after"] == "1"  # one request a second comes back
    clock.time += 1.0
    assert isinstance(org.admit("claude-haiku-4-5", 1, 1), Admission)
    assert isinstance(org.admit("claude-haiku-4-5", 1, 1), Refusal)


def test_a_429_names_the_binding_limit_and_retry_after_is_when_the_request_fits():
    clock = FakeClock()
    org = organisation(clock, input_tokens_per_minute=6000, output_tokens_per_minute=600)
    assert isinstance(org.admit("claude-sonnet-4-5", 5000, 100), Admission)
    # Input short by 4,000 (40 s at 100/s), output fits: input binds.
    refused = org.admit("claude-sonnet-4-5", 5000, 100)
    assert isinstance(refused, Refusal)
    assert refused.status == 429
    assert refused.body["error"]["type"] == "rate_limit_error"
    assert "6,000 input tokens per minute (model: claude-sonnet-4-5)" in (
        refused.body["error"]["message"])
    assert refused.headers["retry-after"] == "40"
    assert refused.headers["x-should-retry"] == "true"
    assert refused.headers["anthropic-ratelimit-input-tokens-remaining"] == "1000"


def test_every_answer_says_limit_remaining_and_when_it_is_full_again():
    clock = FakeClock()
    org = organisation(clock, requests_per_minute=50, input_tokens_per_minute=30_000,
                       output_tokens_per_minute=8_000)
    admitted = org.admit("claude-opus-4-1", 3_000, 4_000)
    assert isinstance(admitted, Admission)
    headers = admitted.headers
    assert {name: headers[f"anthropic-ratelimit-{name}-limit"]
            for name in ("requests", "input-tokens", "output-tokens", "tokens")} == {
        "requests": "50", "input-tokens": "30000", "output-tokens": "8000", "tokens": "38000"}
    assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert headers["anthropic-ratelimit-tokens-remaining"] == str(27_000 + 4_000)
    # Full again: 1 request at 50/min in 1.2 s; 3,000 at 500/s in 6 s; 4,000 at 133.3/s
    # in 30 s; the combined tokens when the slowest is.
    assert headers["anthropic-ratelimit-requests-reset"] == "2027-01-15T08:00:02Z"
    assert headers["anthropic-ratelimit-input-tokens-reset"] == "2027-01-15T08:00:06Z"
    assert headers["anthropic-ratelimit-output-tokens-reset"] == "2027-01-15T08:00:30Z"
    assert headers["anthropic-ratelimit-tokens-reset"] == "2027-01-15T08:00:30Z"


def test_token_remaining_is_rounded_to_the_thousand_as_anthropic_sends_it():
    org = Organisation(OrgLimits(input_tokens_per_minute=40_000), clock=FakeClock())
    admitted = org.admit("claude-sonnet-4-5", 1_700, 1)
    assert isinstance(admitted, Admission)
    assert admitted.headers["anthropic-ratelimit-input-tokens-remaining"] == "38000"


def test_each_model_class_has_its_own_buckets_and_a_class_can_have_its_own_limits():
    clock = FakeClock()
    org = organisation(clock, requests_per_minute=1,
                       classes={"haiku-4": {"requests_per_minute": 2}})
    assert isinstance(org.admit("claude-sonnet-4-5", 1, 1), Admission)
    assert isinstance(org.admit("claude-sonnet-4-20250514", 1, 1), Refusal)  # same class
    assert isinstance(org.admit("claude-opus-4-5", 1, 1), Admission)
    assert isinstance(org.admit("claude-haiku-4-5", 1, 1), Admission)
    assert isinstance(org.admit("claude-haiku-4-5", 1, 1), Admission)
    assert isinstance(org.admit("claude-haiku-4-5", 1, 1), Refusal)


def test_an_unseen_other_user_takes_its_share_of_the_refill():
    clock = FakeClock()
    org = organisation(clock, requests_per_minute=60, other_user_share=0.5)
    for _ in range(60):
        assert isinstance(org.admit("claude-sonnet-4-5", 1, 1), Admission)
    clock.time += 10.0  # 10 requests' worth refilled, half of it the other user's
    admitted = [isinstance(org.admit("claude-sonnet-4-5", 1, 1), Admission)
                for _ in range(10)]
    assert admitted == [True] * 5 + [False] * 5


def test_the_spend_limit_is_a_429_with_no_retry_after_and_no_retry():
    org = organisation(FakeClock(), requests_per_minute=100, spend_limit_reached=True)
    refused = org.admit("claude-sonnet-4-5", 1, 1)
    assert isinstance(refused, Refusal)
    assert refused.status == 429
    assert refused.body["error"]["details"] == {"error_code": SPEND_LIMIT_CODE}
    assert "retry-after" not in refused.headers
    assert refused.headers["x-should-retry"] == "false"


def test_a_request_larger_than_the_limit_is_refused_and_told_to_wait_for_a_full_bucket():
    clock = FakeClock()
    org = organisation(clock, output_tokens_per_minute=3_000)
    assert isinstance(org.admit("claude-sonnet-4-5", 1, 2_000), Admission)
    refused = org.admit("claude-sonnet-4-5", 1, 4_000)
    assert isinstance(refused, Refusal)
    assert refused.headers["retry-after"] == "40"  # 2,000 back at 50 a second


def test_limits_are_validated():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        OrgLimits(requests_per_minute=0)
    with pytest.raises(ValueError, match="less than 1"):
        OrgLimits(other_user_share=1)
    with pytest.raises(ValueError, match="Extra inputs"):
        OrgLimits(tokens_per_minute=5)
