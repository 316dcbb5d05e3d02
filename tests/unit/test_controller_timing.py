"""The controller's timing decisions on a fake clock: the retry backoff, how long a
verified key holds, how long start-up waits for a gateway replica, the fleet watcher's
and the resync's periods. Each would take minutes of real sleeping; here they take
milliseconds and never depend on the machine's speed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from controller_fakes import NAMESPACE, FakeClock, FakeVerifier, World, endpoint, secret_value
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from inference_operator.controller import lifecycle
from inference_operator.controller.fleet import Fleet
from inference_operator.controller.reconciler import RETRY_DELAYS
from inference_operator.controller.upstream import VERIFIED_FOR_SECONDS

SERVER_ERROR = ApiError(status=Status(code=500, reason="InternalError", message="boom"))


async def test_a_transient_failure_is_retried_on_the_backoff_schedule_which_then_starts_over(
) -> None:
    clock = FakeClock()
    world = World(clock=clock)
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    world.kube.fail_reads = SERVER_ERROR
    try:
        await world.apply(endpoint())
        delays = []
        for _ in range(len(RETRY_DELAYS) + 1):
            delays.append(await clock.next_sleep())
            await clock.advance(delays[-1])
        assert delays == [2.0, 5.0, 10.0, 30.0, 60.0, 60.0]  # then every minute
        assert world.ready()["reason"] == "ReconcileFailed"

        world.kube.fail_reads = None
        await clock.advance(await clock.next_sleep())
        assert world.ready()["reason"] == "Serving"

        world.kube.fail_patches = SERVER_ERROR  # a new failure counts from the start
        await world.apply(endpoint(generation=2, max_tokens=7))
        assert await clock.next_sleep() == RETRY_DELAYS[0]
    finally:
        await world.controller.close()


async def test_a_verified_key_is_asked_again_only_once_its_verification_expired() -> None:
    clock = FakeClock()
    verifier = FakeVerifier()
    world = World(verifier=verifier, clock=clock)
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint())

    await clock.advance(VERIFIED_FOR_SECONDS - 1)
    await world.controller.full_sync()
    assert verifier.checks == 1

    await clock.advance(2)
    await world.controller.full_sync()
    assert verifier.checks == 2
    assert world.ready()["reason"] == "Serving"


async def test_start_up_waits_its_time_for_a_first_replica_then_goes_on() -> None:
    clock = FakeClock(autojump=True)

    async def none_ready() -> list[str]:
        return []

    fleet = Fleet(none_ready, clock)
    started = clock.now()

    assert await fleet.wait_for_replica(30.0, interval=0.5) is False

    assert 30.0 <= clock.now() - started < 30.5
    assert set(clock.slept) == {0.5}
    await fleet.close()


async def test_the_resync_runs_each_period_and_tries_a_failed_sync_again_a_poll_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    world = World(clock=clock)
    config = world.controller.config
    synced_at: list[float] = []
    failures = [SERVER_ERROR, None, None, SERVER_ERROR, None]

    async def full_sync() -> None:
        synced_at.append(clock.now())
        if failure := failures.pop(0):
            raise failure

    world.controller.full_sync = full_sync  # type: ignore[method-assign]
    resync = asyncio.create_task(lifecycle.resync(world.controller))
    try:
        expected = [config.gateway_poll_seconds, config.resync_seconds,
                    config.resync_seconds, config.gateway_poll_seconds]
        for delay in expected:
            assert await clock.next_sleep() == delay
            await clock.advance(delay)
        await clock.next_sleep()
    finally:
        resync.cancel()

    start = synced_at[0]
    assert [at - start for at in synced_at] == [0.0, 1.0, 121.0, 241.0, 242.0]
    assert caplog.text.count("first full sync done") == 1
    assert caplog.text.count("resync: the API server answered 500") == 2


async def test_the_fleet_watcher_polls_each_interval_and_never_syncs() -> None:
    clock = FakeClock()
    world = World(clock=clock)
    polls: list[float] = []

    async def refresh() -> bool:
        polls.append(clock.now())
        return False

    async def full_sync() -> None:
        raise AssertionError("the fleet watcher ran a full sync")

    world.fleet.refresh = refresh  # type: ignore[method-assign]
    world.controller.full_sync = full_sync  # type: ignore[method-assign]
    watcher = asyncio.create_task(lifecycle.watch_fleet(world.controller))
    try:
        for _ in range(3):
            await clock.advance(await clock.next_sleep())
        await clock.next_sleep()
    finally:
        watcher.cancel()

    assert [at - polls[0] for at in polls] == [0.0, 1.0, 2.0, 3.0]
