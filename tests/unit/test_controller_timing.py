"""The controller's timing decisions on a fake clock: the retry backoff, how long a
verified key holds, how long start-up waits for a gateway replica. Each would take
minutes of real sleeping; here they take milliseconds and never depend on the machine's
speed."""

from __future__ import annotations

from controller_fakes import NAMESPACE, FakeClock, FakeVerifier, World, endpoint, secret_value
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

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
    started = clock.monotonic()

    assert await fleet.wait_for_replica(30.0, interval=0.5) is False

    assert 30.0 <= clock.monotonic() - started < 30.5
    assert set(clock.slept) == {0.5}
    await fleet.close()
