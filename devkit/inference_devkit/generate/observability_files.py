"""The chart's monitoring files, rendered from alerts.py and dashboard.py, by path relative
to the repository root. ``make generate`` writes them (cli/generate.py); a test renders
them afresh and fails on any difference."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from inference_operator.observability.alerts import rule_groups
from inference_operator.observability.dashboard import dashboard

FILES = "charts/inference-operator/files/observability"
ALERTS_FILE = f"{FILES}/alerts.yaml"
DASHBOARD_FILE = f"{FILES}/dashboard.json"
HEADER = (
    "# Generated from operator/inference_operator/observability by `make generate`; "
    "do not edit.\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer PromQL) as literal blocks, as they were written."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def alerts_yaml() -> str:
    """A Prometheus rule file (``promtool check rules`` reads it as it is); the chart's
    PrometheusRule puts it under ``spec``."""
    document: dict[str, Any] = rule_groups()
    # Unfolded lines: folding would split "{{ $labels.x }}" across lines.
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=4096)


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


GENERATED: dict[str, Callable[[], str]] = {
    ALERTS_FILE: alerts_yaml,
    DASHBOARD_FILE: dashboard_json,
}


def render_all() -> dict[str, str]:
    return {path: render() for path, render in GENERATED.items()}
