"""The upstream connection slots (anthropic/slots.py): a key's share, the pool's
and the bounded wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from inference_operator.anthropic.slots import NoSlot, Slots

KEY_A, KEY_B = "sk-ant-a-0123456789", "sk-ant-b-9876543210"


async def test_a_key_at_its_cap_waits_the_bounded_time_then_is_refused() -> None:
    slots = Slots(total=10, per_key=2, wait=0.2)
    a = slots.for_key(KEY_A)
    held = [await slots.take(a) for _ in range(2)]
    started = time.monotonic()
    with pytest.raises(NoSlot, match="the 2 upstream connections allowed per API key"):
        await slots.take(a)
    assert 0.15 < time.monotonic() - started < 2
    # Another key is not held up by A at its cap.
    release_b = await asyncio.wait_for(slots.take(slots.for_key(KEY_B)), 0.05)
    release_b()
    held.pop()()
    (await slots.take(a))()  # a slot given back serves A again


async def test_the_whole_pool_full_refuses_every_key() -> None:
    slots = Slots(total=3, per_key=2, wait=0.05)
    held = [await slots.take(slots.for_key(key)) for key in (KEY_A, KEY_A, KEY_B)]
    with pytest.raises(NoSlot, match="all 3 upstream connections of the gateway"):
        await slots.take(slots.for_key("sk-ant-c-5555555555"))
    # A's per-key slot, taken while waiting for the pool, was given back.
    for release in held:
        release()
    assert [await slots.take(slots.for_key(KEY_A)) for _ in range(2)]


async def test_a_waiter_gets_the_slot_given_back_within_the_wait() -> None:
    slots = Slots(total=10, per_key=1, wait=2.0)
    a = slots.for_key(KEY_A)
    release = await slots.take(a)
    asyncio.get_running_loop().call_later(0.05, release)
    (await asyncio.wait_for(slots.take(a), 1.0))()


async def test_an_outer_timeout_is_not_taken_for_a_full_pool() -> None:
    slots = Slots(total=10, per_key=1, wait=5.0)
    a = slots.for_key(KEY_A)
    await slots.take(a)
    with pytest.raises(TimeoutError):  # the request's own ?timeout: 408, not 503
        async with asyncio.timeout(0.05):
            await slots.take(a)


async def test_keys_are_grouped_by_digest_and_not_kept() -> None:
    slots = Slots(total=10, per_key=1, wait=0.0)
    assert slots.for_key(KEY_A) is slots.for_key(KEY_A)
    assert slots.for_key(KEY_A) is not slots.for_key(KEY_B)
    held = slots.for_key(KEY_A)
    assert KEY_A not in repr(vars(slots)) + repr(vars(held))


def test_options_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(total=10, per_key=0, wait=1.0)
    with pytest.raises(ValueError, match="negative"):
        Slots(total=10, per_key=1, wait=-1.0)
