"""``inference-operator run``: the kopf operator against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

from inference_operator import telemetry
from inference_operator.cli.options import add_log_level, config_default, config_from_args
from inference_operator.controller.config import OperatorConfig


def _default(name: str) -> object:
    return config_default(OperatorConfig, name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace", "-n", action="append", dest="namespaces", metavar="NAMESPACE",
        default=list(_default("namespaces")),
        help="watch only this namespace (repeatable); none: all namespaces",
    )
    parser.add_argument("--gateway-config-secret", default=_default("gateway_config_secret"),
                        help="base name of the Secrets the gateways read their endpoints from "
                             "(NAME-0 .. NAME-<shards-1>; the installer creates them)")
    parser.add_argument("--gateway-config-shards", type=int,
                        default=_default("gateway_config_shards"),
                        help="how many such Secrets; the gateways must be given the same number")
    parser.add_argument("--gateway-config-namespace",
                        default=_default("gateway_config_namespace"),
                        help="namespace of those Secrets and of the gateway Service")
    parser.add_argument("--gateway-service", default=_default("gateway_service"),
                        help="the gateways' Service: its ready endpoints are the replicas "
                             "whose configuration the status reports")
    parser.add_argument("--gateway-status-url", action="append", dest="gateway_status_urls",
                        metavar="URL", default=list(_default("gateway_status_urls")),
                        help="a gateway replica at a fixed URL (repeatable), instead of the "
                             "Service's endpoints: a gateway outside a cluster")
    parser.add_argument("--gateway-metrics-service", default=_default("gateway_metrics_service"),
                        help="the Service of the gateways' metrics listeners: the operator "
                             "reads the organisation limits they learned from its ready "
                             "endpoints into each endpoint's status")
    parser.add_argument("--gateway-metrics-url", action="append", dest="gateway_metrics_urls",
                        metavar="URL", default=list(_default("gateway_metrics_urls")),
                        help="a gateway replica's metrics listener at a fixed URL (repeatable), "
                             "with --gateway-status-url")
    parser.add_argument("--org-limits-poll-seconds", type=float,
                        default=_default("org_limits_poll_seconds"),
                        help="how often the gateways' organisation limits are read")
    parser.add_argument("--gateway-public-url", default=_default("gateway_public_url"),
                        help="base URL clients use, written into status.url")
    parser.add_argument("--anthropic-base-url", default=_default("anthropic_base_url"),
                        help="where the Models API check goes")
    parser.add_argument("--verify-upstream", action=argparse.BooleanOptionalAction,
                        default=_default("verify_upstream"),
                        help="check each key and model against Anthropic's Models API")
    parser.add_argument("--max-endpoints-per-namespace", type=int, metavar="N",
                        default=_default("max_endpoints_per_namespace"),
                        help="endpoints one namespace may have published in the gateways' "
                             "configuration; more are Ready=False NamespaceQuotaExceeded")
    parser.add_argument("--resync-seconds", type=float, default=_default("resync_seconds"),
                        help="period of the full resync of every endpoint")
    parser.add_argument("--liveness", metavar="URL",
                        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        default=_default("metrics_port"),
                        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics; "
                             "none: no metrics listener")
    parser.add_argument("--metrics-address", metavar="ADDRESS",
                        default=_default("metrics_address"),
                        help="address the metrics listener binds (with --metrics-port)")
    parser.add_argument("--verbose", action="store_const", dest="log_level", const="debug",
                        default=argparse.SUPPRESS, help="the same as --log-level=debug")
    add_log_level(parser)


def operator_config(args: argparse.Namespace) -> OperatorConfig:
    """The config the parsed options describe; no option given: ``OperatorConfig()``
    (tests/unit/test_cli_defaults.py)."""
    return config_from_args(OperatorConfig, args)


def operator_identity() -> str:
    """kopf's identity, given so kopf does not derive it from the user name: the image
    runs as a numeric user with no passwd entry, where ``getpass.getuser()`` raises."""
    return f"inference-operator@{socket.gethostname()}"


def run(args: argparse.Namespace) -> int:
    import kopf

    # Registers the handlers with kopf's default registry.
    from inference_operator.controller import handlers, lifecycle, login  # noqa: F401

    config = operator_config(args)
    problem = telemetry.config_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # kopf's own setup (root logger, its format); DEBUG is kopf's verbose mode.
    kopf.configure(verbose=args.log_level == "debug",
                   quiet=args.log_level not in ("debug", "info"),
                   log_format=kopf.LogFormat.PLAIN)
    logging.getLogger().setLevel(args.log_level.upper())
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                standalone=True,  # one replica, Recreate; no peering CRDs needed
                identity=operator_identity(),
                liveness_endpoint=args.liveness,
                memo=kopf.Memo(config=config),
            )
        )
    except KeyboardInterrupt:
        pass
    return 0
