"""The Grafana dashboard: every PromQL expression parses (promtool reads them as recording
rules), every metric it or the alerts read exists, and its variables filter every
per-endpoint panel."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from inference_operator.controller.metrics import OperatorMetrics
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.observability import alerts, dashboard

METRIC = re.compile(r"\binference_(?:gateway|operator)_\w+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# Grafana's interval variable, as Grafana would substitute it before sending the query.
RATE_INTERVAL = "$__rate_interval"


def exposed(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can expose (families without children included)."""
    return {family.name + suffix for family in registry.collect()
            for suffix in SUFFIXES[family.type]}


def operator_metrics() -> set[str]:
    metrics = OperatorMetrics()
    metrics.track_endpoints(list)
    return exposed(metrics.registry)


def test_every_dashboard_expression_parses(promtool, tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:expression_{index}",
              "expr": expr.replace(RATE_INTERVAL, "5m")}
             for index, expr in enumerate(dashboard.expressions())]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def gateway_metrics() -> set[str]:
    metrics = GatewayMetrics()
    metrics.watch_org_limits(list)
    return exposed(metrics.registry)


def test_every_metric_read_exists() -> None:
    read = {name for expr in [*dashboard.expressions(), *(a.expr for a in alerts.ALERTS)]
            for name in METRIC.findall(expr)}

    assert read - gateway_metrics() - operator_metrics() == set()


def test_the_variables_are_the_datasource_the_endpoint_and_the_caller_namespace() -> None:
    board = dashboard.dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}

    assert list(variables) == ["datasource", "inference_id", "namespace"]
    assert variables["datasource"]["query"] == "prometheus"
    targets = [t for p in board["panels"] if p["type"] != "row" for t in p["targets"]]
    assert {str(t["datasource"]) for t in targets} == {str(dashboard._DATASOURCE)}
    for expr in dashboard.expressions():
        if "caller_" in expr:
            assert 'caller_namespace=~"$namespace"' in expr, expr
        # Per-endpoint series are filtered by the endpoint variable (peer admission's
        # are per gateway: a group's owner knows no endpoint, only a digest; the
        # organisation budgets' per model class: a budget serves many endpoints).
        if re.search(r"inference_gateway_(?!ready|endpoints|queue_capacity|peer_|owner_"
                     r"|org_budget)\w+", expr):
            assert 'inference_id=~"$inference_id"' in expr, expr


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard.dashboard()["panels"]

    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    cells = [(p["gridPos"]["y"] + dy, p["gridPos"]["x"] + dx) for p in panels
             for dy in range(p["gridPos"]["h"]) for dx in range(p["gridPos"]["w"])]
    assert len(cells) == len(set(cells))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
