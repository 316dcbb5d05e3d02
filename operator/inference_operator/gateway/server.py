"""Start and stop a gateway: the service plus its listeners, and in config mode its
Kubernetes watches. Standalone, a public and an admin listener (a user puts endpoints on
the admin one, kept in the optional state file); in config mode (``config_secret``) only
the public one, the endpoints being read from the configuration shards
(gateway/config_source.py).
The public listener's callers are checked as ``auth`` says (gateway/auth/)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from inference_operator import telemetry
from inference_operator.anthropic import ANTHROPIC_API_URL
from inference_operator.anthropic.client import CONNECTION_WAIT, MAX_CONNECTIONS_PER_KEY, Upstream
from inference_operator.api.gateway_config import DEFAULT_SHARDS, Shards
from inference_operator.gateway import auth as modes
from inference_operator.gateway.auth.caller import Access
from inference_operator.gateway.http import Limits, build_app
from inference_operator.gateway.metrics import (
    DEFAULT_CALLER_ACCOUNTS,
    DEFAULT_CALLER_ACCOUNTS_PER_NAMESPACE,
    GatewayMetrics,
)
from inference_operator.gateway.org_limits import Ceiling
from inference_operator.gateway.peering import owners
from inference_operator.gateway.peering.identity import AUDIENCE as PEER_AUDIENCE
from inference_operator.gateway.peering.identity import PeerIdentity, account_of, read_token
from inference_operator.gateway.peering.links import Links
from inference_operator.gateway.peering.server import PeerServer
from inference_operator.gateway.probes import build_metrics_app
from inference_operator.gateway.ratelimit import DEFAULT_QUEUE_CAPACITY, Limiter
from inference_operator.gateway.request_memory import (
    DEFAULT_ENDPOINT_SHARE,
    RequestMemory,
    default_budget,
    memory_limit,
)
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.service import Gateway
from inference_operator.gateway.state import StateFile
from inference_operator.gateway.tracing import Tracing

if TYPE_CHECKING:  # lightkube (~6 MiB) is imported only when the cluster is used
    from lightkube import AsyncClient
    from opentelemetry.sdk.trace import TracerProvider  # only when tracing is on

log = logging.getLogger(__name__)
# After answering a request whose body was not read (413, a stalled body's 408, 401/405
# before the body), aiohttp drains what the client still sends before closing, so the
# answer is not lost to a reset. Its default of 10 s let a client that stalls hold the
# connection that much longer; 2 s is ample for the answer to leave.
LINGERING_TIME = 2.0
# What a connection sending a body may have buffered before its handler reads it (or
# refuses it unread): aiohttp reads ahead up to twice its read buffer, and each read takes
# what the socket holds. Both small, so a crowd of clients uploading at once costs little
# memory outside the request budget (docs/reliability.md, "Isolation: request CPU and
# memory"); the receive buffer still covers an in-cluster round trip many times over.
READ_BUFFER = 16 * 1024
RECEIVE_BUFFER = 64 * 1024
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket for ``host:port`` whose accepted connections inherit its small
    receive buffer (set before they exist, so their window is negotiated with it)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _peer_account(config: GatewayConfig) -> str | None:
    """With peer admission on, the ServiceAccount its peers must be (its own token's);
    ValueError for what is missing."""
    if config.peer_port is None:
        return None
    if not config.peers_service:
        raise ValueError("peer admission (--peer-port) needs --peers-service: the peers "
                         "are its ready endpoints")
    if not config.peer_address:
        raise ValueError("peer admission (--peer-port) needs this replica's address "
                         "(--peer-address, or $POD_IP)")
    if config.peer_token_file is None:
        raise ValueError("peer admission (--peer-port) needs --peer-token-file: the "
                         "gateway's ServiceAccount token for the audience "
                         f"{PEER_AUDIENCE}, which only its peers accept")
    try:
        return account_of(read_token(config.peer_token_file))
    except OSError as error:
        raise ValueError(f"the peer token file {config.peer_token_file}: "
                         f"{error.strerror}") from None


def pod_namespace() -> str:
    """The namespace of the pod this runs in; "default" outside one."""
    try:
        return POD_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass
class GatewayConfig:
    admin_token: str = ""  # standalone: required; config mode: none (no admin listener)
    anthropic_base_url: str = ANTHROPIC_API_URL
    # Loopback unless told otherwise: a standalone gateway's default is --auth none, and
    # whoever reaches the listener may spend every endpoint's key (the chart sets 0.0.0.0).
    host: str = "127.0.0.1"
    port: int = 9200
    admin_host: str = "127.0.0.1"  # the admin listener stays on the pod/host by default
    admin_port: int = 9201
    # /metrics on a listener of its own (None: none). With --auth on, the public listener
    # never serves /metrics: the series name endpoints and callers' namespaces. Loopback
    # unless told, as the other listeners (the chart sets 0.0.0.0 for Prometheus).
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    state_file: Path | None = None
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    # Learn each key's organisation limits from Anthropic's answers and admit within them
    # (gateway/org_limits.py); off: each endpoint's requests_per_minute only.
    org_limits: bool = True
    # Organisation limits declared ahead, per model class: held from the start, never
    # learned higher.
    org_limit_ceilings: tuple[Ceiling, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    access_log: bool = True  # one JSON line per request (gateway/accesslog.py)
    max_body_size: int = Limits.max_body_size
    body_timeout: float = Limits.body_timeout
    # Bytes inference requests may hold while read, queued or in flight (None: a
    # quarter of the container's memory limit, gateway/request_memory.py), and the share
    # of them one endpoint may hold.
    request_memory: int | None = None
    request_memory_endpoint_share: float = DEFAULT_ENDPOINT_SHARE
    # Upstream connections: a stream whose client takes nothing for this long is
    # cut and its upstream call closed; each API key may hold at most this many
    # connections; a call waits this long for a free one, then 503.
    stream_write_timeout: float = Limits.stream_write_timeout
    upstream_connections_per_key: int = MAX_CONNECTIONS_PER_KEY
    upstream_connection_wait: float = CONNECTION_WAIT
    # aiohttp's keep-alive timer starts when a connection opens and again after each
    # answer, and closes the connection if no complete request head arrived by then;
    # trickling bytes does not reset it. So it is our header timeout (a slowloris client
    # is cut after it) as well as the idle keep-alive limit. 60 s as nginx's
    # client_header_timeout; aiohttp's own default is about an hour.
    header_timeout: float = 60.0
    # Config mode: the shards are Secrets <config_secret>-0 .. -<config_shards - 1>.
    config_secret: str | None = None  # None or "": standalone
    config_shards: int = DEFAULT_SHARDS
    namespace: str | None = None  # of the shards and the peers' Service; None: pod_namespace()
    peers_service: str | None = None  # None: this gateway alone enforces each rate limit
    # Peer admission (gateway/peering/): each rate-limit group's one owner admits for the
    # whole fleet; peers link to each other on this port (None: off, each allows rpm/N),
    # presenting the ServiceAccount token (audience peering.identity.AUDIENCE) in this
    # file; this replica is known by this address (None: $POD_IP) and the port as the
    # peers' EndpointSlices give them.
    peer_port: int | None = None
    peer_token_file: Path | None = None
    peer_address: str | None = None
    # On SIGTERM: not ready at once, but serving for shutdown_delay seconds more (the time
    # kube-proxy and load balancers take to stop sending new connections here), then no
    # more listening and up to shutdown_timeout seconds for requests in flight.
    shutdown_delay: float = 5.0
    shutdown_timeout: float = 20.0
    # Who may call the public listener (gateway/auth/): none, kubernetes or api-keys.
    auth: str = modes.NONE
    auth_audience: str = modes.DEFAULT_AUDIENCE  # kubernetes: the tokens' audience
    auth_cache_seconds: float = modes.DEFAULT_CACHE_SECONDS  # a decision's longest reuse
    auth_cache_size: int = modes.DEFAULT_CACHE_SIZE  # decisions kept, per cache
    auth_negative_cache_size: int = modes.DEFAULT_NEGATIVE_CACHE_SIZE  # refusals kept, apart
    # kubernetes: TokenReviews of unknown tokens at once and per second (beyond: 429)
    auth_reviews_in_flight: int = modes.DEFAULT_REVIEWS_IN_FLIGHT
    auth_reviews_per_second: float = modes.DEFAULT_REVIEWS_PER_SECOND
    api_keys_file: Path | None = None  # api-keys: the keys (read once at start)
    # The per-caller metrics also by ServiceAccount (or API key id), not only namespace.
    caller_metrics_service_account: bool = False
    # ... within a budget of accounts with a label of their own (beyond: "_other").
    caller_metrics_accounts: int = DEFAULT_CALLER_ACCOUNTS
    caller_metrics_accounts_per_namespace: int = DEFAULT_CALLER_ACCOUNTS_PER_NAMESPACE
    # Tracing is on when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT, telemetry.py);
    # then this sends each upstream attempt's trace context to Anthropic too (off: the
    # caller's trace ids never leave the cluster).
    trace_upstream: bool = False


class GatewayServer:
    def __init__(self, config: GatewayConfig, limiter: Limiter | None = None,
                 kube: Callable[[], Awaitable[AsyncClient]] | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        """``kube``: how to reach the API server (default: ``kubeclient.connect``);
        ``tracer_provider``: where spans go (default: the OTEL_* variables', when they
        turn tracing on)."""
        shards: list[str] = []
        if config.config_secret:
            if config.admin_token or config.state_file:
                raise ValueError("a gateway in config mode has no admin listener and no "
                                 "state file: the configuration shards are its state")
            shards = Shards(config.config_secret, config.config_shards).names()
        elif not config.admin_token:
            raise ValueError("the admin token must not be empty")
        problem = modes.config_problem(
            config.auth, audience=config.auth_audience, cache_seconds=config.auth_cache_seconds,
            cache_size=config.auth_cache_size,
            negative_cache_size=config.auth_negative_cache_size,
            reviews_in_flight=config.auth_reviews_in_flight,
            reviews_per_second=config.auth_reviews_per_second,
            api_keys_file=config.api_keys_file)
        if problem is not None:
            raise ValueError(problem)
        if config.stream_write_timeout <= 0:
            raise ValueError("the stream write timeout must be positive")
        self._peer_account = _peer_account(config)
        problem = telemetry.config_problem()
        if problem is not None:
            raise ValueError(problem)
        if tracer_provider is None and telemetry.tracing_enabled():
            tracer_provider = telemetry.tracer_provider("inference-gateway")
        self.config = config
        self.namespace = config.namespace or pod_namespace()
        self.gateway = Gateway(
            Upstream(config.anthropic_base_url,
                     connections_per_key=config.upstream_connections_per_key,
                     connection_wait=config.upstream_connection_wait),
            limiter=limiter or Limiter(queue_capacity=config.queue_capacity),
            retry=config.retry,
            org_limits=config.org_limits,
            org_limit_ceilings=config.org_limit_ceilings,
            state=StateFile(config.state_file) if config.state_file else None,
            shards=shards,
            metrics=GatewayMetrics(
                caller_service_account=config.caller_metrics_service_account,
                caller_accounts=config.caller_metrics_accounts,
                caller_accounts_per_namespace=config.caller_metrics_accounts_per_namespace),
            request_memory=RequestMemory(
                config.request_memory or default_budget(memory_limit()),
                config.request_memory_endpoint_share),
            tracing=None if tracer_provider is None else Tracing(
                tracer_provider, config.anthropic_base_url,
                propagate_upstream=config.trace_upstream,
                capture_content=telemetry.capture_content()),
        )
        self.access: Access | None = None
        if config.auth == modes.API_KEYS:
            from inference_operator.gateway.auth.apikeys import ApiKeyAccess, load

            assert config.api_keys_file is not None
            self.access = ApiKeyAccess(load(config.api_keys_file))
        self._kube = kube
        self._links: Links | None = None
        self._api: AsyncClient | None = None
        self._watches: list[asyncio.Task[None]] = []
        self._runners: list[web.AppRunner] = []
        self.port = config.port
        self.admin_port = config.admin_port
        self.metrics_port = config.metrics_port
        self.peer_port = config.peer_port

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # what did start (the upstream session, a listener) stops
            raise

    async def _start(self) -> None:
        await self.gateway.start()
        limits = Limits(max_body_size=self.config.max_body_size,
                        body_timeout=self.config.body_timeout,
                        stream_write_timeout=self.config.stream_write_timeout)
        uses_cluster = bool(self.gateway.shards.names or self.config.peers_service
                            or self.config.auth == modes.KUBERNETES)
        if uses_cluster:  # only reads the credentials: nothing is asked yet
            await self._connect()
        if self.config.metrics_port is not None:
            self.metrics_port = await self._listen(
                build_metrics_app(self.gateway), self.config.metrics_host,
                self.config.metrics_port, "metrics")
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_host,
                     self.metrics_port)
        if not self.gateway.shards.names:
            self.admin_port = await self._listen(
                build_app(self.gateway, admin_token=self.config.admin_token, limits=limits,
                          access_log=self.config.access_log),
                self.config.admin_host, self.config.admin_port, "admin")
        # Listening before the configuration is read: /healthz answers (liveness) while
        # /readyz says what is still missing. The public listener last: its /healthz is
        # what tells that the process is up, so the others must already listen by then.
        self.port = await self._listen(
            build_app(self.gateway, limits=limits, access=self.access,
                      access_log=self.config.access_log),
            self.config.host, self.config.port, "public")
        if self._peer_account is not None:
            await self._start_peering(self._peer_account)
        if uses_cluster:
            self._watch_cluster()
        # Computed when /metrics is scraped, never per request: what a leak would grow.
        self.gateway.metrics.tasks.set_function(lambda: len(asyncio.all_tasks()))
        if self.gateway.shards.names:
            log.info("gateway listening on %s:%d, upstream %s; endpoints from the "
                     "Secrets %s/%s-0..%d; %s", self.config.host,
                     self.port, self.config.anthropic_base_url, self.namespace,
                     self.config.config_secret, self.config.config_shards - 1, self._callers())
        else:
            log.info("gateway listening: public %s:%d, admin %s:%d, upstream %s; %s",
                     self.config.host, self.port,
                     self.config.admin_host, self.admin_port, self.config.anthropic_base_url,
                     self._callers())
            if self.config.auth == modes.KUBERNETES:
                log.warning("--auth kubernetes without --config-secret: endpoints put on "
                            "the admin listener have no owner InferenceEndpoint, and every "
                            "caller is refused them")
        if self.config.auth == modes.NONE and self.config.host not in _LOOPBACK_HOSTS:
            log.warning("--auth none on %s: anybody who reaches this address may call every "
                        "endpoint and spend its key (--auth api-keys or kubernetes checks "
                        "callers)", self.config.host)

    async def _start_peering(self, account: str) -> None:
        config, gateway = self.config, self.gateway
        assert config.peer_port is not None and config.peer_address is not None
        assert config.peer_token_file is not None and self._api is not None
        identity = PeerIdentity(self._api, gateway.metrics, account)
        self.peer_port = await self._listen(
            PeerServer(gateway.limiter, gateway.budgets, gateway.routing, identity,
                       gateway.limiter.clock).app(),
            config.host, config.peer_port, "peer")
        member = owners.member(config.peer_address, self.peer_port)
        self._links = Links(member, functools.partial(read_token, config.peer_token_file),
                            gateway.limiter.clock, gateway.metrics)
        gateway.routing.enable(member, self._links)
        log.info("peer admission on as %s (%s): each rate-limit group's owner among the "
                 "ready peers of %s admits for all", member, account, config.peers_service)

    def _callers(self) -> str:
        config = self.config
        if config.auth == modes.KUBERNETES:
            return (f"callers: Kubernetes tokens of audience {config.auth_audience} "
                    f"(TokenReview) with RBAC verb invoke on inferenceendpoints "
                    f"(SubjectAccessReview), decisions kept {config.auth_cache_seconds:g}s")
        if config.auth == modes.API_KEYS:
            return f"callers: the API keys of {config.api_keys_file}"
        return "callers: anybody (--auth none)"

    async def _connect(self) -> None:
        from inference_operator import kubeclient

        self._api = await (self._kube or kubeclient.connect)()
        if self.config.auth == modes.KUBERNETES:
            from inference_operator.gateway.auth.budget import ReviewBudget
            from inference_operator.gateway.auth.kubernetes import KubernetesAccess

            self.access = KubernetesAccess(
                self._api, self.gateway.metrics, audience=self.config.auth_audience,
                cache_seconds=self.config.auth_cache_seconds,
                cache_size=self.config.auth_cache_size,
                negative_cache_size=self.config.auth_negative_cache_size,
                reviews=ReviewBudget(self.config.auth_reviews_in_flight,
                                     self.config.auth_reviews_per_second))

    def _watch_cluster(self) -> None:
        from inference_operator.gateway.config_source import ConfigSource
        from inference_operator.gateway.peers import Peers

        assert self._api is not None
        if self.gateway.shards.names:
            self._watches += ConfigSource(self._api, self.namespace, self.gateway.shards,
                                          self.gateway.metrics).start()
        if self.config.peers_service:
            self._watches.append(Peers(self._api, self.namespace, self.config.peers_service,
                                       self.gateway.sharing, self.gateway.routing).start())

    async def shutdown(self) -> None:
        """The graceful stop (SIGTERM): not ready at once; serving, every answer with
        ``Connection: close`` so keep-alive clients go elsewhere, for ``shutdown_delay``;
        then ``stop()``, which lets requests in flight finish."""
        self.gateway.readiness.begin_draining()
        log.info("shutting down: not ready; serving %gs more, then up to %gs for requests "
                 "in flight", self.config.shutdown_delay, self.config.shutdown_timeout)
        await asyncio.sleep(self.config.shutdown_delay)
        await self.stop()
        log.info("gateway stopped")

    async def stop(self) -> None:
        # aiohttp's cleanup stops listening, closes idle connections and waits up to the
        # runner's shutdown_timeout for handlers in flight (streams too) before it
        # cancels them. Both listeners at once, so the wait is one timeout, not two.
        await asyncio.gather(*(runner.cleanup() for runner in self._runners))
        self._runners.clear()
        for task in self._watches:
            task.cancel()
        for task in self._watches:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watches.clear()
        if self._links is not None:
            await self._links.close()
            self._links = None
        if self._api is not None:
            await self._api.close()
            self._api = None
        await self.gateway.close()

    async def _listen(self, app: web.Application, host: str, port: int, listener: str) -> int:
        # handler_cancellation: a client that disconnects cancels its handler, and with it
        # the upstream call.
        runner = web.AppRunner(app, handler_cancellation=True,
                               keepalive_timeout=self.config.header_timeout,
                               lingering_time=LINGERING_TIME,
                               shutdown_timeout=self.config.shutdown_timeout,
                               # Ours instead (gateway/accesslog.py): JSON, with the caller.
                               access_log=None, read_bufsize=READ_BUFFER)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, _listening_socket(host, port)).start()
        server = runner.server
        assert server is not None
        self.gateway.metrics.connections.labels(listener).set_function(
            lambda: len(server.connections))
        return runner.addresses[-1][1]
