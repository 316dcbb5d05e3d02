"""``Controller`` over fakes: each row an input state and the status, Events and gateway
configuration a user would see, in the manner of cert-manager's controller tests."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from controller_fakes import KEY, NAMESPACE, OTHER_KEY, FakeVerifier, World, endpoint, secret_value
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from inference_operator.api.models import Reason
from inference_operator.controller import reconciler
from inference_operator.controller.conditions import Outcome


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler, "RETRY_DELAYS", (0.01, 0.02, 0.05))


AUTH_FAILED = Outcome.needs_human(Reason.UPSTREAM_AUTH_FAILED, "Anthropic rejected the key")
NO_MODEL = Outcome.needs_human(Reason.MODEL_NOT_FOUND, "no such model")
UPSTREAM_DOWN = Outcome.retrying(Reason.UPSTREAM_UNAVAILABLE, "Models API answered 503")
SERVER_ERROR = ApiError(status=Status(code=500, reason="InternalError", message="boom"))


@dataclass
class Row:
    """One starting state; what the controller must make of it."""

    name: str
    reason: str
    conditions: tuple[str, str, str]  # Ready, Reconciling, Stalled
    event: str  # the Event type posted for the transition
    served: bool  # whether a gateway reading the shard Secrets serves the endpoint
    body: dict[str, Any] = field(default_factory=endpoint)
    secret: Any = field(default_factory=secret_value)
    verifier_answer: Any = None
    verifier_fails: Exception | None = None
    read_fails: Exception | None = None
    replicas: int = 1  # gateway replicas ready
    lagging: bool = False  # they have not loaded the latest configuration yet
    shard_missing: bool = False  # the endpoint's shard Secret does not exist
    write_fails: Exception | None = None  # writing a shard Secret fails
    message_has: str = ""  # {shard}: the endpoint's shard Secret
    retried: bool = False  # Serving again once the fault is gone, by the backoff alone
    fleet_bound: bool = False  # Serving again once the fleet's change is reported


ROWS = [
    Row("serving", "Serving", ("True", "False", "False"), "Normal", True,
        message_has="serving inference_id 'ep' with model claude-sonnet-4-5 "
                    "on 1/1 gateway replica"),
    Row("invalid spec", "SpecInvalid", ("False", "False", "True"), "Warning", False,
        body=endpoint(max_tokens=0), message_has="spec.task_settings.max_tokens"),
    Row("no Secret", "SecretNotFound", ("False", "True", "False"), "Normal", False,
        secret=None, message_has="'creds'"),
    # Published, it would make every gateway refuse the whole shard (gateway/config_source).
    Row("a key an HTTP header cannot carry", "SecretKeyInvalid", ("False", "True", "False"),
        "Normal", False, secret=secret_value(key="fake-key\x07bell"),
        message_has="only visible ASCII"),
    # Published, it would take a shard shared by every namespace (ten such filled one).
    Row("a key longer than 4 KiB", "SecretKeyInvalid", ("False", "True", "False"), "Normal",
        False, secret=secret_value(key="fake-key-LONG-" + "k" * 4083), message_has="at most 4096"),
    Row("no key in the Secret", "SecretKeyMissing", ("False", "True", "False"), "Normal",
        False, secret=secret_value(data_key="token"), message_has="token"),
    Row("key rejected", "UpstreamAuthFailed", ("False", "False", "True"), "Warning", False,
        verifier_answer=AUTH_FAILED),
    Row("no such model", "ModelNotFound", ("False", "False", "True"), "Warning", False,
        verifier_answer=NO_MODEL),
    Row("Models API down: served, retried", "UpstreamUnavailable",
        ("False", "True", "False"), "Normal", True, verifier_answer=UPSTREAM_DOWN,
        retried=True),
    Row("no gateway replica ready: published, waits for one", "GatewayUnavailable",
        ("False", "True", "False"), "Normal", True, replicas=0,
        message_has="no gateway replica is ready", fleet_bound=True),
    Row("replicas lagging: published, waits for them", "GatewayPending",
        ("False", "True", "False"), "Normal", True, replicas=2, lagging=True,
        message_has="served by 0/2 gateway replicas", fleet_bound=True),
    Row("shard Secret missing: retried", "GatewayUnavailable", ("False", "True", "False"),
        "Normal", False, shard_missing=True, message_has="Secret gateway-ns/{shard} does not",
        retried=True),
    Row("shard Secret write fails with 500: retried", "ReconcileFailed",
        ("False", "True", "False"), "Warning", False, write_fails=SERVER_ERROR,
        message_has="500", retried=True),
    Row("Secret read fails with 500: retried", "ReconcileFailed",
        ("False", "True", "False"), "Warning", False, read_fails=SERVER_ERROR,
        message_has="500", retried=True),
    Row("a bug in the reconcile: retried", "ReconcileFailed", ("False", "True", "False"),
        "Warning", False, verifier_fails=KeyError("oops"), message_has="KeyError",
        retried=True),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_reconcile(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    world = World(verifier=FakeVerifier(answer=row.verifier_answer, fail=row.verifier_fails))
    shard = world.publisher.shards.of("ep")
    if row.secret is not None:
        world.kube.secrets[(NAMESPACE, "creds")] = row.secret
    world.kube.fail_reads = row.read_fails
    world.fleet.replicas, world.fleet.lagging = row.replicas, row.lagging
    if row.shard_missing:
        del world.config.data[shard]
    world.config.fail = row.write_fails

    status = await world.apply(row.body)

    ready = world.ready()
    assert (ready["reason"], tuple(world.conditions().values())) == (row.reason, row.conditions)
    assert row.message_has.format(shard=shard) in ready["message"]
    assert status["observedGeneration"] == 1
    assert status["inference_id"] == "ep"
    assert status["url"] == "http://gw:9200/_inference/completion/ep"
    assert [(kind, reason) for _, kind, reason, _ in world.kube.events] == [
        (row.event, row.reason)]
    assert ("ep" in world.config.served()) == row.served
    assert world.config.writes == [shard] * row.served  # one write if served, else none
    if row.served:
        assert world.config.key_of("ep") == KEY
    assert KEY not in repr(world.kube.statuses) + repr(world.kube.events) + caplog.text
    if row.secret is not None:  # whatever the Secret holds, no output quotes it
        assert "fake-key-LONG" not in repr(world.kube.statuses) + repr(world.kube.events)

    # The fault goes away: a transient one heals by itself (retried with backoff); one
    # in the fleet heals once the fleet reports its change; a stalled or Secret-bound one
    # waits for a human or for the Secret's own event.
    world.kube.fail_reads = world.verifier.fail = world.verifier.answer = None
    world.config.fail = None
    world.config.data.setdefault(shard, {})  # as the installer creates it: empty
    world.fleet.replicas, world.fleet.lagging = max(row.replicas, 1), False
    await world.settle()
    assert (world.ready()["reason"] == "Serving") == (row.retried or row.reason == "Serving")

    world.controller.fleet_changed()
    await world.settle()
    healed = row.retried or row.fleet_bound or row.reason == "Serving"
    assert (world.ready()["reason"] == "Serving") == healed
    if healed:
        assert world.config.key_of("ep") == KEY
        replicas = max(row.replicas, 1)
        assert f"on {replicas}/{replicas} gateway replica" in world.ready()["message"]


async def test_an_unexpected_error_is_logged_with_its_traceback_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    world.kube.fail_reads = SERVER_ERROR

    with caplog.at_level(logging.ERROR):
        await world.apply(endpoint())
    assert world.ready()["reason"] == "ReconcileFailed"
    assert "Traceback" in caplog.text and "ApiError" in caplog.text

    world.kube.fail_reads = None
    await world.settle()
    assert world.ready()["reason"] == "Serving"
    assert world.config.key_of("ep") == KEY


async def test_a_failed_status_patch_is_retried() -> None:
    world = World()
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    world.kube.fail_patches = SERVER_ERROR

    await world.apply(endpoint())
    assert world.status() == {}
    world.kube.fail_patches = None
    await world.settle()

    assert world.ready()["reason"] == "Serving"
    assert len(world.config.writes) == 1  # the retry found its endpoint already written


async def test_the_fleet_revisits_only_the_resources_whose_coverage_changed() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint("a"))
    await world.apply(endpoint("b"))
    visited: list[str] = []
    reconcile = world.controller.reconcile

    async def counted(body: Any) -> None:
        visited.append(body["metadata"]["name"])
        await reconcile(body)

    world.controller.reconcile = counted  # type: ignore[method-assign]
    world.controller.fleet_changed()  # nothing changed
    await world.settle()
    assert visited == []

    world.fleet.lagging = True  # e.g. a new replica that has not loaded the Secrets yet
    world.controller.fleet_changed()
    await world.settle()
    assert sorted(visited) == ["a", "b"]
    assert world.ready("a")["reason"] == world.ready("b")["reason"] == "GatewayPending"

    world.fleet.lagging = False
    world.controller.fleet_changed()
    await world.settle()
    assert world.ready("a")["reason"] == world.ready("b")["reason"] == "Serving"
    assert len(world.config.writes) == 2  # the visits wrote nothing


async def test_a_secret_deleted_while_unreferenced_is_not_used_when_referenced_again() -> None:
    world = World()
    await world.put_secret("first", secret_value(KEY))
    await world.put_secret("second", secret_value(OTHER_KEY))
    await world.apply(endpoint(secret="first"))
    await world.apply(endpoint(secret="second", generation=2))
    assert world.config.key_of("ep") == OTHER_KEY

    await world.put_secret("first", None)  # revoked while nothing references it
    await world.apply(endpoint(secret="first", generation=3))
    await world.settle()

    assert world.ready()["reason"] == "SecretNotFound"
    assert "ep" not in world.config.served()


async def test_a_secret_rotated_while_unreferenced_serves_its_new_key() -> None:
    world = World()
    await world.put_secret("first", secret_value(KEY, "1"))
    await world.put_secret("second", secret_value(KEY, "2"))
    await world.apply(endpoint(secret="first"))
    await world.apply(endpoint(secret="second", generation=2))

    await world.put_secret("first", secret_value(OTHER_KEY, "3"))
    await world.apply(endpoint(secret="first", generation=3))

    assert world.config.key_of("ep") == OTHER_KEY


async def test_a_rotated_key_is_written_once() -> None:
    world = World()
    await world.put_secret("creds", secret_value(KEY, "1"))
    await world.apply(endpoint())
    await world.put_secret("creds", secret_value(OTHER_KEY, "2"))
    await world.settle()

    assert world.config.key_of("ep") == OTHER_KEY
    assert world.status()["secret_resource_version"] == "2"
    assert len(world.config.writes) == 2


async def test_a_secret_nobody_references_is_not_kept() -> None:
    world = World()
    await world.put_secret("first", secret_value(KEY))
    await world.apply(endpoint(secret="first"))
    await world.apply(endpoint(secret="second", generation=2))
    await world.delete("ep")

    assert world.controller.secrets.cached() == set()


async def test_a_key_changed_back_is_verified_again() -> None:
    """A verification holds for the Secret version it checked: rotating away from a key
    and back (as when a revoked key is restored by mistake) asks the Models API again."""
    verifier = FakeVerifier()
    world = World(verifier=verifier)
    await world.put_secret("creds", secret_value(KEY, "1"))
    await world.apply(endpoint())
    await world.put_secret("creds", secret_value(OTHER_KEY, "2"))
    await world.settle()
    verifier.answer = AUTH_FAILED
    await world.put_secret("creds", secret_value(KEY, "3"))
    await world.settle()

    assert verifier.keys_checked == [KEY, OTHER_KEY, KEY]
    assert world.ready()["reason"] == "UpstreamAuthFailed"
    assert "ep" not in world.config.served()


async def test_a_resync_checks_a_verified_key_no_second_time_and_writes_nothing() -> None:
    verifier = FakeVerifier()
    world = World(verifier=verifier)
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint())
    statuses = world.kube.statuses.copy()
    world.kube.statuses.clear()

    await world.controller.full_sync()

    assert verifier.checks == 1
    assert world.config.writes == [world.publisher.shards.of("ep")]
    assert world.kube.statuses == {}  # nor a status patch
    assert statuses


async def test_a_restarted_operator_writes_nothing_and_drops_what_went_meanwhile() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint("stays"))
    await world.apply(endpoint("goes"))

    restarted = World()  # the same Secrets, a new process
    restarted.config.data = world.config.data
    await restarted.publisher.load()
    restarted.kube.secrets = world.kube.secrets
    restarted.bodies[(NAMESPACE, "stays")] = world.bodies[(NAMESPACE, "stays")]
    restarted._index()

    await restarted.controller.full_sync()

    assert restarted.ready("stays")["reason"] == "Serving"
    assert set(restarted.config.served()) == {"stays"}
    # Only the removal of "goes" cost a write.
    assert restarted.config.writes == [restarted.publisher.shards.of("goes")]


async def test_a_full_sync_bounds_how_many_reconciles_run_at_once() -> None:
    verifier = FakeVerifier(delay=0.01)
    world = World(verifier=verifier)
    for number in range(40):  # a Secret each: no check can be shared
        world.kube.secrets[(NAMESPACE, f"creds-{number}")] = secret_value()
        body = endpoint(f"ep-{number}", secret=f"creds-{number}")
        world.bodies[(NAMESPACE, f"ep-{number}")] = body
    world._index()

    await world.controller.full_sync()

    assert len(world.config.served()) == 40
    assert 1 < verifier.most_at_once <= reconciler.SYNC_CONCURRENCY


async def test_endpoints_sharing_a_secret_share_one_models_api_check() -> None:
    verifier = FakeVerifier(delay=0.01)
    world = World(verifier=verifier)
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    bodies = [endpoint(f"ep-{number}") for number in range(20)]
    for body in bodies:
        world.bodies[(NAMESPACE, body["metadata"]["name"])] = body
    world._index()

    await asyncio.gather(*map(world.controller.reconcile, bodies))

    assert verifier.checks == 1
    assert len(world.config.served()) == 20


async def test_the_older_claim_holds_the_id_and_the_younger_takes_over() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint("old", inference_id="shared", created="2026-01-01T00:00:00Z"))
    await world.apply(endpoint("new", inference_id="shared", created="2026-01-02T00:00:00Z",
                               max_tokens=7))

    assert world.ready("new")["reason"] == "InferenceIdConflict"
    assert "team-a/old" in world.ready("new")["message"]
    assert world.config.served()["shared"]["task_settings"]["max_tokens"] == 64

    await world.delete("old")
    await world.settle()

    assert world.ready("new")["reason"] == "Serving"
    assert world.config.served()["shared"]["task_settings"]["max_tokens"] == 7


async def test_a_losing_claim_never_deletes_the_holders_endpoint() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint("old", inference_id="shared", created="2026-01-01T00:00:00Z"))
    await world.apply(endpoint("new", inference_id="shared", created="2026-01-02T00:00:00Z",
                               max_tokens=0))  # invalid too

    assert world.ready("new")["reason"] == "SpecInvalid"
    assert "shared" in world.config.served()


async def test_an_unchanged_status_is_written_once_and_its_event_posted_once() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint())
    written = world.kube.statuses.copy()
    world.kube.statuses.clear()

    await world.controller.reconcile(endpoint())

    assert world.kube.statuses == {}
    assert len(world.kube.events) == 1
    assert written


async def test_a_changed_inference_id_leaves_the_old_one() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint(inference_id="before"))
    await world.apply(endpoint(inference_id="after", generation=2))

    assert set(world.config.served()) == {"after"}
    assert world.status()["inference_id"] == "after"


async def test_deletion_withdraws_the_endpoint_even_while_no_gateway_is_ready() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    await world.apply(endpoint())
    world.fleet.replicas = 0

    await world.delete("ep")  # does not wait for a gateway

    assert world.config.served() == {}


async def test_a_deletion_whose_write_fails_raises_and_its_retry_withdraws() -> None:
    world = World()
    await world.put_secret("creds", secret_value())
    body = endpoint()
    await world.apply(body)
    world.config.fail = SERVER_ERROR

    with pytest.raises(ApiError):  # kopf keeps the finalizer and calls again
        await world.delete("ep")
    assert "ep" in world.config.served()

    world.config.fail = None
    await world.controller.withdraw(body)

    assert world.config.served() == {}


async def test_the_published_record_names_its_resource_for_the_callers_authorization() -> None:
    world = World()
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    await world.apply(endpoint("ep", inference_id="shared-id"))
    assert world.config.served()["shared-id"]["owner"] == {"namespace": NAMESPACE, "name": "ep"}


async def test_fleet_changes_during_a_revisit_bring_one_more_pass_not_one_each() -> None:
    world = World()
    world.fleet.replicas, world.fleet.lagging = 2, True
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    for name in ("a", "b", "c"):
        await world.apply(endpoint(name))
    world.fleet.lagging = False
    visited: list[str] = []
    reconcile = world.controller.reconcile

    async def counted(body: dict[str, Any]) -> None:
        visited.append(body["metadata"]["name"])
        await reconcile(body)

    world.controller.reconcile = counted  # type: ignore[method-assign]
    for _ in range(5):  # a rolling upgrade: several changes while the first pass runs
        world.controller.fleet_changed()
    await world.settle()

    assert sorted(visited) == ["a", "b", "c"]  # the later pass found nothing stale
    assert {world.ready(n)["reason"] for n in ("a", "b", "c")} == {"Serving"}


async def test_a_key_of_exactly_4_kib_is_served() -> None:
    world = World()
    longest = "fake-key-LONG-" + "k" * 4082
    await world.put_secret("creds", secret_value(key=longest))

    await world.apply(endpoint())

    assert world.ready()["reason"] == "Serving"
    assert world.config.key_of("ep") == longest


async def test_beyond_its_namespace_cap_an_endpoint_waits_and_takes_over_when_one_goes() -> None:
    world = World(max_per_namespace=2)
    await world.put_secret("creds", secret_value())
    for name in ("a", "b", "c", "d"):
        await world.apply(endpoint(name))

    assert [world.ready(n)["reason"] for n in "abcd"] == [
        "Serving", "Serving", "NamespaceQuotaExceeded", "NamespaceQuotaExceeded"]
    assert world.conditions("c") == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
    assert "2 endpoint(s) published" in world.ready("c")["message"]
    assert "--max-endpoints-per-namespace" in world.ready("c")["message"]
    assert set(world.config.served()) == {"a", "b"}

    await world.apply(endpoint("a", generation=2, max_tokens=7))  # one at the cap changes
    assert world.ready("a")["reason"] == "Serving"

    await world.delete("b")
    await world.settle()

    assert sorted(world.ready(n)["reason"] for n in "acd") == [
        "NamespaceQuotaExceeded", "Serving", "Serving"]
    assert len(world.config.served()) == 2 and "a" in world.config.served()


async def test_an_endpoint_its_shard_has_no_room_for_is_refused_alone() -> None:
    """The record that does not fit is ConfigurationFull; the shard goes on taking the
    other teams' changes, a revoked key among them."""
    # Room for a record with a 4 KiB key alone, not next to another one (ep-2 and ep-big
    # share a shard).
    world = World(shard_limit=4500)
    await world.put_secret("creds", secret_value())
    await world.put_secret("huge", secret_value(key="fake-key-LONG-" + "k" * 4082))
    names = ["ep", "ep-0", "ep-1", "ep-2", "big"]
    for name in names[:-1]:
        await world.apply(endpoint(name))
    await world.apply(endpoint("big", secret="huge", inference_id="ep-big"))

    assert world.ready("big")["reason"] == "ConfigurationFull"
    assert "no room for this endpoint" in world.ready("big")["message"]
    assert "fake-key-LONG" not in repr(world.kube.statuses) + repr(world.kube.events)
    assert "ep-big" not in world.config.served()
    assert all(world.ready(n)["reason"] == "Serving" for n in names if n != "big")

    await world.put_secret("creds", None)  # revoked: every endpoint using it leaves
    await world.settle()

    assert world.ready("ep")["reason"] == "SecretNotFound"
    # The room made brings the refused one back, on its own; the revoked key is gone.
    assert world.ready("big")["reason"] == "Serving"
    assert set(world.config.served()) == {"ep-big"}
