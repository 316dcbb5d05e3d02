"""The options table of a subcommand for the docs, rendered from its parser."""

from __future__ import annotations

import argparse

from inference_operator.cli.options import CommandParser, env_name


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def options_markdown(parser: CommandParser) -> str:
    """The options table of a subcommand for the docs, rendered from its parser (so in a
    clean environment)."""
    rows = ["| option | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for action in parser.load()._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = env_name(action)
        first, *others = action.option_strings
        if action.nargs != 0:
            first += f" {action.metavar or action.dest.upper()}"
        options = " / ".join(f"`{o}`" for o in (first, *others))
        default = action.default
        if default is argparse.SUPPRESS:
            shown = ""
        elif default is None or default == []:
            shown = "none"
        elif isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = f"`{default}`"
        # (BooleanOptionalAction adds the default to its help itself before Python 3.14.)
        help = (action.help or "").replace(" (default: %(default)s)", "")
        help = help % {**vars(action), "prog": parser.prog}
        rows.append(f"| {options} | {f'`{name}`' if name else ''} | {_cell(shown)} "
                    f"| {_cell(help)} |")
    return "\n".join(rows) + "\n"
