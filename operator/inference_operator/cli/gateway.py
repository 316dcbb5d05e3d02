"""``inference-operator gateway``: the Elasticsearch-compatible ``_inference`` server."""

from __future__ import annotations

import argparse
import sys

from inference_operator.cli.options import add_log_level, config_default, optional_path
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
    parser.add_argument("--admin-token-file", type=optional_path,
                        help="file holding the admin bearer token (required; read once at start)")
    parser.add_argument("--anthropic-base-url", default=_default("anthropic_base_url"),
                        help="upstream; point it at the emulator for offline use")
    parser.add_argument("--state-file", type=optional_path, default=_default("state_file"),
                        help="persist endpoints (with their keys) here, mode 0600")
    parser.add_argument("--ready-without-sync", action="store_true",
                        default=not _default("require_sync"),
                        help="report ready at once (standalone use, no operator to sync; see "
                             "Readiness)")
    parser.add_argument("--queue-capacity", type=int, default=_default("queue_capacity"),
                        help="requests that may wait per rate-limit group (0: unbounded)")
    parser.add_argument("--retry-initial-delay", type=float,
                        default=config_default(RetryPolicy, "initial_delay"),
                        help="seconds; first backoff bound")
    parser.add_argument("--retry-max-delay", type=float,
                        default=config_default(RetryPolicy, "max_delay"),
                        help="seconds; largest backoff bound")
    parser.add_argument("--max-body-size", type=int, default=_default("max_body_size"),
                        help="bytes; larger request bodies get 413")
    parser.add_argument("--header-timeout", type=float, default=_default("header_timeout"),
                        help="seconds for a connection to deliver a complete request head "
                             "(from opening, or from the previous answer); also the idle "
                             "keep-alive limit")
    parser.add_argument("--body-timeout", type=float, default=_default("body_timeout"),
                        help="seconds for a request body to arrive once its head has, else 408 and "
                             "the connection closes")
    parser.add_argument("--access-log", action="store_true", default=_default("access_log"),
                        help="log every request")
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    if not args.admin_token_file:
        print("error: --admin-token-file is required (the admin listener's bearer token)",
              file=sys.stderr)
        return 2
    try:
        token = args.admin_token_file.read_text().strip()
    except OSError as error:
        print(f"error: cannot read the admin token: {error}", file=sys.stderr)
        return 2
    if not token:
        print(f"error: {args.admin_token_file} is empty", file=sys.stderr)
        return 2
    from inference_operator.cli.serving import run_until_signal, setup_logging
    from inference_operator.gateway.server import GatewayServer

    setup_logging(args.log_level)
    server = GatewayServer(gateway_config(args, token))
    return run_until_signal(server.start, server.stop)


def gateway_config(args: argparse.Namespace, admin_token: str) -> GatewayConfig:
    """The config the parsed options describe; no option given: ``GatewayConfig``'s
    defaults (tests/unit/test_cli_defaults.py)."""
    return GatewayConfig(
        admin_token=admin_token,
        anthropic_base_url=args.anthropic_base_url,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        state_file=args.state_file,
        require_sync=not args.ready_without_sync,
        queue_capacity=args.queue_capacity,
        retry=RetryPolicy(initial_delay=args.retry_initial_delay,
                          max_delay=args.retry_max_delay),
        access_log=args.access_log,
        max_body_size=args.max_body_size,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
