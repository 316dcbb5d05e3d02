"""Request bodies of the Elasticsearch ``_inference`` API for the ``anthropic`` service,
built on the shared settings so the gateway validates exactly what the CRD declares.

Differences from the CRD's spec: ``api_key`` is a literal string (the REST API carries it),
and ``task_type``/``inference_id`` come from the URL. Validate with ``strict=True`` so a
JSON ``1.0`` is not taken for an integer nor ``"1"`` for a number, as Elasticsearch does.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from inference_operator.api.settings import (
    API_KEY_RULE,
    MODEL_ID_MAX_LENGTH,
    RateLimit,
    TaskSettings,
    api_key_is_valid,
)

_FORBID = ConfigDict(extra="forbid")


def _header_safe(key: SecretStr) -> SecretStr:
    if not api_key_is_valid(key.get_secret_value()):
        raise ValueError(f"the api_key must hold {API_KEY_RULE}")  # never the key itself
    return key


# SecretStr keeps the key out of every repr, log line and error message.
ApiKey = Annotated[SecretStr, Field(min_length=1), AfterValidator(_header_safe)]


class AnthropicServiceSettings(BaseModel):
    model_config = _FORBID

    api_key: ApiKey
    model_id: str = Field(min_length=1, max_length=MODEL_ID_MAX_LENGTH)
    rate_limit: RateLimit = Field(default_factory=RateLimit)


class PutInferenceBody(BaseModel):
    """``PUT /_inference/[{task_type}/]{inference_id}``."""

    model_config = _FORBID

    service: str
    service_settings: AnthropicServiceSettings
    task_settings: TaskSettings
    task_type: str | None = None


class UpdateServiceSettings(BaseModel):
    # Only the key can change: Elasticsearch marks model_id and rate_limit not updatable.
    model_config = _FORBID

    api_key: ApiKey


class UpdateInferenceBody(BaseModel):
    """``PUT|POST /_inference/[{task_type}/]{inference_id}/_update``; task settings are
    replaced whole, as Elasticsearch does, so ``max_tokens`` is required again."""

    model_config = _FORBID

    service_settings: UpdateServiceSettings | None = None
    task_settings: TaskSettings | None = None
    task_type: str | None = None


class TaskSettingsOverride(TaskSettings):
    """Per-request task settings: each field given replaces the stored one."""

    max_tokens: int | None = Field(default=None, ge=1)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class InferenceRequestBody(BaseModel):
    """``POST /_inference/[completion/]{inference_id}[/_stream]``."""

    model_config = _FORBID

    input: str | list[str]
    task_settings: TaskSettingsOverride | None = None
    # Accepted and ignored, as in Elasticsearch: the ``timeout`` query parameter wins.
    timeout: str | None = None

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input
