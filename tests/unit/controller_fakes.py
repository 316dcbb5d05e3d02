"""In-memory stand-ins for what ``Controller`` talks to (the Kubernetes API with the
gateways' configuration Secrets, the gateway replicas, Anthropic's Models API), recording
every call, so the reconcile's decisions can be tested in milliseconds. The wiring to
the real parts is tested end to end in tests/operator."""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kopf

import resources
from inference_operator.api.gateway_config import Shard, Shards
from inference_operator.clock import SYSTEM_CLOCK, Clock
from inference_operator.controller import handlers
from inference_operator.controller.claims import claim_of, effective_inference_id
from inference_operator.controller.config import OperatorConfig
from inference_operator.controller.fleet import Coverage
from inference_operator.controller.kube import SecretValue
from inference_operator.controller.publisher import ConfigPublisher, Placement
from inference_operator.controller.reconciler import Controller
from inference_operator.controller.secrets import secret_ref

NAMESPACE = "team-a"
KEY = "fake-key-unit-PRIMARY"
OTHER_KEY = "fake-key-unit-OTHER"


def endpoint(name: str = "ep", *, secret: str = "creds", generation: int = 1,
             created: str = resources.CREATED, inference_id: str | None = None,
             **task_settings: Any) -> dict[str, Any]:
    """As the fake API server hands it to the controller: stored in NAMESPACE."""
    return resources.endpoint(name, secret, namespace=NAMESPACE, generation=generation,
                              created=created, inference_id=inference_id, rpm=None,
                              task_settings=task_settings)


def secret_value(key: str = KEY, resource_version: str = "100",
                 data_key: str = "api_key") -> SecretValue:
    return SecretValue({data_key: base64.b64encode(key.encode()).decode()}, resource_version)


class FakeKube:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], SecretValue] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str]] = []  # (object, type, reason, message)
        self.secret_reads = 0
        self.fail_reads: Exception | None = None
        self.fail_patches: Exception | None = None

    async def read_secret(self, namespace: str, name: str) -> SecretValue | None:
        self.secret_reads += 1
        if self.fail_reads is not None:
            raise self.fail_reads
        return self.secrets.get((namespace, name))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if self.fail_patches is not None:
            raise self.fail_patches
        self.statuses[(namespace, name)] = status

    async def post_event(self, body: Any, event_type: str, reason: str, message: str) -> None:
        self.events.append((body["metadata"]["name"], event_type, reason, message))

    async def endpoint_keys(self, *_: Any, **__: Any) -> set[tuple[str, str]]:
        return set()

    async def close(self) -> None:
        pass


