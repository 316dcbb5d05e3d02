"""The InferenceEndpoint resource as pydantic models: the single source of truth.

The CRD, the admission policies, the operator's jsonschema validator and docs/api.md are
all rendered from these classes. Class docstrings and field descriptions become the
descriptions that ``kubectl explain`` prints, so they are written for users.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from inference_operator.api.settings import (
    DEFAULT_SECRET_KEY,
    INFERENCE_ID_MAX_LENGTH,
    INFERENCE_ID_PATTERN,
    MODEL_ID_MAX_LENGTH,
    RateLimit,
    Service,
    TaskSettings,
    TaskType,
)

GROUP = "inference-operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceEndpoint"
PLURAL = "inferenceendpoints"
SINGULAR = "inferenceendpoint"
SHORT_NAMES = ("iep",)
CATEGORIES = ("inference",)
CRD_NAME = f"{PLURAL}.{GROUP}"
FINALIZER = f"{GROUP}/finalizer"

# Kubernetes' own rules for the names the spec points at.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

# Human messages for checks whose default wording would be cryptic. The key is the
# JSON-schema keyword that fails; the CRD renderer and the validator both use them.
MESSAGES = "x-messages"
LITERAL_API_KEY_MESSAGE = (
    "a literal API key is not allowed here; store the key in a Secret in the same "
    "namespace and reference it with api_key.secret_key_ref (name, key)"
)
INFERENCE_ID_MESSAGE = (
    "must consist of lowercase letters, digits, '_', '-' or '.', start and end with a "
    f"letter or digit (so not '_all'), and be at most {INFERENCE_ID_MAX_LENGTH} characters"
)
SAMPLING_WARNING = (
    "temperature and top_p are both set; Anthropic recommends adjusting only one of them"
)


class _Strict(BaseModel):
    # Unknown fields are refused, as the API server does with kubectl's strict validation.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SecretKeyRef(_Strict):
    """The Secret key that holds the Anthropic API key."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of a Secret in the namespace of this InferenceEndpoint.",
    )
    key: str = Field(
        default=DEFAULT_SECRET_KEY, min_length=1, max_length=253,
        pattern=SECRET_DATA_KEY_PATTERN,
        description=f"Key inside the Secret's data whose value is the API key. "
        f"Defaults to {DEFAULT_SECRET_KEY!r}.",
    )


class ApiKey(_Strict):
    """Where the Anthropic API key comes from: always a Secret, never a literal string
    (a literal would end up in etcd, in Git and in every backup)."""

    model_config = ConfigDict(json_schema_extra={MESSAGES: {"type": LITERAL_API_KEY_MESSAGE}})

    secret_key_ref: SecretKeyRef = Field(
        description="Reference to the key of a Secret in the same namespace. The operator "
        "reads it and sends it to the gateway; it never appears in the resource or status.",
    )


class ServiceSettings(_Strict):
    """Settings of the anthropic service (Elasticsearch's service_settings)."""

    api_key: ApiKey = Field(
        description="The Anthropic API key, as a reference to a Secret. Replaces the "
        "literal api_key string of the Elasticsearch request body.",
    )
    model_id: str = Field(
        min_length=1, max_length=MODEL_ID_MAX_LENGTH,
        description="Anthropic model to call, e.g. claude-sonnet-4-5. Checked against "
        "Anthropic's Models API when the endpoint is reconciled.",
    )
    rate_limit: RateLimit = Field(
        default=RateLimit(),
        description="Client-side rate limit the gateway applies to calls to Anthropic.",
    )


class InferenceEndpointSpec(_Strict):
    """Desired state: the Elasticsearch PUT _inference request body (snake_case kept),
    plus task_type and inference_id from its path, with api_key as a Secret reference."""

    task_type: TaskType = Field(
        description="Task type of the endpoint, the {task_type} of "
        "PUT _inference/{task_type}/{inference_id}: completion (one input string, POST "
        "_inference/completion/{inference_id}) or chat_completion (messages and tools, POST "
        "_inference/chat_completion/{inference_id}/_stream); both take the same settings.",
    )
    inference_id: str | None = Field(
        default=None, max_length=INFERENCE_ID_MAX_LENGTH,
        pattern=INFERENCE_ID_PATTERN,
        json_schema_extra={MESSAGES: {"pattern": INFERENCE_ID_MESSAGE}},
        description="Id under which clients call the endpoint (POST "
        "_inference/{task_type}/{inference_id}); defaults to metadata.name. Lowercase "
        "letters, digits, '_', '-' and '.', starting and ending with a letter or digit; "
        "unique across the gateway (the oldest resource keeps a contested id).",
    )
    service: Service = Field(description="Inference service. Only anthropic is supported.")
    service_settings: ServiceSettings = Field(
        description="Settings of the service: API key reference, model and rate limit.",
    )
    task_settings: TaskSettings = Field(
        description="Default settings of every request; clients may override them per "
        "request. max_tokens is required.",
    )


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    # Beside the three: whether Anthropic refuses the key's requests for the
    # organisation's spend limit (once the gateways have said anything of it).
    SPEND_LIMIT_REACHED = "SpendLimitReached"


