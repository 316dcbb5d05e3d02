"""``inference-operator generate``: re-renders every generated file of the repository.

From the API models: the CRD and admission policies (crds/, the chart's files/crds/,
manifests/crds/) and the field reference of docs/api.md (generate/api_files.py); from the
gateway's models: docs/openapi.json; from the subcommands' parsers: the options tables of
the docs; from observability/: the chart's alerts and Grafana dashboard; and last, from
the chart (which includes the CRD copies just written): manifests/install.yaml. Tests
render each afresh and fail on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inference_devkit import chart
from inference_devkit.generate.options_tables import options_markdown
from inference_operator.cli.options import add_log_level, subcommands

OPENAPI_JSON = "docs/openapi.json"
# Hand-written documents with a generated options table of one subcommand between markers.
OPTIONS_TABLES = {"docs/operator.md": "run", "docs/gateway.md": "gateway",
                  "docs/emulator.md": "emulator"}
_END = "<!-- END GENERATED OPTIONS -->"


def _begin(command: str) -> str:
    return f"<!-- BEGIN GENERATED OPTIONS: inference-operator {command} (make generate) -->"


def splice_options(document: str, command: str) -> str:
    """``document`` with the options table of ``command`` between its markers."""
    from inference_operator.cli.main import build_parser

    head, found, rest = document.partition(_begin(command))
    _, found_end, tail = rest.partition(_END)
    if not (found and found_end):
        raise ValueError(f"markers {_begin(command)!r} ... {_END!r} not found")
    # A clean environment: the docs show the defaults, not this shell's variables.
    table = options_markdown(subcommands(build_parser(environ={}))[command])
    return f"{head}{_begin(command)}\n{table}{_END}{tail}"


def openapi_json() -> str:
    from inference_operator.gateway import openapi

    return json.dumps(openapi.document(admin=True), indent=2) + "\n"


def render_all(root: Path) -> dict[str, str]:
    """What every generated file under ``root`` must contain, but manifests/install.yaml
    (:func:`inference_devkit.chart.install_yaml`, which needs helm)."""
    from inference_devkit.generate import api_files as generate
    from inference_devkit.generate import observability_files as observability

    rendered = generate.render_all(root)
    rendered[OPENAPI_JSON] = openapi_json()
    rendered.update(observability.render_all())
    for path, command in OPTIONS_TABLES.items():
        rendered[path] = splice_options((root / path).read_text(), command)
    return rendered


def write_all(root: Path) -> list[Path]:
    from inference_devkit.generate import api_files as generate

    written = generate.write_files(root, render_all(root))
    # After the chart's CRD copies: the chart renders them.
    return written + generate.write_files(root, {chart.INSTALL_YAML: chart.install_yaml(root)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=chart.source_root(),
                        help="the repository to write into; by default the one this package "
                             "is installed from")
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    from inference_operator.cli.serving import setup_logging

    setup_logging(args.log_level)
    if args.root is None:
        print("error: not running from a source checkout; pass --root", file=sys.stderr)
        return 2
    for path in write_all(args.root):
        print(f"wrote {path}", file=sys.stderr)
    return 0
