"""Check key and model with Anthropic's free Models API (``GET /v1/models/{id}``),
instead of a paid completion as Elasticsearch does."""

from __future__ import annotations

import time

import anthropic

from inference_operator.api.models import Reason
from inference_operator.controller.conditions import Outcome
from inference_operator.controller.secrets import ResolvedKey, SecretKey, SecretRef

VERIFIED_FOR_SECONDS = 600.0


class VerifiedKeys:
    """Which (Secret, model) pairs the Models API accepted, and for which version of the
    Secret: a verification holds only for the key it checked, so any change of the Secret
    (a rotation, or a revoked key restored) is checked again. Periodic resyncs of an
    unchanged pair cost the upstream nothing for ``VERIFIED_FOR_SECONDS``."""

    def __init__(self) -> None:
        self._until: dict[tuple[SecretRef, str], tuple[str, float]] = {}

    def holds(self, key: ResolvedKey, model_id: str) -> bool:
        version, until = self._until.get((key.ref, model_id), ("", 0.0))
        return version == key.secret_resource_version and until > time.monotonic()

    def remember(self, key: ResolvedKey, model_id: str) -> None:
        self._until[(key.ref, model_id)] = (
            key.secret_resource_version, time.monotonic() + VERIFIED_FOR_SECONDS)

    def forget(self, secret: SecretKey) -> None:
        for pair in [pair for pair in self._until if pair[0].secret == secret]:
            del self._until[pair]


class UpstreamVerifier:
    """One SDK client for the operator's life, for every check."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key="unset",  # replaced per call; the client is shared for its pool
            base_url=base_url,
            http_client=anthropic.DefaultAioHttpClient(),
            max_retries=0,
            timeout=timeout,
        )

    async def close(self) -> None:
        await self._client.close()

    async def check(self, api_key: str, model_id: str) -> Outcome | None:
        """None when key and model are good; otherwise why not."""
        try:
            await self._client.with_options(api_key=api_key).models.retrieve(model_id)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as error:
            return Outcome.needs_human(
                Reason.UPSTREAM_AUTH_FAILED,
                f"Anthropic rejected the API key ({error.status_code}); "
                "put a valid key in the referenced Secret",
            )
        except anthropic.NotFoundError:
            return Outcome.needs_human(
                Reason.MODEL_NOT_FOUND,
                f"Anthropic has no model {model_id!r}; check service_settings.model_id",
            )
        except anthropic.APIStatusError as error:
            return Outcome.retrying(
                Reason.UPSTREAM_UNAVAILABLE,
                f"Anthropic's Models API answered {error.status_code}; will retry",
            )
        except anthropic.APIConnectionError as error:
            return Outcome.retrying(
                Reason.UPSTREAM_UNAVAILABLE,
                f"cannot reach Anthropic's Models API ({type(error).__name__}); will retry",
            )
        return None
