"""Prometheus metrics, per endpoint, and per caller for who spent what. Each gateway has
its own registry (several can run in one process, as in tests). Labels are inference ids
and callers' namespaces (with ``caller_service_account``, their ServiceAccounts or API
key ids), never anything from a key or a credential."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inference_operator.labelled_metrics import Labelled

if TYPE_CHECKING:
    from inference_operator.gateway.auth.caller import Caller

# Requests for ids that do not exist are counted under this label: client-chosen ids
# must not create new series. So are refused ones (401, 403), whatever id they named: the
# metrics must not tell a caller which ids exist.
UNKNOWN_ID = "_unknown"
# The caller_service_account of the accounts past the budget of AccountLabels.
OTHER_ACCOUNTS = "_other"
DEFAULT_CALLER_ACCOUNTS = 1000
DEFAULT_CALLER_ACCOUNTS_PER_NAMESPACE = 100

class AccountLabels:
    """The ``caller_service_account`` label within a budget: a tenant creates
    ServiceAccounts at will, and each would be series of its own in every per-caller
    metric. The first ``per_namespace`` accounts of a namespace, and ``total`` in all, get
    their own label; later ones count under OTHER_ACCOUNTS (their namespace still says
    whose they are)."""

    def __init__(self, total: int, per_namespace: int) -> None:
        if total < 1 or per_namespace < 1:
            raise ValueError("the caller metrics' account budgets must be at least 1")
        self._total = total
        self._per_namespace = per_namespace
        self._known: dict[str, set[str]] = {}
        self._count = 0

    def label(self, namespace: str, account: str) -> str:
        accounts = self._known.setdefault(namespace, set())
        if account in accounts:
            return account
        if len(accounts) >= self._per_namespace or self._count >= self._total:
            return OTHER_ACCOUNTS
        accounts.add(account)
        self._count += 1
        return account


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class Usage:
    """The tokens one request used, as the upstream reported them."""

    input_tokens: int = 0
    output_tokens: int = 0


class GatewayMetrics:
    def __init__(self, *, caller_service_account: bool = False,
                 caller_accounts: int = DEFAULT_CALLER_ACCOUNTS,
                 caller_accounts_per_namespace: int = DEFAULT_CALLER_ACCOUNTS_PER_NAMESPACE
                 ) -> None:
        """``caller_service_account``: label the per-caller metrics with the caller's
        ServiceAccount (or API key id) too, not only its namespace: one series per
        account (within ``caller_accounts`` in all and ``caller_accounts_per_namespace``
        per namespace, see AccountLabels), so off by default."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.caller_service_account = caller_service_account
        self._accounts = AccountLabels(caller_accounts, caller_accounts_per_namespace)
        caller = ["caller_namespace", "caller_service_account"][:1 + caller_service_account]
        self.requests = Labelled(Counter(
            "inference_gateway_requests", "Inference requests answered, by HTTP status.",
            ["inference_id", "stream", "status"], registry=r))
        self.duration = Labelled(Histogram(
            "inference_gateway_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["inference_id", "stream"], buckets=_LATENCY_BUCKETS, registry=r))
        self.queue_wait = Labelled(Histogram(
            "inference_gateway_queue_wait_seconds", "Time spent waiting for a rate-limit token.",
            ["inference_id"], buckets=_LATENCY_BUCKETS, registry=r))
        self.first_delta = Labelled(Histogram(
            "inference_gateway_time_to_first_delta_seconds",
            "Time from a streamed request to its first text or tool-call delta.",
            ["inference_id"], buckets=_LATENCY_BUCKETS, registry=r))
        self.queue_capacity = Gauge(
            "inference_gateway_queue_capacity",
            "Requests each rate-limit group may queue; more get 429.", registry=r)
        self.request_memory = Gauge(
            "inference_gateway_request_memory_bytes",
            "Bytes held by inference requests read, queued or in flight: their bodies, "
            "then their upstream requests.", registry=r)
        self.request_memory_limit = Gauge(
            "inference_gateway_request_memory_limit_bytes",
            "What they may hold (--request-memory); beyond it, 429.", registry=r)
        self.queued = Labelled(Gauge(
            "inference_gateway_queued_requests", "Requests waiting for a rate-limit token.",
            ["inference_id"], registry=r))
        self.upstream = Labelled(Counter(
            "inference_gateway_upstream_requests", "Calls to Anthropic, by outcome.",
            ["inference_id", "status"], registry=r))
        self.retries = Labelled(Counter(
            "inference_gateway_upstream_retries", "Retried calls to Anthropic, by cause.",
            ["inference_id", "cause"], registry=r))
        self.tokens = Labelled(Counter(
            "inference_gateway_tokens", "Tokens reported by Anthropic.",
            ["inference_id", "kind"], registry=r))
        # Who spent what: the same, per caller.
        self.caller_requests = Labelled(Counter(
            "inference_gateway_caller_requests",
            "Inference requests answered to authenticated callers, by HTTP status.",
            ["inference_id", *caller, "status"], registry=r))
        self.caller_tokens = Labelled(Counter(
            "inference_gateway_caller_tokens", "Tokens reported by Anthropic, per caller.",
            ["inference_id", *caller, "kind"], registry=r))
        self.auth_reviews = Labelled(Counter(
            "inference_gateway_auth_reviews",
            "TokenReviews (review=token) and SubjectAccessReviews (review=access) the "
            "gateway asked the API server, by outcome (allowed, denied, error); cached "
            "decisions are not counted.", ["review", "outcome"], registry=r))
        self.auth_unreviewed = Labelled(Counter(
            "inference_gateway_auth_unreviewed",
            "Bearer tokens refused without a TokenReview: not_a_token (not a JWT for the "
            "audience, expired, too long: 401), over_budget (too many unknown tokens in "
            "flight or per second: 429).", ["reason"], registry=r))
        self.endpoints = Gauge(
            "inference_gateway_endpoints", "Inference endpoints configured.", registry=r)
        self.ready = Gauge(
            "inference_gateway_ready",
            "1 when ready (standalone: once listening; config mode: once every shard is "
            "loaded), 0 again while shutting down.", registry=r)
        # Config mode (--config-secret): what each shard serves, and what was refused.
        self.config_generation = Labelled(Gauge(
            "inference_gateway_config_generation",
            "Generation of the configuration shard being served.", ["shard"], registry=r))
        self.config_rejected = Labelled(Counter(
            "inference_gateway_config_rejected",
            "Shard contents refused (undecodable, or an endpoint failing validation); the "
            "previous content is kept.", ["shard"], registry=r))
        self.replicas = Gauge(
            "inference_gateway_replicas",
            "Ready gateways sharing each rate limit (1 without --peers-service).", registry=r)
        self.replicas.set(1)
        # Peer admission (--peer-port): how each rate-limit admission was decided.
        self.peer_admissions = Labelled(Counter(
            "inference_gateway_peer_admissions",
            "Rate-limit admissions with peer admission on, by route: owner (this replica "
            "owns the group), peer (its owner was asked), fallback (the owner could not be "
            "asked: rpm/N here).", ["route"], registry=r))
        # What the organisation budgets take and give back (org_limits.py), by model class
        # (an endpoint's model's; never the key) and limit.
        self.org_tokens = Labelled(Counter(
            "inference_gateway_org_budget",
            "What the organisation budgets of this replica reserved (event=reserved: "
            "requests, estimated input and max_tokens, and input found larger on the "
            "answer) and gave back (event=refunded: output not generated, input found "
            "smaller, attempts refused), by model class and limit, in that limit's units.",
            ["model_class", "limit", "event"], registry=r))
        self.peer_reservations = Labelled(Counter(
            "inference_gateway_peer_reservations",
            "Organisation-budget reservations with peer admission on, by route: owner, peer, "
            "fallback (the owner could not be asked: 1/N of the limits here).", ["route"],
            registry=r))
        self.owner_changes = Counter(
            "inference_gateway_owner_changes",
            "Rate-limit groups that became, or stopped being, this replica's own.", registry=r)
        self.peer_links = Gauge(
            "inference_gateway_peer_links",
            "This replica's links to its peers, by state (up, down).", ["state"], registry=r)
        # Every route and state at 0 from the start, so a rate or a share over them reads
        # 0, not nothing, where peer admission is off or has not been used yet.
        for route in ("owner", "peer", "fallback"):
            self.peer_admissions.labels(route)
            self.peer_reservations.labels(route)
        for state in ("up", "down"):
            self.peer_links.labels(state)
        # Both read at scrape time (set_function), for spotting leaks: after a burst they
        # return to where they were (tests/gateway/test_gateway_faults.py).
        self.tasks = Gauge(
            "inference_gateway_asyncio_tasks", "asyncio tasks in the gateway's event loop.",
            registry=r)
        self.connections = Gauge(
            "inference_gateway_client_connections", "Open client connections, by listener.",
            ["listener"], registry=r)

    def watch_org_limits(self, source: OrgLimitsSource) -> None:
        """Export, read at scrape time, each endpoint's organisation limits as learned
        (by ``source``: inference id, per limit its per-minute value and the share in use,
        and whether the spend limit refuses it); they leave with the endpoint, as nothing
        keeps them. The operator reads them too, for the endpoints' status
        (controller/org_limits.py)."""
        self.registry.register(_OrgLimits(source))

    def forget(self, inference_id: str) -> None:
        """An endpoint left the gateway: its series leave ``/metrics`` (kept, a cluster
        that churns endpoints would grow them without bound). Requests for it from now
        on count under UNKNOWN_ID."""
        for metric in (self.requests, self.duration, self.first_delta, self.queue_wait,
                       self.queued,
                       self.upstream, self.retries, self.tokens, self.caller_requests,
                       self.caller_tokens):
            metric.remove_first(inference_id)

    def count_org(self, event: str, model_class: str, limit: str, amount: float) -> None:
        if amount > 0:
            self.org_tokens.labels(model_class, limit, event).inc(amount)

    def count_tokens(self, inference_id: str, input_tokens: Any, output_tokens: Any,
                     usage: Usage | None = None) -> None:
        """Counts as reported in an upstream reply, also added to the request's ``usage``;
        what is not a positive number (absent, or a reply that is odd) is no count, not a
        failure of the request."""
        if isinstance(input_tokens, int) and input_tokens > 0:
            self.tokens.labels(inference_id, "input").inc(input_tokens)
            if usage is not None:
                usage.input_tokens += input_tokens
        if isinstance(output_tokens, int) and output_tokens > 0:
            self.tokens.labels(inference_id, "output").inc(output_tokens)
            if usage is not None:
                usage.output_tokens += output_tokens

    def count_call(self, inference_id: str, caller: Caller, status: int, usage: Usage) -> None:
        """One answered inference request of an authenticated caller."""
        who = ((caller.namespace, self._accounts.label(caller.namespace, caller.account))
               if self.caller_service_account else (caller.namespace,))
        self.caller_requests.labels(inference_id, *who, str(status)).inc()
        if usage.input_tokens:
            self.caller_tokens.labels(inference_id, *who, "input").inc(usage.input_tokens)
        if usage.output_tokens:
            self.caller_tokens.labels(inference_id, *who, "output").inc(usage.output_tokens)


# (inference id, {limit name: (per minute, share in use)}, spend limit reached) per endpoint.
OrgLimitsSource = Callable[[], Iterable[tuple[str, dict[str, tuple[int, float]], bool]]]
ORG_LIMIT_PER_MINUTE = "inference_gateway_org_limit_per_minute"
ORG_LIMIT_USED = "inference_gateway_org_limit_used_ratio"
ORG_SPEND_LIMIT = "inference_gateway_org_spend_limit_reached"


class _OrgLimits(Collector):
    def __init__(self, source: OrgLimitsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        per_minute = GaugeMetricFamily(
            ORG_LIMIT_PER_MINUTE,
            "The organisation's limit for the endpoint's key and model class, as Anthropic's "
            "answers tell it (limit: requests, input-tokens, output-tokens).",
            labels=["inference_id", "limit"])
        used = GaugeMetricFamily(
            ORG_LIMIT_USED,
            "Share of that limit in use: reserved by requests in flight, or spent and not "
            "refilled yet.", labels=["inference_id", "limit"])
        spend_limit = GaugeMetricFamily(
            ORG_SPEND_LIMIT,
            "1 while Anthropic refuses the endpoint's requests for the organisation's spend "
            "limit (from such a 429 to the next answer), else 0; absent until Anthropic "
            "answered or refused a request of its key and model class.",
            labels=["inference_id"])
        for inference_id, limits, spend_limited in self._source():
            for name, (limit, share) in limits.items():
                per_minute.add_metric([inference_id, name], limit)
                used.add_metric([inference_id, name], share)
            if limits or spend_limited:
                spend_limit.add_metric([inference_id], 1 if spend_limited else 0)
        yield per_minute
        yield used
        yield spend_limit
