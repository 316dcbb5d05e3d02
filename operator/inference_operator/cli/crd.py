"""``inference-operator crd``: prints what is rendered from the API models (``generate``
writes every generated file)."""

from __future__ import annotations

import argparse
import sys

from inference_operator.cli.options import add_log_level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--with-policies", action="store_true",
        help="also print the admission policies that belong with it (for kubectl apply -f -)",
    )
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    from inference_operator.api import manifests
    from inference_operator.cli.serving import setup_logging

    setup_logging(args.log_level)
    sys.stdout.write(manifests.crd_yaml())
    if args.with_policies:
        sys.stdout.write("---\n" + manifests.policies_yaml())
    return 0
