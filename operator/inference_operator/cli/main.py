"""Entry point of the ``inference-operator`` console script.

Each subcommand lives in its own module; this one only parses arguments and
dispatches, importing lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

# Both import their heavy dependencies only when run, so --help stays fast.
from inference_operator.cli import emulator as emulator_cli
from inference_operator.cli import gateway as gateway_cli
from inference_operator.cli import run as run_cli


def _controlplane(args: argparse.Namespace) -> int:
    from inference_operator.cli.controlplane import run

    return run(args)


def _dev(args: argparse.Namespace) -> int:
    from inference_operator.devstack.dev import run

    return run(check_only=args.check)


def _crd(args: argparse.Namespace) -> int:
    from inference_operator.cli.crd import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inference-operator",
        description="Kubernetes operator and Elasticsearch-compatible gateway for Anthropic.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the operator against the current kubeconfig")
    run_cli.add_arguments(run)
    run.set_defaults(handler=run_cli.run)

    gateway = commands.add_parser("gateway", help="run the _inference gateway")
    gateway.add_argument("--port", type=int, default=9200)
    gateway.add_argument("--admin-port", type=int, default=9201)
    gateway.add_argument("--admin-token-file")
    gateway.add_argument("--anthropic-base-url", default="https://api.anthropic.com")
    gateway.add_argument("--state-file")
    gateway_cli.add_arguments(gateway)
    gateway.set_defaults(handler=gateway_cli.run)

    emulator = commands.add_parser("emulator", help="run the offline Anthropic API emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8088)
    emulator.add_argument("--api-key", action="append", default=[])
    emulator_cli.add_arguments(emulator)
    emulator.set_defaults(handler=emulator_cli.run)

    dev = commands.add_parser("dev", help="local control plane + emulator + gateway + operator")
    dev.add_argument("--check", action="store_true")
    dev.set_defaults(handler=_dev)

    crd = commands.add_parser("crd", help="print the InferenceEndpoint CRD")
    crd.add_argument(
        "--with-policies", action="store_true",
        help="also print the admission policies that belong with it (for kubectl apply -f -)",
    )
    crd.add_argument(
        "--write", metavar="ROOT",
        help="instead, re-render every generated file under the repository ROOT",
    )
    crd.set_defaults(handler=_crd)

    controlplane = commands.add_parser(
        "controlplane",
        help="start a throwaway kube-apiserver + etcd on loopback until Ctrl-C",
    )
    controlplane.add_argument(
        "--kubeconfig", default=".cache/controlplane/kubeconfig",
        help="where to write the admin kubeconfig (default: %(default)s)",
    )
    controlplane.add_argument(
        "--build-only", action="store_true",
        help="only make sure the binaries are built (or found), then exit",
    )
    controlplane.set_defaults(handler=_controlplane)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
