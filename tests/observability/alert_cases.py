"""``promtool test rules`` cases for every alert of observability/alerts.py: input series
(promtool's expanding notation, one sample a minute), when to evaluate, and the alerts
expected then; none expected is a case where the alert must not fire. test_alerts.py
checks every alert has both kinds."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Firing:
    labels: dict[str, str]  # the alert's own labels, severity aside
    summary: str


@dataclass(frozen=True)
class Case:
    alert: str
    why: str
    series: dict[str, str]
    eval_time: str
    firing: tuple[Firing, ...] = field(default=())


GATEWAY = 'namespace="inference"'

CASES: list[Case] = [
    Case("InferenceEndpointsNotReady", "two not Ready for 20m, scraped from two pods", {
        'inference_operator_endpoints{pod="o-1",ready="False",reason="SecretNotFound"}': "2x30",
        'inference_operator_endpoints{pod="o-2",ready="False",reason="SecretNotFound"}': "2x30",
        'inference_operator_endpoints{pod="o-1",ready="True",reason="Serving"}': "5x30",
    }, "20m", (Firing({"reason": "SecretNotFound"},
                      "InferenceEndpoints not Ready with reason SecretNotFound: 2"),)),
    Case("InferenceEndpointsNotReady", "not Ready for 9m only", {
        'inference_operator_endpoints{ready="False",reason="SecretNotFound"}': "0x10 2x20",
    }, "20m"),
    Case("InferenceEndpointsNotReady", "every endpoint Ready", {
        'inference_operator_endpoints{ready="False",reason="SecretNotFound"}': "0x30",
        'inference_operator_endpoints{ready="True",reason="Serving"}': "5x30",
    }, "20m"),
    Case("InferenceEndpointUpstreamAuthFailed", "one endpoint's key refused", {
        'inference_operator_endpoints{ready="False",reason="UpstreamAuthFailed"}': "1x20",
    }, "10m", (Firing({}, "InferenceEndpoints with an API key Anthropic refuses: 1"),)),
    Case("InferenceEndpointUpstreamAuthFailed", "none refused", {
        'inference_operator_endpoints{ready="False",reason="UpstreamAuthFailed"}': "0x20",
        'inference_operator_endpoints{ready="True",reason="Serving"}': "3x20",
    }, "10m"),
    Case("InferenceGatewayUpstreamAuthErrors", "401s for team-a, 200s for team-b", {
        f'inference_gateway_upstream_requests_total{{{GATEWAY},inference_id="team-a",'
        'status="401"}': "0+6x20",
        f'inference_gateway_upstream_requests_total{{{GATEWAY},inference_id="team-b",'
        'status="200"}': "0+60x20",
    }, "15m", (Firing({"inference_id": "team-a", "status": "401"},
                      "Anthropic refuses the key of team-a (401)"),)),
    Case("InferenceGatewayUpstreamAuthErrors", "403s long ago, none since", {
        f'inference_gateway_upstream_requests_total{{{GATEWAY},inference_id="team-a",'
        'status="403"}': "3x20",
        f'inference_gateway_upstream_requests_total{{{GATEWAY},inference_id="team-a",'
        'status="200"}': "0+60x20",
    }, "15m"),
    Case("InferenceGatewayQueueNearCapacity", "team-a's queue 95 % full on one of two pods", {
        'inference_gateway_queued_requests{pod="g-1",inference_id="team-a"}': "1900x20",
        'inference_gateway_queued_requests{pod="g-2",inference_id="team-a"}': "100x20",
        'inference_gateway_queued_requests{pod="g-1",inference_id="team-b"}': "10x20",
        'inference_gateway_queue_capacity{pod="g-1"}': "2000x20",
        'inference_gateway_queue_capacity{pod="g-2"}': "2000x20",
    }, "10m", (Firing({"inference_id": "team-a"},
                      "The rate-limit queue of team-a is 95% full"),)),
    Case("InferenceGatewayQueueNearCapacity", "half full", {
        'inference_gateway_queued_requests{pod="g-1",inference_id="team-a"}': "1000x20",
        'inference_gateway_queue_capacity{pod="g-1"}': "2000x20",
    }, "10m"),
    Case("InferenceUpstreamRateLimited", "30 % of team-a's calls answered 429", {
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="429"}':
            "0+30x30",
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="200"}':
            "0+70x30",
    }, "25m", (Firing({"inference_id": "team-a"},
                      "Anthropic rate-limits 30% of the calls for team-a"),)),
    Case("InferenceUpstreamRateLimited", "5 % answered 429", {
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="429"}':
            "0+5x30",
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="200"}':
            "0+95x30",
    }, "25m"),
    Case("InferenceUpstreamRateLimited", "an idle endpoint", {
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="200"}': "7x30",
    }, "25m"),
    Case("InferenceUpstreamOverloaded", "20 % of team-a's calls answered 529", {
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="529"}':
            "0+20x30",
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="200"}':
            "0+80x30",
    }, "25m", (Firing({"inference_id": "team-a"},
                      "Anthropic is overloaded for 20% of the calls for team-a"),)),
    Case("InferenceUpstreamOverloaded", "529s for 10m only", {
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="529"}':
            "0x15 0+20x15",
        'inference_gateway_upstream_requests_total{inference_id="team-a",status="200"}':
            "0+80x30",
    }, "25m"),
    Case("InferenceSpendLimitReached", "team-a refused on one of two pods", {
        'inference_gateway_org_spend_limit_reached{pod="g-1",inference_id="team-a"}': "1x20",
        'inference_gateway_org_limit_per_minute{pod="g-2",inference_id="team-a",'
        'limit="output-tokens"}': "8000x20",
    }, "10m", (Firing({"inference_id": "team-a"},
                      "Anthropic refuses every call for team-a: the organisation's spend limit "
                      "is reached"),)),
    Case("InferenceSpendLimitReached", "refused for 3 minutes, then answered again", {
        'inference_gateway_org_spend_limit_reached{pod="g-1",inference_id="team-a"}':
            "1x3 _x17",
    }, "10m"),
    Case("InferenceGatewayPeerAdmissionFallback", "g-1 cannot reach the owners, g-2 can", {
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-1",'
        'route="fallback"}': "0+30x30",
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-1",'
        'route="owner"}': "0+30x30",
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-2",'
        'route="peer"}': "0+60x30",
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-2",'
        'route="fallback"}': "0x30",
    }, "25m", (Firing({"namespace": "inference", "pod": "g-1"},
                      "Gateway inference/g-1 admits 50% of its requests without the groups' "
                      "owners"),)),
    Case("InferenceGatewayPeerAdmissionFallback", "a few minutes of fallback (an upgrade)", {
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-1",'
        'route="fallback"}': "0x10 0+30x5 150x15",
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-1",'
        'route="peer"}': "0+30x30",
    }, "25m"),
    Case("InferenceGatewayPeerAdmissionFallback", "peer admission off: all zero", {
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-1",'
        'route="fallback"}': "0x30",
        'inference_gateway_peer_admissions_total{namespace="inference",pod="g-1",'
        'route="owner"}': "0x30",
    }, "25m"),
    Case("InferenceGatewayNotReady", "one gateway not ready for 15m", {
        f'inference_gateway_ready{{{GATEWAY},pod="g-1"}}': "0x20",
        f'inference_gateway_ready{{{GATEWAY},pod="g-2"}}': "1x20",
    }, "15m", (Firing({"namespace": "inference", "pod": "g-1"},
                      "Gateway inference/g-1 is not ready"),)),
    Case("InferenceGatewayNotReady", "ready", {
        f'inference_gateway_ready{{{GATEWAY},pod="g-1"}}': "1x20",
    }, "15m"),
    Case("InferenceGatewayDown", "the only gateway not ready", {
        f'inference_gateway_ready{{{GATEWAY},pod="g-1"}}': "0x20",
    }, "10m", (Firing({}, "No inference gateway is ready"),)),
    Case("InferenceGatewayDown", "no gateway scraped at all", {
        "inference_operator_last_reconcile_timestamp_seconds": "0+60x20",
    }, "10m", (Firing({}, "No inference gateway is ready"),)),
    Case("InferenceGatewayDown", "one of two ready", {
        f'inference_gateway_ready{{{GATEWAY},pod="g-1"}}': "0x20",
        f'inference_gateway_ready{{{GATEWAY},pod="g-2"}}': "1x20",
    }, "10m"),
    Case("InferenceOperatorDown", "only gateways scraped", {
        f'inference_gateway_ready{{{GATEWAY},pod="g-1"}}': "1x30",
    }, "20m", (Firing({}, "The inference operator reports no metrics"),)),
    Case("InferenceOperatorDown", "the operator scraped", {
        "inference_operator_last_reconcile_timestamp_seconds": "0+60x30",
    }, "20m"),
    Case("InferenceOperatorNotReconciling", "no reconcile since the start", {
        "inference_operator_last_reconcile_timestamp_seconds": "0x30",
    }, "25m", (Firing({}, "The inference operator last reconciled 25m 0s ago"),)),
    Case("InferenceOperatorNotReconciling", "reconciling every minute", {
        "inference_operator_last_reconcile_timestamp_seconds": "0+60x30",
    }, "25m"),
    Case("InferenceOperatorReconcileErrors", "3 failures a minute", {
        'inference_operator_reconciles_total{outcome="ReconcileFailed"}': "0+3x30",
        'inference_operator_reconciles_total{outcome="Serving"}': "0+10x30",
    }, "25m", (Firing({}, "Inference operator reconciles fail (0.05 per second)"),)),
    Case("InferenceOperatorReconcileErrors", "failures long ago only", {
        'inference_operator_reconciles_total{outcome="ReconcileFailed"}': "2x30",
        'inference_operator_reconciles_total{outcome="Serving"}': "0+10x30",
    }, "25m"),
]
