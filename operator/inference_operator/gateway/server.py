"""Start and stop a gateway: the service plus its public and admin listeners."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from inference_operator.gateway.http import build_app
from inference_operator.gateway.ratelimit import DEFAULT_QUEUE_CAPACITY, Limiter
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.state import StateFile
from inference_operator.gateway.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass
class GatewayConfig:
    admin_token: str
    anthropic_base_url: str = "https://api.anthropic.com"
    host: str = "0.0.0.0"
    port: int = 9200
    admin_host: str = "127.0.0.1"  # the admin listener stays on the pod/host by default
    admin_port: int = 9201
    state_file: Path | None = None
    require_sync: bool = True
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    access_log: bool = False


class GatewayServer:
    def __init__(self, config: GatewayConfig, limiter: Limiter | None = None) -> None:
        if not config.admin_token:
            raise ValueError("the admin token must not be empty")
        self.config = config
        self.gateway = Gateway(
            Upstream(config.anthropic_base_url),
            limiter=limiter or Limiter(queue_capacity=config.queue_capacity),
            retry=config.retry,
            state=StateFile(config.state_file) if config.state_file else None,
            require_sync=config.require_sync,
        )
        self._runners: list[web.AppRunner] = []
        self.port = config.port
        self.admin_port = config.admin_port

    async def start(self) -> None:
        await self.gateway.start()
        self.port = await self._listen(build_app(self.gateway), self.config.host, self.config.port)
        self.admin_port = await self._listen(
            build_app(self.gateway, admin_token=self.config.admin_token),
            self.config.admin_host, self.config.admin_port)
        log.info("gateway %s listening: public %s:%d, admin %s:%d, upstream %s",
                 self.gateway.boot_id, self.config.host, self.port, self.config.admin_host,
                 self.admin_port, self.config.anthropic_base_url)

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.gateway.close()

    async def _listen(self, app: web.Application, host: str, port: int) -> int:
        # handler_cancellation: a client that disconnects cancels its handler, and with it
        # the upstream call.
        runner = web.AppRunner(app, handler_cancellation=True,
                               access_log=logging.getLogger("aiohttp.access")
                               if self.config.access_log else None)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, host, port).start()
        return runner.addresses[-1][1]
