"""The Grafana dashboard, per endpoint: its panels as data (title, PromQL, unit,
description) and the rendering into Grafana's dashboard JSON, with the template
variables ``datasource``, ``inference_id`` and ``namespace`` (the callers')."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UID = "inference-operator"
TITLE = "Inference operator"
# Grafana 10 and later read this; older ones migrate it.
SCHEMA_VERSION = 39
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH, _HEIGHT = 24, 8

ENDPOINT = 'inference_id=~"$inference_id"'
CALLER = f'{ENDPOINT}, caller_namespace=~"$namespace"'
NOT_2XX = f'{ENDPOINT}, status!~"2.."'
NOT_200 = f'{ENDPOINT}, status!="200"'
STATUS_429 = f'{ENDPOINT}, status="429"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str
    description: str


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _rate(metric: str, selector: str = ENDPOINT) -> str:
    matchers = f"{{{selector}}}" if selector else ""
    return f"rate({metric}{matchers}[$__rate_interval])"


def _quantiles(histogram: str, selector: str = ENDPOINT, by: str = "",
               legend: str = "") -> tuple[Query, ...]:
    """p50 and p99 of a histogram, per ``by`` labels if any."""
    labels = f"le, {by}" if by else "le"
    return tuple(
        Query(f"histogram_quantile({q}, sum by ({labels}) "
              f"({_rate(f'{histogram}_bucket', selector)}))", f"p{round(q * 100)}{legend}")
        for q in (0.5, 0.99))


REQUESTS = "inference_gateway_requests_total"
UPSTREAM = "inference_gateway_upstream_requests_total"

ROWS: list[Row] = [
    Row("Traffic", (
        Panel("Requests by status",
              (Query(f"sum by (status) ({_rate(REQUESTS)})", "{{status}}"),),
              "reqps", "Answers of the inference routes, by HTTP status (499: the client "
                       "went away)."),
        Panel("Errors by reason", (
            Query(f"sum by (status) ({_rate(REQUESTS, NOT_2XX)})",
                  "gateway answered {{status}}"),
            Query(f"sum by (status) ({_rate(UPSTREAM, NOT_200)})",
                  "Anthropic answered {{status}}"),
        ), "reqps", "What the gateway answered other than 2xx, and what Anthropic answered "
                    "other than 200 (connection_error: no answer at all)."),
        Panel("Gateways", (
            Query("sum(inference_gateway_ready)", "ready gateways"),
            Query("max(inference_gateway_endpoints)", "endpoints configured"),
        ), "short", "Ready gateway pods, and the endpoints each serves (every endpoint, "
                    "whichever are selected)."),
    )),
    Row("Rate limits and queue", (
        Panel("429: Anthropic vs our queue", (
            Query(f"sum({_rate(UPSTREAM, STATUS_429)})",
                  "Anthropic answered 429"),
            Query(f"sum({_rate(REQUESTS, STATUS_429)})",
                  "gateway answered 429"),
        ), "reqps", "Anthropic's rate limit (calls, retried ones included) against the 429s "
                    "callers got: a full rate-limit queue (es_rejected_execution_exception), "
                    "or Anthropic's 429 once retries ran out."),
        Panel("Upstream retries by cause", (
            Query(f"sum by (cause) ({_rate('inference_gateway_upstream_retries_total')})",
                  "{{cause}}"),
        ), "reqps", "Calls to Anthropic the gateway retried, by cause."),
        Panel("Queue depth", (
            Query(f"sum by (inference_id) (inference_gateway_queued_requests{{{ENDPOINT}}})",
                  "{{inference_id}}"),
            Query("max(inference_gateway_queue_capacity)", "capacity per group and gateway"),
        ), "short", "Requests waiting for a rate-limit token, summed over the gateways; "
                    "each gateway's group queue holds at most the capacity, then 429."),
        Panel("Queue wait", _quantiles("inference_gateway_queue_wait_seconds"), "s",
              "Time requests waited for a rate-limit token (0 for those that did not)."),
    )),
    Row("Admission", (
        Panel("Organisation limits in use", (
            Query(f"max by (limit) (inference_gateway_org_limit_used_ratio{{{ENDPOINT}}})",
                  "{{limit}}"),
        ), "percentunit", "The share of the organisation's per-minute limits (requests, "
                          "input and output tokens) in use for the endpoints' key and model "
                          "class, as the gateway's budget sees it (learned from Anthropic's "
                          "rate-limit headers; 100 %: requests wait for the budget)."),
        Panel("Organisation limits", (
            Query(f"max by (limit) (inference_gateway_org_limit_per_minute{{{ENDPOINT}}})",
                  "{{limit}} per minute"),
        ), "short", "The organisation's per-minute limits for the endpoints' key and model "
                    "class, as Anthropic's answers tell them."),
        Panel("Organisation budget: reserved and refunded", (
            Query("sum by (event, limit) "
                  f"({_rate('inference_gateway_org_budget_total', '')})",
                  "{{limit}} {{event}}"),
        ), "short", "Per second, what the organisation budgets took from their limits "
                    "(requests, estimated input, max_tokens) and gave back (output not "
                    "generated, input overestimated, attempts refused)."),
        Panel("Peer admission by route", (
            Query("sum by (route) "
                  f"({_rate('inference_gateway_peer_admissions_total', '')})", "{{route}}"),
            Query("sum by (route) "
                  f"({_rate('inference_gateway_peer_reservations_total', '')})",
                  "budget {{route}}"),
            Query(f"sum({_rate('inference_gateway_owner_changes_total', '')})",
                  "owner changes"),
        ), "ops", "Fleet mode: rate-limit admissions (and organisation-budget reservations) "
                  "decided by this replica as a group's owner, by the owner asked over a "
                  "peer link, or on the local share because the owner could not be asked "
                  "(fallback); and groups changing owner."),
        Panel("Peer links", (
            Query("sum by (state) (inference_gateway_peer_links)", "{{state}}"),
        ), "short", "Fleet mode: the gateways' links to each other, up or down (a peer of "
                    "another version refuses the link)."),
    )),
    Row("Latency", (
        Panel("Request duration",
              _quantiles("inference_gateway_request_duration_seconds", by="stream",
                         legend=" stream={{stream}}"),
              "s", "From the request to the last byte of the answer, queue wait included."),
        Panel("Time to first delta",
              _quantiles("inference_gateway_time_to_first_delta_seconds"), "s",
              "Streamed requests: from the request to the first text or tool-call delta."),
    )),
    Row("Tokens and spend", (
        Panel("Tokens per second", (
            Query(f"sum by (kind) ({_rate('inference_gateway_tokens_total')})", "{{kind}}"),
        ), "short", "Input and output tokens as Anthropic reported them."),
        Panel("Spend by caller namespace", (
            Query("sum by (caller_namespace, kind) "
                  f"({_rate('inference_gateway_caller_tokens_total', CALLER)})",
                  "{{caller_namespace}} {{kind}}"),
        ), "short", "Tokens per second spent by each calling namespace (authenticated "
                    "callers only)."),
        Panel("Requests by caller namespace", (
            Query("sum by (caller_namespace, status) "
                  f"({_rate('inference_gateway_caller_requests_total', CALLER)})",
                  "{{caller_namespace}} {{status}}"),
        ), "reqps", "Answers to each calling namespace, by HTTP status."),
    )),
    # The operator's metrics have no inference_id: these panels show every endpoint.
    Row("Operator", (
        Panel("Endpoints by reason", (
            Query("max by (ready, reason) (inference_operator_endpoints)",
                  "{{reason}} (Ready {{ready}})"),
        ), "short", "InferenceEndpoints by their Ready condition and reason."),
        Panel("Reconciles by outcome", (
            Query("sum by (outcome) "
                  f"({_rate('inference_operator_reconciles_total', '')})", "{{outcome}}"),
        ), "ops", "Reconciles by the Ready reason they wrote (ReconcileFailed: raised)."),
        Panel("Time to Ready",
              _quantiles("inference_operator_time_to_ready_seconds", selector=""), "s",
              "From an InferenceEndpoint's creation or change to Ready True."),
        Panel("Reconcile duration",
              _quantiles("inference_operator_reconcile_duration_seconds", selector=""), "s",
              "Time one reconcile takes."),
        Panel("Pending reconciles", (
            Query("max(inference_operator_pending_reconciles)", "pending"),
        ), "short", "Reconciles waiting to run."),
    )),
]


def _variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, promql: str) -> dict[str, Any]:
        return {"name": name, "label": label, "type": "query", "datasource": _DATASOURCE,
                "query": promql, "definition": promql, "refresh": 2, "sort": 1,
                "multi": True, "includeAll": True, "allValue": ".*", "current": {},
                "options": [], "hide": 0}

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "options": [], "hide": 0, "refresh": 1},
        # Every configured endpoint has a queue series, requested yet or not.
        query("inference_id", "Endpoint",
              "label_values(inference_gateway_queued_requests, inference_id)"),
        query("namespace", "Caller namespace",
              "label_values(inference_gateway_caller_requests_total{inference_id=~"
              '"$inference_id"}, caller_namespace)'),
    ]


def _panel(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    return {
        "id": panel_id, "type": "timeseries", "title": panel.title,
        "description": panel.description, "datasource": _DATASOURCE, "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom",
                               "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"datasource": _DATASOURCE, "expr": q.expr, "legendFormat": q.legend,
                     "refId": chr(ord("A") + i)} for i, q in enumerate(panel.queries)],
    }


def _layout(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows one under the other; in each, lines of two or three panels of equal width."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        panels.append({"id": len(panels) + 1, "type": "row", "title": row.title,
                       "collapsed": False, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": _WIDTH, "h": 1}})
        y += 1
        count = len(row.panels)
        columns = count if count <= 3 else 2 if count % 2 == 0 else 3
        width = _WIDTH // columns
        for index, panel in enumerate(row.panels):
            line, column = divmod(index, columns)
            grid = {"x": column * width, "y": y + line * _HEIGHT, "w": width, "h": _HEIGHT}
            panels.append(_panel(panel, len(panels) + 1, grid))
        y += -(-count // columns) * _HEIGHT
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID, "title": TITLE, "tags": ["inference-operator"],
        "description": "Inference gateway and operator, per endpoint and caller namespace.",
        "editable": True, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION,
        "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": _variables()},
        "panels": _layout(ROWS),
    }


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard, its variables' queries aside."""
    return [q.expr for row in ROWS for panel in row.panels for q in panel.queries]
