"""``inference-operator run``: the kopf operator against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--namespace", "-n", action="append", default=[], dest="namespaces",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--gateway-admin-url", default=env("GATEWAY_ADMIN_URL", "http://127.0.0.1:9201"),
        help="the gateway's admin listener (default: %(default)s)",
    )
    parser.add_argument(
        "--gateway-admin-token-file", default=env("GATEWAY_ADMIN_TOKEN_FILE"),
        help="file holding the admin bearer token",
    )
    parser.add_argument(
        "--gateway-public-url",
        default=env("GATEWAY_PUBLIC_URL", "http://inference-operator-gateway:9200"),
        help="base URL clients use, written into status.url (default: %(default)s)",
    )
    parser.add_argument(
        "--anthropic-base-url", default=env("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
        help="where the Models API check goes (default: %(default)s)",
    )
    parser.add_argument(
        "--no-verify-upstream", action="store_true",
        default=env("VERIFY_UPSTREAM", "true").lower() == "false",
        help="skip the key/model check against Anthropic's Models API",
    )
    parser.add_argument(
        "--resync-seconds", type=float, default=float(env("RESYNC_SECONDS", "120")),
        help="period of the full resync (default: %(default)s)",
    )
    parser.add_argument(
        "--liveness", default=env("LIVENESS_ENDPOINT"),
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument("--verbose", action="store_true", help="more logging")


def run(args: argparse.Namespace) -> int:
    import kopf

    # Registers the handlers with kopf's default registry.
    from inference_operator.controller import handlers, lifecycle  # noqa: F401
    from inference_operator.controller.config import OperatorConfig

    config = OperatorConfig(
        gateway_admin_url=args.gateway_admin_url,
        gateway_admin_token_file=(
            Path(args.gateway_admin_token_file) if args.gateway_admin_token_file else None
        ),
        gateway_public_url=args.gateway_public_url,
        anthropic_base_url=args.anthropic_base_url,
        verify_upstream=not args.no_verify_upstream,
        resync_seconds=args.resync_seconds,
        namespaces=tuple(args.namespaces),
    )
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                standalone=True,  # one replica, Recreate; no peering CRDs needed
                liveness_endpoint=args.liveness,
                memo=kopf.Memo(config=config),
            )
        )
    except KeyboardInterrupt:
        pass
    return 0