class FakeConfigStore:
    """The shard Secrets as a dict of their data; ``writes`` lists each write in order."""

    def __init__(self, shards: Shards) -> None:
        self.data: dict[str, dict[str, str]] = {name: {} for name in shards.names()}
        self.writes: list[str] = []
        self.fail: Exception | None = None

    async def read_config(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.data.get(name)

    async def write_config(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        if self.fail is not None:
            raise self.fail
        if name not in self.data:
            return False
        self.writes.append(name)
        self.data[name] = data
        return True

    def served(self) -> dict[str, dict[str, Any]]:
        """What a gateway reading the Secrets would serve, by inference id."""
        return {record["inference_id"]: record for data in self.data.values()
                for record in Shard.decode(data).endpoints}

    def key_of(self, inference_id: str) -> str:
        return self.served()[inference_id]["service_settings"]["api_key"]


@dataclass
class FakeFleet:
    """``replicas`` ready gateways; each serves what was written unless ``lagging``."""

    replicas: int = 1
    lagging: bool = False
    on_change: Any = None

    def coverage(self, placement: Placement) -> Coverage:
        return Coverage(0 if self.lagging else self.replicas, self.replicas)

    async def wait_for(self, placement: Placement, within: float) -> Coverage:
        return self.coverage(placement)

    async def refresh(self) -> bool:
        return False

    async def close(self) -> None:
        pass


@dataclass
class FakeVerifier:
    """Answers ``answer`` (None: key and model are good), counting checks and how many
    ran at once; ``delay`` keeps each check in flight that long."""

    answer: Any = None
    delay: float = 0.0
    checks: int = 0
    running: int = 0
    most_at_once: int = 0
    fail: Exception | None = None
    keys_checked: list[str] = field(default_factory=list)

    async def check(self, api_key: str, model_id: str) -> Any:
        self.checks += 1
        self.keys_checked.append(api_key)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            return self.answer
        finally:
            self.running -= 1

    async def close(self) -> None:
        pass


class FakeClock:
    """Time that moves only when the test says so: a sleep waits for ``advance`` to pass
    its end (or, with ``autojump``, jumps there at once). ``slept`` lists every sleep
    asked for, in order."""

    def __init__(self, *, autojump: bool = False) -> None:
        self.time = 1000.0
        self.autojump = autojump
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.autojump:
            self.time += max(seconds, 0.0)
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        sleeper = (self.time + seconds, wake)
        self._sleepers.append(sleeper)
        try:
            await wake
        finally:
            self._sleepers.remove(sleeper)

    async def advance(self, seconds: float) -> None:
        """Move time on, and let the tasks whose sleep ended run until they wait again."""
        self.time += seconds
        for due, wake in list(self._sleepers):
            if due <= self.time and not wake.done():
                wake.set_result(None)
        await _let_run()

    async def next_sleep(self) -> float:
        """How long the next sleep asks for, once some task is asleep (fakes answer at
        once, so letting the loop turn a bounded number of times is enough)."""
        for _ in range(1000):
            waiting = [due - self.time for due, wake in self._sleepers if not wake.done()]
            if waiting:
                return min(waiting)
            await asyncio.sleep(0)
        raise AssertionError("nothing went to sleep")


async def _let_run() -> None:
    for _ in range(100):
        await asyncio.sleep(0)


class World:
    """A controller over fakes, with kopf's three indices kept as kopf keeps them."""

    def __init__(self, *, verifier: FakeVerifier | None = None, clock: Clock = SYSTEM_CLOCK,
                 tracing: Any = None, **publisher_options: Any) -> None:
        """``tracing``: the controller's spans (none: off); ``publisher_options``:
        ``ConfigPublisher``'s limits."""
        self.kube = FakeKube()
        shards = Shards("gateway-config", 2)
        self.config = FakeConfigStore(shards)
        self.publisher = ConfigPublisher(self.config, "gateway-ns", shards, **publisher_options)
        self.fleet = FakeFleet()
        self.verifier = verifier
        self.controller = Controller(
            OperatorConfig(gateway_public_url="http://gw:9200"), self.kube,  # type: ignore[arg-type]
            self.publisher, self.fleet, self.verifier, clock=clock,  # type: ignore[arg-type]
            tracing=tracing)
        self.bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._index()

    def _index(self) -> None:
        endpoints: dict[Any, list[Any]] = {}
        claims: dict[Any, list[Any]] = defaultdict(list)
        by_secret: dict[Any, list[Any]] = defaultdict(list)
        for key, body in self.bodies.items():
            endpoints[key] = [body]
            if not body["metadata"].get("deletionTimestamp"):
                claims[effective_inference_id(body)].append(claim_of(body))
            ref = secret_ref(key[0], body.get("spec") or {})
            if ref is not None:
                by_secret[(ref.namespace, ref.name)].append(key)
        self.controller.indices.endpoints = endpoints
        self.controller.indices.claims = dict(claims)
        self.controller.indices.by_secret = dict(by_secret)

    async def put_secret(self, name: str, value: SecretValue | None) -> None:
        """The Secret changes in the API server, and kopf hands its watch event to the
        operator's handler."""
        if value is None:
            self.kube.secrets.pop((NAMESPACE, name), None)
            event, body = {"type": "DELETED"}, {"metadata": {"name": name}}
        else:
            self.kube.secrets[(NAMESPACE, name)] = value
            event = {"type": "MODIFIED"}
            body = {"metadata": {"name": name, "resourceVersion": value.resource_version},
                    "data": value.data}
        await handlers.secret_event(
            event=event, body=body, namespace=NAMESPACE, name=name,
            by_secret=self.controller.indices.by_secret, memo=kopf.Memo(controller=self.controller))

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The resource changes, kopf updates its indices, then the event's reconcile."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.bodies[key] = body
        self._index()
        await self.controller.reconcile(body)
        return self.status(body["metadata"]["name"])

    async def delete(self, name: str) -> None:
        body = self.bodies.pop((NAMESPACE, name))
        self._index()
        await self.controller.withdraw(body)

    async def settle(self) -> None:
        """Let the reconciles the controller started by itself (reconcile_soon) finish."""
        for _ in range(100):
            pending = [t for t in self.controller._background if not t.done()]
            if not pending:
                return
            await asyncio.wait(pending, timeout=5)

    def status(self, name: str = "ep") -> dict[str, Any]:
        return self.kube.statuses.get((NAMESPACE, name), {})

    def ready(self, name: str = "ep") -> dict[str, Any]:
        return next(c for c in self.status(name)["conditions"] if c["type"] == "Ready")

    def conditions(self, name: str = "ep") -> dict[str, str]:
        return {c["type"]: c["status"] for c in self.status(name).get("conditions", ())}
