"""Entry point of the ``inference-operator`` console script.

Each subcommand is a module of this package with ``add_arguments(parser)`` (all its
options, defaults from the config objects) and ``run(args)``; this one only builds the
subparsers and dispatches. A module is imported when its subcommand is used, so
``--help`` stays fast.

Other distributions add subcommands through the ``inference_operator.commands`` entry-point
group: each entry point names a mapping like :data:`COMMANDS` whose modules are full
dotted paths. The development kit (``devkit/``) adds ``dev``, ``cluster``,
``controlplane`` and ``generate`` that way, so this package never imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points

from inference_operator.cli.options import CommandParser

# name: (module, help)
COMMANDS = {
    "run": ("inference_operator.cli.run", "run the operator against the current kubeconfig"),
    "gateway": ("inference_operator.cli.gateway", "run the _inference gateway"),
    "emulator": ("inference_operator.cli.emulator", "run the offline Anthropic API emulator"),
    "crd": ("inference_operator.cli.crd", "print the InferenceEndpoint CRD"),
}
PLUGIN_GROUP = "inference_operator.commands"


def all_commands() -> dict[str, tuple[str, str]]:
    """This package's subcommands, then those the installed plugins add."""
    commands = dict(COMMANDS)
    for entry_point in entry_points(group=PLUGIN_GROUP):
        commands.update(entry_point.load())
    return commands


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """``environ`` (default: ``os.environ``) is where ``INFERENCE_OPERATOR_<FLAG>`` are read."""
    parser = argparse.ArgumentParser(
        prog="inference-operator",
        description="Kubernetes operator and Elasticsearch-compatible gateway for Anthropic. "
                    "Every option --some-flag may also be set as INFERENCE_OPERATOR_SOME_FLAG.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=CommandParser)
    for name, (module, help) in all_commands().items():
        commands.add_parser(name, help=help, description=help, environ=environ,
                            module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
