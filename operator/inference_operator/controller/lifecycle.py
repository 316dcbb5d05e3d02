"""Operator start-up and shutdown, kopf's production settings, and the operator's two
loops: the fleet watcher, which follows what the gateway replicas serve, and the periodic
full resync."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import kopf
from httpx2 import TransportError
from lightkube import ApiError

from inference_operator import telemetry
from inference_operator.api.gateway_config import Shards
from inference_operator.api.models import GROUP
from inference_operator.controller.config import OperatorConfig
from inference_operator.controller.fleet import Addresses, Fleet, static_addresses
from inference_operator.controller.kube import Kube
from inference_operator.controller.metrics import MetricsServer, OperatorMetrics
from inference_operator.controller.org_limits import OrgLimitsReader
from inference_operator.controller.publisher import ConfigPublisher
from inference_operator.controller.reconciler import Controller
from inference_operator.controller.tracing import ReconcileTracing
from inference_operator.controller.upstream import UpstreamVerifier

log = logging.getLogger(__name__)
INDEX_WAIT_SECONDS = 30.0
# Below the chart's liveness budget (10 s initial delay, 3 failures 20 s apart).
FIRST_REPLICA_WAIT_SECONDS = 30.0


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base at all. kopf keeps one to tell a create from an update for their
    cause handlers; the operator has none (one level-based reconcile, and the delete
    handler needs no diff), and kopf's annotation storage patched every resource once
    more after its creation and again after every spec change. Without one, kopf sees a
    "creation" for which no handler is registered, and writes nothing."""

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


def configure(settings: kopf.OperatorSettings) -> None:
    # Our own prefix for everything kopf writes, not kopf.zalando.org.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Log records become Events only from WARNING up; transitions are posted explicitly.
    settings.posting.level = logging.WARNING
    # Bookmarks plus inactivity detection (kopf >= 1.44) restart a watch that went silent;
    # server/client timeouts bound each watch request as a second line of defence.
    settings.watching.inactivity_timeout = 70
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # kopf would list and watch CRDs (and namespaces) to discover resources; the operator
    # serves one known resource, and least-privilege RBAC rightly refuses those reads.
    settings.scanning.disabled = True


@kopf.on.startup()
async def startup(
    settings: kopf.OperatorSettings, memo: kopf.Memo,
    endpoints: kopf.Index, claims: kopf.Index, by_secret: kopf.Index, **_: Any,
) -> None:
    configure(settings)
    config: OperatorConfig = memo.config
    # First, so that a port taken fails the start before anything else is opened; and
    # once only: kopf runs this handler again after a failure later on.
    if "metrics" not in memo:
        memo.metrics = OperatorMetrics()
        memo.metrics_server = await _serve_metrics(config, memo.metrics)
        memo.tracing = ReconcileTracing(telemetry.tracer_provider("inference-operator")) if (
            telemetry.tracing_enabled()) else None
    kube = await Kube.connect()
    publisher = ConfigPublisher(kube, config.gateway_config_namespace,
                                Shards(config.gateway_config_secret, config.gateway_config_shards),
                                max_per_namespace=config.max_endpoints_per_namespace)
    def gateways(urls: tuple[str, ...], service: str) -> Addresses:
        """Fixed URLs for a gateway outside a cluster (--gateway-status-url given), else
        the ready addresses of the Service."""
        return static_addresses(urls) if config.gateway_status_urls else (
            lambda: kube.ready_addresses(config.gateway_config_namespace, service))

    fleet = Fleet(gateways(config.gateway_status_urls, config.gateway_service))
    org_limits = OrgLimitsReader(gateways(config.gateway_metrics_urls,
                                          config.gateway_metrics_service))
    # All three before kopf's first events: the first reconciles then find the statuses they
    # would write already there, so a restarted operator changes no resource. In sidecar
    # mode the gateway restarts with the operator and is ready a few seconds later:
    # without the wait, every status would say "no gateway replica" for that moment.
    await publisher.load()
    if not await fleet.wait_for_replica(FIRST_REPLICA_WAIT_SECONDS):
        log.warning("no gateway replica ready after %.0fs; statuses will say so",
                    FIRST_REPLICA_WAIT_SECONDS)
    await org_limits.refresh()
    verifier = UpstreamVerifier(config.anthropic_base_url) if config.verify_upstream else None
    if verifier is not None:
        await verifier.start()
    controller = Controller(config, kube, publisher, fleet, verifier, memo.metrics,
                            tracing=memo.tracing, org_limits=org_limits)
    fleet.on_change = controller.fleet_changed
    controller.indices.endpoints = endpoints
    controller.indices.claims = claims
    controller.indices.by_secret = by_secret
    memo.controller = controller
    memo.watcher = asyncio.create_task(watch_fleet(controller))
    memo.resync = asyncio.create_task(resync(controller))
    memo.org_watcher = asyncio.create_task(watch_org_limits(controller))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.watcher.cancel()
    memo.resync.cancel()
    memo.org_watcher.cancel()
    controller: Controller = memo.controller
    await controller.close()
    await controller.fleet.close()
    await controller.org_limits.close()
    if controller.verifier is not None:
        await controller.verifier.close()
    await controller.kube.close()
    if memo.metrics_server is not None:
        await memo.metrics_server.close()
    if controller.tracing is not None:  # what is queued is exported, off the event loop
        await asyncio.to_thread(controller.tracing.shutdown)


