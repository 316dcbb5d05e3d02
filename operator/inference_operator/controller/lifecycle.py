"""Operator start-up and shutdown, kopf's production settings, and the gateway watcher
that notices a restarted gateway and resyncs it at once (not at the next resync)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from inference_operator.api.models import GROUP
from inference_operator.controller.config import OperatorConfig
from inference_operator.controller.gateway_client import GatewayClient, GatewayUnavailable
from inference_operator.controller.kube import Kube
from inference_operator.controller.reconciler import Controller
from inference_operator.controller.upstream import UpstreamVerifier

log = logging.getLogger(__name__)
INDEX_WAIT_SECONDS = 30.0


def configure(settings: kopf.OperatorSettings) -> None:
    # Our own prefix for everything kopf writes, not kopf.zalando.org.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
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
    kube = await Kube.connect()
    gateway = GatewayClient(config.gateway_admin_url, config.admin_token())
    verifier = UpstreamVerifier(config.anthropic_base_url) if config.verify_upstream else None
    controller = Controller(config, kube, gateway, verifier)
    controller.indices.endpoints = endpoints
    controller.indices.claims = claims
    controller.indices.by_secret = by_secret
    memo.controller = controller
    memo.watcher = asyncio.create_task(watch_gateway(controller))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.watcher.cancel()
    controller: Controller = memo.controller
    await controller.close()
    await controller.gateway.close()
    if controller.verifier is not None:
        await controller.verifier.close()
    await controller.kube.close()


@kopf.on.probe(id="gateway_watcher")
async def gateway_watcher_alive(memo: kopf.Memo, **_: Any) -> str:
    """Liveness fails when the watcher died or the API server stopped answering."""
    if memo.watcher.done():
        raise RuntimeError("the gateway watcher has stopped")
    controller: Controller = memo.controller
    await controller.kube.list_endpoints(controller.config.namespaces, limit=1)
    return "ok"


async def _indexed(controller: Controller) -> None:
    """Wait until kopf's index holds every resource the API server lists, so the first
    full sync does not drop endpoints kopf has not seen yet."""
    listed = await controller.kube.list_endpoints(controller.config.namespaces)
    wanted = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in listed}
    deadline = asyncio.get_running_loop().time() + INDEX_WAIT_SECONDS
    while not wanted <= set(controller.indices.endpoints.keys()):
        if asyncio.get_running_loop().time() > deadline:
            log.warning("index still misses %d resource(s); syncing anyway",
                        len(wanted - set(controller.indices.endpoints.keys())))
            return
        await asyncio.sleep(0.1)


async def watch_gateway(controller: Controller) -> None:
    config = controller.config
    boot_id: str | None = None
    since_resync = 0.0
    while True:
        try:
            health = await controller.gateway.health()
            if health.get("boot_id") != boot_id or not health.get("synced", True):
                await _indexed(controller)
                await controller.full_sync(force=True)
                log.info("gateway %s synced", health.get("boot_id"))
                boot_id, since_resync = health.get("boot_id"), 0.0
            elif since_resync >= config.resync_seconds:
                await controller.full_sync(force=False)
                since_resync = 0.0
        except GatewayUnavailable as error:
            if boot_id is not None:
                log.warning("gateway unavailable: %s", error)
            boot_id = None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway watcher cycle failed; retrying")
        await asyncio.sleep(config.gateway_poll_seconds)
        since_resync += config.gateway_poll_seconds