class Reason(StrEnum):
    """Condition reasons; the controller may add more, in CamelCase."""

    SERVING = "Serving"
    SPEC_INVALID = "SpecInvalid"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_MISSING = "SecretKeyMissing"
    SECRET_KEY_INVALID = "SecretKeyInvalid"  # not something an HTTP header can carry
    # Not published: the namespace has as many endpoints published as the operator allows.
    NAMESPACE_QUOTA_EXCEEDED = "NamespaceQuotaExceeded"
    # Not published: its configuration shard has no room left for the record.
    CONFIGURATION_FULL = "ConfigurationFull"
    INFERENCE_ID_CONFLICT = "InferenceIdConflict"
    GATEWAY_UNAVAILABLE = "GatewayUnavailable"
    GATEWAY_PENDING = "GatewayPending"  # published; not every ready replica serves it yet
    UPSTREAM_AUTH_FAILED = "UpstreamAuthFailed"
    MODEL_NOT_FOUND = "ModelNotFound"
    UPSTREAM_UNAVAILABLE = "UpstreamUnavailable"
    RECONCILE_FAILED = "ReconcileFailed"
    # The SpendLimitReached condition's.
    SPEND_LIMIT_REACHED = "SpendLimitReached"
    WITHIN_SPEND_LIMIT = "WithinSpendLimit"


class Condition(_Strict):
    """One observation of the endpoint's state, in the shape of Kubernetes'
    metav1.Condition, so kstatus, Flux, Argo CD and kubectl wait understand it."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Condition type: Ready (summary), Reconciling (work in flight), "
        "Stalled (needs a human) or SpendLimitReached (Anthropic refuses the key's "
        "requests for the organisation's spend limit).",
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="True, False or Unknown."
    )
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason, e.g. Serving or SecretNotFound.",
    )
    message: str = Field(max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(
        alias="lastTransitionTime",
        description="When status last changed (not when the condition was last written).",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, alias="observedGeneration",
        description="metadata.generation the condition was computed from.",
    )


class OrganisationLimits(_Strict):
    """The organisation limits of the endpoint's API key and model class, as the gateways
    learned them from Anthropic's answers (never the key)."""

    model_class: str = Field(description="The model class the limits are Anthropic's for, "
                             "e.g. sonnet-4.")
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per minute, once an answer told it.")
    input_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Input tokens per minute, once an answer told it.")
    output_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Output tokens per minute, once an answer told it.")
    used_percent: int = Field(
        ge=0, le=100, description="Share of the most used of those limits in use (reserved "
        "by requests in flight, or spent and not refilled yet) on the busiest gateway "
        "replica, in steps of 10, as of the last read (every 30 s by default).")


class InferenceEndpointStatus(_Strict):
    """Observed state, written only by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, alias="observedGeneration",
        description="metadata.generation of the spec the operator last acted on.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Reconciling and Stalled conditions (kstatus conventions).",
    )
    inference_id: str | None = Field(
        default=None, description="Effective inference id: spec.inference_id or metadata.name."
    )
    url: str | None = Field(
        default=None, description="In-cluster URL of the endpoint, "
        "GATEWAY/_inference/{task_type}/{inference_id}: POST to it, or to it plus /_stream "
        "for a stream."
    )
    secret_resource_version: str | None = Field(
        default=None,
        description="resourceVersion of the Secret whose key the gateway is using "
        "(never the key or a hash of it).",
    )
    organisation_limits: OrganisationLimits | None = Field(
        default=None, description="The organisation limits the gateways learned for the "
        "endpoint's key and model class, once a request has been answered.")
