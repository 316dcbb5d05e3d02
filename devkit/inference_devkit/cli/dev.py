"""``inference-operator dev``: local control plane + emulator + gateway + operator."""

from __future__ import annotations

import argparse
import os

from inference_operator.cli.options import ENV_PREFIX, add_log_level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="wait for Ready, send one completion and one stream, exit 0 or 1")
    parser.add_argument("--prometheus", action="store_true",
                        help="also start a Prometheus (Debian's package) scraping the gateway "
                             "and the operator, and print its URL")
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    from inference_devkit.devstack.dev import run
    from inference_operator.cli.serving import setup_logging

    setup_logging(args.log_level)
    # The emulator, gateway and operator it starts inherit the environment, so they log
    # at this level too (a flag of theirs would win; dev passes none).
    os.environ[f"{ENV_PREFIX}LOG_LEVEL"] = args.log_level
    return run(check_only=args.check, with_prometheus=args.prometheus)
