"""Start and stop a gateway: the service plus its public and admin listeners."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from inference_operator.anthropic_api import ANTHROPIC_API_URL
from inference_operator.gateway.http import Limits, build_app
from inference_operator.gateway.ratelimit import DEFAULT_QUEUE_CAPACITY, Limiter
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.state import StateFile
from inference_operator.gateway.upstream import Upstream

log = logging.getLogger(__name__)
# After answering a request whose body was not read (413, a stalled body's 408, 401/405
# before the body), aiohttp drains what the client still sends before closing, so the
# answer is not lost to a reset. Its default of 10 s let a client that stalls hold the
# connection that much longer; 2 s is ample for the answer to leave.
LINGERING_TIME = 2.0


@dataclass
class GatewayConfig:
    admin_token: str
    anthropic_base_url: str = ANTHROPIC_API_URL
    host: str = "0.0.0.0"
    port: int = 9200
    admin_host: str = "127.0.0.1"  # the admin listener stays on the pod/host by default
    admin_port: int = 9201
    state_file: Path | None = None
    require_sync: bool = True
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    access_log: bool = False
    max_body_size: int = Limits.max_body_size
    body_timeout: float = Limits.body_timeout
    # aiohttp's keep-alive timer starts when a connection opens and again after each
    # answer, and closes the connection if no complete request head arrived by then;
    # trickling bytes does not reset it. So it is our header timeout (a slowloris client
    # is cut after it) as well as the idle keep-alive limit. 60 s as nginx's
    # client_header_timeout; aiohttp's own default is about an hour.
    header_timeout: float = 60.0


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
        limits = Limits(max_body_size=self.config.max_body_size,
                        body_timeout=self.config.body_timeout)
        self.port = await self._listen(build_app(self.gateway, limits=limits),
                                       self.config.host, self.config.port, "public")
        self.admin_port = await self._listen(
            build_app(self.gateway, admin_token=self.config.admin_token, limits=limits),
            self.config.admin_host, self.config.admin_port, "admin")
        # Computed when /metrics is scraped, never per request: what a leak would grow.
        self.gateway.metrics.tasks.set_function(lambda: len(asyncio.all_tasks()))
        log.info("gateway %s listening: public %s:%d, admin %s:%d, upstream %s",
                 self.gateway.boot_id, self.config.host, self.port, self.config.admin_host,
                 self.admin_port, self.config.anthropic_base_url)

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.gateway.close()

    async def _listen(self, app: web.Application, host: str, port: int, listener: str) -> int:
        # handler_cancellation: a client that disconnects cancels its handler, and with it
        # the upstream call.
        runner = web.AppRunner(app, handler_cancellation=True,
                               keepalive_timeout=self.config.header_timeout,
                               lingering_time=LINGERING_TIME,
                               access_log=logging.getLogger("aiohttp.access")
                               if self.config.access_log else None)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, host, port).start()
        server = runner.server
        assert server is not None
        self.gateway.metrics.connections.labels(listener).set_function(
            lambda: len(server.connections))
        return runner.addresses[-1][1]
