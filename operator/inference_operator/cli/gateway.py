"""``inference-operator gateway``: the Elasticsearch-compatible ``_inference`` server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="public listener address")
    parser.add_argument("--admin-host", default="127.0.0.1", help="admin listener address")
    parser.add_argument("--ready-without-sync", action="store_true",
                        help="report ready at once (standalone use, no operator to sync)")
    parser.add_argument("--queue-capacity", type=int, default=2000,
                        help="requests that may wait per rate-limit group (0: unbounded)")
    parser.add_argument("--retry-initial-delay", type=float, default=1.0, help="seconds")
    parser.add_argument("--retry-max-delay", type=float, default=5.0, help="seconds")
    parser.add_argument("--max-body-size", type=int, default=1024 * 1024,
                        help="bytes; larger request bodies get 413 (default 1 MiB)")
    parser.add_argument("--header-timeout", type=float, default=60.0,
                        help="seconds for a connection to deliver a complete request head "
                             "(from opening, or from the previous answer); also the idle "
                             "keep-alive limit")
    parser.add_argument("--body-timeout", type=float, default=60.0,
                        help="seconds for a request body to arrive once its head has (408)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    if not args.admin_token_file:
        print("error: --admin-token-file is required (the admin listener's bearer token)",
              file=sys.stderr)
        return 2
    try:
        token = Path(args.admin_token_file).read_text().strip()
    except OSError as error:
        print(f"error: cannot read the admin token: {error}", file=sys.stderr)
        return 2
    if not token:
        print(f"error: {args.admin_token_file} is empty", file=sys.stderr)
        return 2
    from inference_operator.cli.serving import run_until_signal, setup_logging
    from inference_operator.gateway.retry import RetryPolicy
    from inference_operator.gateway.server import GatewayConfig, GatewayServer

    setup_logging(args.log_level)
    server = GatewayServer(GatewayConfig(
        admin_token=token,
        anthropic_base_url=args.anthropic_base_url,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        state_file=Path(args.state_file) if args.state_file else None,
        require_sync=not args.ready_without_sync,
        queue_capacity=args.queue_capacity,
        retry=RetryPolicy(initial_delay=args.retry_initial_delay,
                          max_delay=args.retry_max_delay),
        access_log=args.access_log,
        max_body_size=args.max_body_size,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    ))
    return run_until_signal(server.start, server.stop)
