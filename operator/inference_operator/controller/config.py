"""How the operator is wired to its gateways and upstream. Its defaults are the ``run``
subcommand's (cli/run.py reads them from here); flags or ``INFERENCE_OPERATOR_*`` set the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference_operator.anthropic import ANTHROPIC_API_URL
from inference_operator.api.gateway_config import DEFAULT_SECRET_NAME, DEFAULT_SHARDS


@dataclass(frozen=True)
class OperatorConfig:
    # Where the gateways' configuration goes (api/gateway_config.py).
    gateway_config_secret: str = DEFAULT_SECRET_NAME
    gateway_config_shards: int = DEFAULT_SHARDS
    gateway_config_namespace: str = "default"
    # The gateways' Service, whose ready EndpointSlice addresses are the replicas the
    # status counts; or fixed replica URLs instead (a gateway outside a cluster).
    gateway_service: str = "inference-operator-gateway"
    gateway_status_urls: tuple[str, ...] = field(default_factory=tuple)
    # Where the gateways' metrics listeners are, for the organisation limits in each
    # endpoint's status (controller/org_limits.py): the ready addresses of this Service,
    # or fixed URLs (with gateway_status_urls: none, no organisation limits in status).
    gateway_metrics_service: str = "inference-operator-gateway-metrics"
    gateway_metrics_urls: tuple[str, ...] = field(default_factory=tuple)
    org_limits_poll_seconds: float = 30.0
    # What clients use; written into each endpoint's status.url.
    gateway_public_url: str = "http://inference-operator-gateway:9200"
    anthropic_base_url: str = ANTHROPIC_API_URL
    verify_upstream: bool = True
    resync_seconds: float = 120.0
    gateway_poll_seconds: float = 1.0
    # Prometheus /metrics on a listener of its own (controller/metrics.py); None: off.
    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"
    namespaces: tuple[str, ...] = field(default_factory=tuple)  # empty: all namespaces
    # Endpoints one namespace may have published in the shared configuration shards; the
    # rest are NamespaceQuotaExceeded. 500 ordinary endpoints take about 3 % of the default
    # shards, 500 with the longest keys about a third, so no namespace can fill them.
    max_endpoints_per_namespace: int = 500

    def endpoint_url(self, inference_id: str, task_type: str) -> str:
        return f"{self.gateway_public_url.rstrip('/')}/_inference/{task_type}/{inference_id}"