async def _serve_metrics(config: OperatorConfig, metrics: OperatorMetrics) -> MetricsServer | None:
    if config.metrics_port is None:
        return None
    server = MetricsServer(metrics, config.metrics_address, config.metrics_port)
    try:
        await server.start()
    except OSError as error:  # retrying would not free the port: stop the operator
        raise kopf.PermanentError(
            f"cannot serve metrics on {config.metrics_address}:{config.metrics_port}: "
            f"{error.strerror or error}") from error
    return server


@kopf.on.probe(id="fleet_watcher")
async def fleet_watcher_alive(memo: kopf.Memo, **_: Any) -> str:
    """Liveness fails when a loop died or the API server stopped answering."""
    if memo.watcher.done():
        raise RuntimeError("the fleet watcher has stopped")
    if memo.resync.done():
        raise RuntimeError("the periodic resync has stopped")
    if memo.org_watcher.done():
        raise RuntimeError("the organisation limits watcher has stopped")
    controller: Controller = memo.controller
    await controller.kube.endpoint_keys(controller.config.namespaces, first_only=True)
    return "ok"


async def _indexed(controller: Controller) -> None:
    """Wait until kopf's index holds every resource the API server lists, so the first
    full sync does not drop endpoints kopf has not seen yet."""
    wanted = await controller.kube.endpoint_keys(controller.config.namespaces)
    clock = controller.clock
    deadline = clock.now() + INDEX_WAIT_SECONDS
    while not wanted <= set(controller.indices.endpoints.keys()):
        if clock.now() > deadline:
            log.warning("index still misses %d resource(s); syncing anyway",
                        len(wanted - set(controller.indices.endpoints.keys())))
            return
        await clock.sleep(0.1)


async def watch_fleet(controller: Controller) -> None:
    """Poll the replicas; a change revisits the statuses it concerns, through the fleet's
    ``on_change``."""
    while True:
        await _survived("fleet watcher", controller.fleet.refresh())
        await controller.clock.sleep(controller.config.gateway_poll_seconds)


async def watch_org_limits(controller: Controller) -> None:
    """Read what the gateways learned of the organisation limits; the endpoints whose
    figures changed get their status rewritten."""
    while True:
        await controller.clock.sleep(controller.config.org_limits_poll_seconds)
        await _survived("organisation limits watcher", controller.org_limits_changed())


async def resync(controller: Controller) -> None:
    """Reconcile everything every ``resync_seconds``, first once kopf's index is complete:
    that first sync drops endpoints whose resource went while the operator was away. A
    sync that failed is tried again after a poll interval, not a whole period later."""
    config, synced = controller.config, False
    while True:
        done = await _survived("resync", _full_sync(controller, first=not synced))
        synced = synced or done
        await controller.clock.sleep(
            config.resync_seconds if done else config.gateway_poll_seconds)


async def _full_sync(controller: Controller, first: bool) -> None:
    if first:
        await _indexed(controller)
    await controller.full_sync()
    if first:
        log.info("first full sync done: %d endpoint(s) published",
                 len(controller.publisher.published()))


async def _survived(loop: str, cycle: Awaitable[Any]) -> bool:
    """Run one cycle of a loop that must outlive its failures; whether it succeeded."""
    try:
        await cycle
    except ApiError as error:  # the API server busy or away: said, not a bug
        log.warning("%s: the API server answered %s %s; retrying",
                    loop, error.status.code, error.status.reason)
    except TransportError as error:
        log.warning("%s: cannot reach the API server (%s); retrying", loop,
                    type(error).__name__)
    except Exception:
        log.exception("%s cycle failed; retrying", loop)
    else:
        return True
    return False
