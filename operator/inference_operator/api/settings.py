"""Settings shared by every layer that validates an endpoint: the CRD's spec, the
operator's validator and the gateway's admin API. One definition, so the three agree.

Field names and limits follow the Elasticsearch ``anthropic`` service (snake_case kept),
tightened where Elasticsearch defers to Anthropic (temperature/top_p ranges)."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# Elasticsearch's inference-id rule: lowercase letters, digits, "_", "-", "."; starts and
# ends with a letter or digit (which also rules out "_all").
INFERENCE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9_.-]*[a-z0-9])?$"
INFERENCE_ID_RE = re.compile(INFERENCE_ID_PATTERN)
RESERVED_INFERENCE_IDS = frozenset({"_all"})
# Kubernetes object names (the default id) stop at 253; the CRD bounds the id the same way.
INFERENCE_ID_MAX_LENGTH = 253

DEFAULT_REQUESTS_PER_MINUTE = 50
DEFAULT_SECRET_KEY = "api_key"
# An API key travels in the x-api-key header: visible ASCII only. HTTP forbids control
# characters there (a key with a newline made every call a 500), and no key has spaces.
API_KEY_RE = re.compile(r"[\x21-\x7e]+")
# Anthropic's keys are about 110 characters (sk-ant-api03-...); 4 KiB leaves room for any
# token a proxy in front of Anthropic takes, under the 8 KiB header line proxies accept.
# Every key is published into a shared configuration shard (api/gateway_config.py), so an
# unbounded one would let a single Secret fill it.
API_KEY_MAX_LENGTH = 4096
API_KEY_RULE = (f"only visible ASCII characters, at most {API_KEY_MAX_LENGTH} "
                "(it is sent as an HTTP header)")
# Anthropic's model ids are a few dozen characters; 256 leaves room for a proxy's longer
# names while keeping one record of a shared shard small.
MODEL_ID_MAX_LENGTH = 256


def api_key_is_valid(key: str) -> bool:
    return len(key) <= API_KEY_MAX_LENGTH and API_KEY_RE.fullmatch(key) is not None


class TaskType(StrEnum):
    COMPLETION = "completion"  # one input string in, text out
    CHAT_COMPLETION = "chat_completion"  # Elasticsearch's unified (OpenAI-style) chat API


class Service(StrEnum):
    ANTHROPIC = "anthropic"


class _Strict(BaseModel):
    # Unknown fields are refused everywhere, as the CRD's structural schema does.
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Strict):
    requests_per_minute: int = Field(
        default=DEFAULT_REQUESTS_PER_MINUTE,
        ge=1,
        description="Requests per minute the gateway admits for this endpoint; a token bucket "
        "with no burst. Endpoints with the same key, model and rate share one bucket.",
    )


class TaskSettings(_Strict):
    max_tokens: int = Field(
        ge=1, description="Maximum number of tokens Anthropic generates per completion."
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Sampling temperature, 0.0 to 1.0."
    )
    top_k: int | None = Field(
        default=None, ge=0, description="Sample only from the top K options for each token."
    )
    top_p: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Nucleus sampling probability, 0.0 to 1.0."
    )

    def sets_temperature_and_top_p(self) -> bool:
        """Allowed (Anthropic allows it) but usually a mistake, so it draws a warning."""
        return self.temperature is not None and self.top_p is not None
