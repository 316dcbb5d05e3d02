"""Entry point of the ``inference-operator`` console script.

Each subcommand is a module of this package with ``add_arguments(parser)`` (all its
options, defaults from the config objects) and ``run(args)``; this one only builds the
subparsers and dispatches. A module is imported when its subcommand is used, so
``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from inference_operator.cli.options import CommandParser

# name: (module, help)
COMMANDS = {
    "run": ("run", "run the operator against the current kubeconfig"),
    "gateway": ("gateway", "run the _inference gateway"),
    "emulator": ("emulator", "run the offline Anthropic API emulator"),
    "dev": ("dev", "local control plane + emulator + gateway + operator"),
    "crd": ("crd", "print the InferenceEndpoint CRD"),
    "generate": ("generate", "re-render every generated file of the repository"),
    "controlplane": ("controlplane",
                     "start a throwaway kube-apiserver + etcd on loopback until Ctrl-C"),
    "cluster": ("cluster", "a control plane plus one real node, the project's image built "
                           "and loaded, until Ctrl-C"),
}


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """``environ`` (default: ``os.environ``) is where ``INFERENCE_OPERATOR_<FLAG>`` are read."""
    parser = argparse.ArgumentParser(
        prog="inference-operator",
        description="Kubernetes operator and Elasticsearch-compatible gateway for Anthropic. "
                    "Every option --some-flag may also be set as INFERENCE_OPERATOR_SOME_FLAG.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=CommandParser)
    for name, (module, help) in COMMANDS.items():
        commands.add_parser(name, help=help, description=help, environ=environ,
                            module=f"inference_operator.cli.{module}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
