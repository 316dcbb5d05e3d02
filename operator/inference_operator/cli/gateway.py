"""``inference-operator gateway``: the Elasticsearch-compatible ``_inference`` server."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys

from inference_operator.cli.options import (
    add_log_level,
    config_default,
    config_from_args,
    optional_path,
)
from inference_operator.gateway import auth
from inference_operator.gateway.org_limits import Ceiling
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.server import GatewayConfig


def _default(name: str) -> object:
    return config_default(GatewayConfig, name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=_default("host"),
                        help="public listener address: read and inference only")
    parser.add_argument("--port", type=int, default=_default("port"),
                        help="public listener port")
    parser.add_argument("--admin-host", default=_default("admin_host"),
                        help="admin listener address: everything, bearer token required")
    parser.add_argument("--admin-port", type=int, default=_default("admin_port"),
                        help="admin listener port")
    parser.add_argument("--metrics-host", default=_default("metrics_host"),
                        help="metrics listener address (with --metrics-port)")
    parser.add_argument("--metrics-port", type=int, default=_default("metrics_port"),
                        metavar="PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (none: no "
                             "metrics listener); with --auth on, the public listener does not "
                             "serve /metrics")
    parser.add_argument("--admin-token-file", type=optional_path,
                        help="file holding the admin bearer token (required unless "
                             "--config-secret; read once at start)")
    parser.add_argument("--anthropic-base-url", default=_default("anthropic_base_url"),
                        help="upstream; point it at the emulator for offline use")
    parser.add_argument("--state-file", type=optional_path, default=_default("state_file"),
                        help="persist endpoints (with their keys) here, mode 0600")
    parser.add_argument("--queue-capacity", type=int, default=_default("queue_capacity"),
                        help="requests that may wait per rate-limit group (0: unbounded)")
    parser.add_argument("--org-limits", action=argparse.BooleanOptionalAction,
                        default=_default("org_limits"),
                        help="learn each API key's organisation limits (requests, input and "
                             "output tokens per minute, per model class) from Anthropic's "
                             "answers and admit within them; --no-org-limits: each "
                             "endpoint's requests_per_minute only")
    parser.add_argument("--org-limit", action="append", dest="org_limit_ceilings",
                        type=_ceiling, default=list(_default("org_limit_ceilings")),
                        metavar="CLASS:LIMIT=N",
                        help="an organisation limit declared ahead (repeatable), e.g. "
                             "sonnet-4:output-tokens=80000 (LIMIT: requests, input-tokens or "
                             "output-tokens per minute; CLASS: a model family and major "
                             "version): held from the first request, before any answer "
                             "tells the limits, and never learned higher")
    parser.add_argument("--retry-initial-delay", type=float,
                        default=config_default(RetryPolicy, "initial_delay"),
                        help="seconds; first backoff bound")
    parser.add_argument("--retry-max-delay", type=float,
                        default=config_default(RetryPolicy, "max_delay"),
                        help="seconds; largest backoff bound")
    parser.add_argument("--max-body-size", type=int, default=_default("max_body_size"),
                        help="bytes; larger request bodies get 413")
    parser.add_argument("--request-memory", type=int, default=_default("request_memory"),
                        metavar="BYTES",
                        help="bytes inference requests may hold while read, queued or in "
                             "flight (a body's size, then its upstream request's); beyond, "
                             "429 with Retry-After (none: a quarter of the container's "
                             "memory limit, or of 512 MiB without one)")
    parser.add_argument("--request-memory-endpoint-share", type=float,
                        default=_default("request_memory_endpoint_share"), metavar="FRACTION",
                        help="the part of --request-memory the requests of one endpoint may "
                             "hold")
    parser.add_argument("--header-timeout", type=float, default=_default("header_timeout"),
                        help="seconds for a connection to deliver a complete request head "
                             "(from opening, or from the previous answer); also the idle "
                             "keep-alive limit")
    parser.add_argument("--body-timeout", type=float, default=_default("body_timeout"),
                        help="seconds for a request body to arrive once its head has, else 408 and "
                             "the connection closes")
    parser.add_argument("--stream-write-timeout", type=float,
                        default=_default("stream_write_timeout"), metavar="SECONDS",
                        help="a stream whose client takes none of its output for this long "
                             "is cut and its upstream call closed")
    parser.add_argument("--upstream-connections-per-key", type=int,
                        default=_default("upstream_connections_per_key"), metavar="N",
                        help="upstream connections one API key may hold at once (of the "
                             "gateway's 1000)")
    parser.add_argument("--upstream-connection-wait", type=float,
                        default=_default("upstream_connection_wait"), metavar="SECONDS",
                        help="longest wait for a free upstream connection, then 503 with "
                             "Retry-After")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction,
                        default=_default("access_log"),
                        help="one JSON line per request on stdout: time, caller, endpoint, "
                             "status, tokens, latency (probes and scrapes left out)")
    parser.add_argument("--config-secret", default=_default("config_secret"), metavar="NAME",
                        help="config mode: read the endpoints from the Secrets NAME-0 .. "
                             "NAME-<shards - 1> that the operator writes, with no admin "
                             "listener, token or state file (none: standalone)")
    parser.add_argument("--config-shards", type=int, default=_default("config_shards"),
                        metavar="N",
                        help="config mode: how many shard Secrets there are")
    parser.add_argument("--namespace", default=_default("namespace"), metavar="NS",
                        help="namespace of the shard Secrets and of --peers-service (none: the "
                             "pod's own, else default)")
    parser.add_argument("--peers-service", default=_default("peers_service"), metavar="NAME",
                        help="the gateways' Service: each gateway allows rpm / its ready "
                             "endpoints, so together they allow rpm (none: rpm each)")
    parser.add_argument("--peer-port", type=int, default=_default("peer_port"), metavar="PORT",
                        help="peer admission: each rate-limit group's one owner among the "
                             "ready peers admits for the whole fleet, the others ask it on "
                             "this port (needs --peers-service, whose EndpointSlices name "
                             "the port 'peer', and --peer-token-file; none: each allows "
                             "rpm / ready peers)")
    parser.add_argument("--peer-token-file", type=optional_path,
                        default=_default("peer_token_file"), metavar="FILE",
                        help="peer admission: this gateway's ServiceAccount token for "
                             "the audience inference-operator.dev/gateway-peers (a projected "
                             "token, read again at every link); peers must present one of "
                             "the same ServiceAccount")
    parser.add_argument("--peer-address",
                        default=os.environ.get("POD_IP") or _default("peer_address"),
                        metavar="IP",
                        help="peer admission: this replica's address in the peers' "
                             "EndpointSlices (default: $POD_IP)")
    parser.add_argument("--shutdown-delay", type=float, default=_default("shutdown_delay"),
                        metavar="SECONDS",
                        help="seconds still serving after SIGTERM, not ready and closing "
                             "each connection after its answer, while load balancers move "
                             "away")
    parser.add_argument("--shutdown-timeout", type=float,
                        default=_default("shutdown_timeout"), metavar="SECONDS",
                        help="seconds, after that, for requests and streams in flight to "
                             "finish")
    parser.add_argument("--auth", choices=auth.MODES, default=_default("auth"), metavar="MODE",
                        help="who may call the public listener: anybody (none); Kubernetes "
                             "tokens with RBAC verb invoke on the endpoint's "
                             "InferenceEndpoint (kubernetes); the keys of --api-keys-file "
                             "(api-keys)")
    parser.add_argument("--auth-audience", default=_default("auth_audience"),
                        metavar="AUDIENCE",
                        help="kubernetes: the audience callers' tokens must be meant for")
    parser.add_argument("--auth-cache-seconds", type=float,
                        default=_default("auth_cache_seconds"), metavar="SECONDS",
                        help="kubernetes: longest reuse of an authentication or "
                             "authorization decision (never past the token's expiry); so "
                             "also how long a revoked RoleBinding may still let a caller in")
    parser.add_argument("--auth-cache-size", type=int, default=_default("auth_cache_size"),
                        metavar="N",
                        help="kubernetes: decisions kept, for tokens and for access each "
                             "(least recently used go first)")
    parser.add_argument("--auth-negative-cache-size", type=int,
                        default=_default("auth_negative_cache_size"), metavar="N",
                        help="kubernetes: refusals kept, apart from the decisions that let "
                             "callers in, which they never evict")
    parser.add_argument("--auth-reviews-in-flight", type=int,
                        default=_default("auth_reviews_in_flight"), metavar="N",
                        help="kubernetes: TokenReviews of tokens the gateway does not know, "
                             "at most this many at once (more: 429 with Retry-After)")
    parser.add_argument("--auth-reviews-per-second", type=float,
                        default=_default("auth_reviews_per_second"), metavar="N",
                        help="kubernetes: and at most this many per second on average "
                             "(known callers never count)")
    parser.add_argument("--api-keys-file", type=optional_path, default=_default("api_keys_file"),
                        metavar="FILE",
                        help="api-keys: YAML or JSON of Elasticsearch-style API keys, each "
                             "an id, a hashed key and the inference ids it may call "
                             "(docs/gateway.md; read once at start)")
    parser.add_argument("--caller-metrics-service-account", action="store_true",
                        default=_default("caller_metrics_service_account"),
                        help="label the per-caller metrics with the ServiceAccount (or API "
                             "key id) too, not only the namespace: a series per account")
    parser.add_argument("--caller-metrics-accounts", type=int,
                        default=_default("caller_metrics_accounts"), metavar="N",
                        help="with --caller-metrics-service-account: accounts with a label "
                             "of their own, in all; later ones count as _other")
    parser.add_argument("--caller-metrics-accounts-per-namespace", type=int,
                        default=_default("caller_metrics_accounts_per_namespace"), metavar="N",
                        help="with --caller-metrics-service-account: accounts with a label "
                             "of their own per namespace; later ones count as _other")
    parser.add_argument("--trace-upstream", action="store_true",
                        default=_default("trace_upstream"),
                        help="with tracing on (an OTLP endpoint in OTEL_EXPORTER_OTLP_ENDPOINT): "
                             "send each upstream attempt's W3C trace context to Anthropic too")
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    problem = _config_mode_problem(args) if args.config_secret else None
    token = ""
    if problem is None and not args.config_secret:
        problem, token = _admin_token(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from inference_operator.cli.serving import run_until_signal, setup_logging
    from inference_operator.gateway import accesslog
    from inference_operator.gateway.request_memory import give_back_large_blocks
    from inference_operator.gateway.server import GatewayServer

    try:  # the options' consistency and the API keys file
        server = GatewayServer(gateway_config(args, token))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    give_back_large_blocks()  # before the first request's body (gateway/request_memory.py)
    if args.access_log:
        accesslog.to_stdout()
    unconfigured: tuple[type[Exception], ...] = ()
    if args.config_secret or args.peers_service or args.auth == auth.KUBERNETES:
        # lightkube (via kubeclient) is imported only when the cluster is used
        from inference_operator.kubeclient import Unconfigured
        unconfigured = (Unconfigured,)
    import uvloop

    # uvloop's loop and transports cost the request path less CPU than asyncio's own
    # (docs/benchmarks.md); set as the policy because run_until_signal owns asyncio.run.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def start() -> None:
        await server.start()
        # What is loaded by now (modules, the app, restored endpoints) lives as long as
        # the process: frozen out of the collector's full passes, which would otherwise
        # walk all of it, every request waiting meanwhile.
        gc.collect()
        gc.freeze()

    try:
        # SIGTERM: the graceful stop (GatewayServer.shutdown), in both modes.
        return run_until_signal(start, server.shutdown)
    except unconfigured as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _config_mode_problem(args: argparse.Namespace) -> str | None:
    if args.admin_token_file:
        return ("--admin-token-file does not go with --config-secret: in config mode "
                "there is no admin listener, the endpoints come from the shard Secrets")
    if args.state_file:
        return ("--state-file does not go with --config-secret: in config mode the shard "
                "Secrets are the state")
    if args.config_shards < 1:
        return "--config-shards must be at least 1"
    return None


def _admin_token(args: argparse.Namespace) -> tuple[str | None, str]:
    """(problem, token) for a standalone gateway."""
    if not args.admin_token_file:
        return ("--admin-token-file is required (the admin listener's bearer token), "
                "unless --config-secret"), ""
    try:
        token = args.admin_token_file.read_text().strip()
    except OSError as error:
        return f"cannot read the admin token: {error}", ""
    if not token:
        return f"{args.admin_token_file} is empty", ""
    return None, token


def _ceiling(text: str) -> Ceiling:
    try:
        return Ceiling.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def gateway_config(args: argparse.Namespace, admin_token: str = "") -> GatewayConfig:
    """The config the parsed options describe; no option given: ``GatewayConfig``'s
    defaults (tests/unit/test_cli_defaults.py)."""
    retry = RetryPolicy(initial_delay=args.retry_initial_delay,
                        max_delay=args.retry_max_delay)
    return config_from_args(GatewayConfig, args, admin_token=admin_token, retry=retry)
