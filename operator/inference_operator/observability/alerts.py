"""The alerts the chart's PrometheusRule carries, in the shape of the kube-prometheus
mixins: ``labels.severity`` and the annotations ``summary``, ``description`` and
``runbook_url`` (a section of docs/operations.md per alert).

Severity: ``critical`` when nothing is served at all (no ready gateway), ``warning`` for
what hurts some endpoints or will hurt soon; a team's wrong key must not page whoever runs
the cluster.

Annotations hold inference ids, namespaces, pod names and numbers only: never a label that
could carry a key. Descriptions use no ``$value`` (summaries carry the numbers), so
tests/observability can check them without a Go template engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

RUNBOOK_URL = (
    "https://github.com/inference-operator/inference-operator/blob/main/docs/operations.md"
)
GATEWAY_GROUP = "inference-gateway"
OPERATOR_GROUP = "inference-operator"


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    expr: str
    for_: str
    severity: Literal["warning", "critical"]
    summary: str
    description: str
    # The anchor of the alert's section in docs/operations.md.
    runbook: str
    # The part of ``expr`` that reads the metrics, before its threshold (or inside its
    # absent()): it returns series whenever the metrics exist, firing or not, which is what
    # tests/observability checks against a live Prometheus. Empty: ``expr`` itself.
    signal: str = ""

    def __post_init__(self) -> None:
        if self.signal and self.signal not in self.expr:
            raise ValueError(f"{self.name}: the signal is not part of the expression")

    def live_query(self) -> str:
        return self.signal or self.expr

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{RUNBOOK_URL}#{self.runbook}",
            },
        }


def _upstream_share(statuses: str) -> str:
    """Per endpoint, the share of calls to Anthropic answered with ``statuses`` (a regex);
    the floor on the denominator makes an idle endpoint 0, not NaN."""
    calls = "inference_gateway_upstream_requests_total"
    return (f'sum by (inference_id) (rate({calls}{{status=~"{statuses}"}}[5m]))\n'
            f"  / clamp_min(sum by (inference_id) (rate({calls}[5m])), 1e-9)")


# The operator's gauges are deduplicated with max: during a rollout two operator pods
# may both be scraped and report the same endpoints.
_NOT_READY = 'max by (ready, reason) (inference_operator_endpoints{ready!="True"})'
_AUTH_FAILED = 'max(inference_operator_endpoints{reason="UpstreamAuthFailed"})'
_UPSTREAM_REFUSALS = ('sum by (inference_id, status) (rate('
                      'inference_gateway_upstream_requests_total{status=~"401|403"}[5m]))')
# Per gateway pod (each has its own queues): the capacity gauge has every label of the
# queue gauge but inference_id.
_QUEUE_SHARE = ("max by (inference_id) (inference_gateway_queued_requests\n"
                "  / ignoring (inference_id) group_left ()\n"
                "  clamp_min(inference_gateway_queue_capacity, 1))")
# Per gateway pod: the share of its admissions made on rpm/N because a group's owner could
# not be asked.
_PEER_FALLBACK_SHARE = (
    'sum by (namespace, pod) (rate(inference_gateway_peer_admissions_total{route="fallback"}'
    '[5m]))\n  / clamp_min(sum by (namespace, pod) ('
    'rate(inference_gateway_peer_admissions_total[5m])), 1e-9)')
_RECONCILE_FAILURES = (
    'sum(rate(inference_operator_reconciles_total{outcome="ReconcileFailed"}[5m]))')
ALERTS: list[Alert] = [
    Alert(
        name="InferenceEndpointsNotReady",
        group=OPERATOR_GROUP,
        expr=f"sum by (reason) ({_NOT_READY}) > 0",
        signal=_NOT_READY,
        for_="15m",
        severity="warning",
        summary="InferenceEndpoints not Ready with reason {{ $labels.reason }}: {{ $value }}",
        description=(
            "InferenceEndpoints have had condition Ready False or Unknown with reason "
            "{{ $labels.reason }} for 15 minutes: the gateway does not serve them (or, "
            "with reason GatewayPending, no gateway has confirmed it does)."),
        runbook="inferenceendpointsnotready",
    ),
    Alert(
        name="InferenceEndpointUpstreamAuthFailed",
        group=OPERATOR_GROUP,
        expr=f"{_AUTH_FAILED} > 0",
        signal=_AUTH_FAILED,
        for_="5m",
        severity="warning",
        summary="InferenceEndpoints with an API key Anthropic refuses: {{ $value }}",
        description=(
            "The operator checked the keys of these InferenceEndpoints with Anthropic's "
            "Models API and was refused (401 or 403): reason UpstreamAuthFailed. They are "
            "not served until their Secret holds a valid key."),
        runbook="inferenceendpointupstreamauthfailed",
    ),
    Alert(
        name="InferenceGatewayUpstreamAuthErrors",
        group=GATEWAY_GROUP,
        expr=f"{_UPSTREAM_REFUSALS} > 0",
        signal=_UPSTREAM_REFUSALS,
        for_="5m",
        severity="warning",
        summary="Anthropic refuses the key of {{ $labels.inference_id }} ({{ $labels.status }})",
        description=(
            "For 5 minutes Anthropic has answered {{ $labels.status }} to the gateway's calls "
            "for endpoint {{ $labels.inference_id }}: its key was revoked or lacks access to "
            "the model since the operator checked it. Its requests fail."),
        runbook="inferencegatewayupstreamautherrors",
    ),
    Alert(
        name="InferenceGatewayQueueNearCapacity",
        group=GATEWAY_GROUP,
        expr=f"{_QUEUE_SHARE} > 0.8",
        signal=_QUEUE_SHARE,
        for_="5m",
        severity="warning",
        summary=("The rate-limit queue of {{ $labels.inference_id }} is "
                 "{{ $value | humanizePercentage }} full"),
        description=(
            "Requests for {{ $labels.inference_id }} have been waiting for a rate-limit "
            "token in a queue more than 80 % full for 5 minutes; once full, the gateway "
            "answers 429 es_rejected_execution_exception. Endpoints sharing a key, model "
            "and rate limit share the queue, so it may be fuller than this one shows."),
        runbook="inferencegatewayqueuenearcapacity",
    ),
    Alert(
        name="InferenceUpstreamRateLimited",
        group=GATEWAY_GROUP,
        expr=f"{_upstream_share('429')} > 0.1",
        signal=_upstream_share("429"),
        for_="15m",
        severity="warning",
        summary=("Anthropic rate-limits {{ $value | humanizePercentage }} of the calls for "
                 "{{ $labels.inference_id }}"),
        description=(
            "For 15 minutes more than 10 % of the gateway's calls to Anthropic for "
            "{{ $labels.inference_id }} have been answered 429: the endpoint's "
            "requests_per_minute is above what its key's Anthropic rate limit allows, or "
            "other users of the key spend it. Retries add latency; some requests fail."),
        runbook="inferenceupstreamratelimited",
    ),
    Alert(
        name="InferenceUpstreamOverloaded",
        group=GATEWAY_GROUP,
        expr=f"{_upstream_share('529')} > 0.1",
        signal=_upstream_share("529"),
        for_="15m",
        severity="warning",
        summary=("Anthropic is overloaded for {{ $value | humanizePercentage }} of the calls "
                 "for {{ $labels.inference_id }}"),
        description=(
            "For 15 minutes more than 10 % of the gateway's calls to Anthropic for "
            "{{ $labels.inference_id }} have been answered 529 overloaded_error. Nothing in "
            "the cluster causes it; retries add latency and some requests fail."),
        runbook="inferenceupstreamoverloaded",
    ),
    Alert(
        name="InferenceSpendLimitReached",
        group=GATEWAY_GROUP,
        expr="max by (inference_id) (inference_gateway_org_spend_limit_reached) == 1",
        signal="max by (inference_id) (inference_gateway_org_spend_limit_reached)",
        for_="5m",
        severity="critical",
        summary=("Anthropic refuses every call for {{ $labels.inference_id }}: the "
                 "organisation's spend limit is reached"),
        description=(
            "For 5 minutes Anthropic has answered the calls for {{ $labels.inference_id }} "
            "with the monthly spend limit's 429 (enforced_spend_limit_reached), and none "
            "since with an answer: every caller gets 429 until the organisation's spend "
            "limit is raised. The endpoint's SpendLimitReached condition says the same."),
        runbook="inferencespendlimitreached",
    ),
    Alert(
        name="InferenceGatewayPeerAdmissionFallback",
        group=GATEWAY_GROUP,
        expr=f"{_PEER_FALLBACK_SHARE} > 0.1",
        signal=_PEER_FALLBACK_SHARE,
        for_="15m",
        severity="warning",
        summary=("Gateway {{ $labels.namespace }}/{{ $labels.pod }} admits "
                 "{{ $value | humanizePercentage }} of its requests without the groups' owners"),
        description=(
            "For 15 minutes more than 10 % of the rate-limit admissions of gateway "
            "{{ $labels.namespace }}/{{ $labels.pod }} were made on its own share (rpm / "
            "replicas) because the group's owner could not be asked over a peer link: its "
            "pinned clients get a fraction of their endpoints' limits. A rolling upgrade "
            "between peer protocol versions does this for its duration only."),
        runbook="inferencegatewaypeeradmissionfallback",
    ),
    Alert(
        name="InferenceGatewayNotReady",
        group=GATEWAY_GROUP,
        expr="inference_gateway_ready == 0",
        signal="inference_gateway_ready",
        for_="10m",
        severity="warning",
        summary="Gateway {{ $labels.namespace }}/{{ $labels.pod }} is not ready",
        description=(
            "Gateway {{ $labels.namespace }}/{{ $labels.pod }} has reported not ready for "
            "10 minutes: it has not loaded its configuration (every shard Secret), so its "
            "Service sends it no requests."),
        runbook="inferencegatewaynotready",
    ),
    Alert(
        name="InferenceGatewayDown",
        group=GATEWAY_GROUP,
        # Absent also when no gateway is scraped at all: then nobody can tell it serves.
        expr="absent(inference_gateway_ready == 1)",
        signal="inference_gateway_ready == 1",
        for_="5m",
        severity="critical",
        summary="No inference gateway is ready",
        description=(
            "For 5 minutes Prometheus has scraped no ready gateway: every inference request "
            "fails, or the gateways' metrics are no longer scraped."),
        runbook="inferencegatewaydown",
    ),
    Alert(
        name="InferenceOperatorDown",
        group=OPERATOR_GROUP,
        expr="absent(inference_operator_last_reconcile_timestamp_seconds)",
        signal="inference_operator_last_reconcile_timestamp_seconds",
        for_="15m",
        severity="warning",
        summary="The inference operator reports no metrics",
        description=(
            "For 15 minutes Prometheus has scraped no inference operator: it is down or "
            "not scraped. New or changed InferenceEndpoints and Secrets are not applied; "
            "gateways keep serving what they have (in sidecar mode they are down with it)."),
        runbook="inferenceoperatordown",
    ),
    Alert(
        name="InferenceOperatorNotReconciling",
        group=OPERATOR_GROUP,
        # The operator resyncs every endpoint every operator.resyncSeconds (120 s by
        # default); 15 minutes leave room for a longer period.
        expr="time() - max(inference_operator_last_reconcile_timestamp_seconds) > 900",
        signal="time() - max(inference_operator_last_reconcile_timestamp_seconds)",
        for_="5m",
        severity="warning",
        summary="The inference operator last reconciled {{ $value | humanizeDuration }} ago",
        description=(
            "The operator runs but has not reconciled an InferenceEndpoint for more than 15 "
            "minutes, although it resyncs every one periodically: it is stuck (or cannot "
            "reach the API server). Changes are not applied."),
        runbook="inferenceoperatornotreconciling",
    ),
    Alert(
        name="InferenceOperatorReconcileErrors",
        group=OPERATOR_GROUP,
        expr=f"{_RECONCILE_FAILURES} > 0",
        signal=_RECONCILE_FAILURES,
        for_="15m",
        severity="warning",
        summary='Inference operator reconciles fail ({{ $value | printf "%.2f" }} per second)',
        description=(
            "For 15 minutes reconciles have raised (outcome ReconcileFailed) rather than "
            "written a Ready reason: the API server refuses or fails the operator's calls, "
            "or a bug. The endpoints concerned keep their last status."),
        runbook="inferenceoperatorreconcileerrors",
    ),
]


def rule_groups() -> dict[str, Any]:
    """A Prometheus rule file, the PrometheusRule's ``spec`` as well."""
    groups = [GATEWAY_GROUP, OPERATOR_GROUP]
    return {"groups": [
        {"name": group, "rules": [alert.rule() for alert in ALERTS if alert.group == group]}
        for group in groups
    ]}
