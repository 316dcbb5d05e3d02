"""Check key and model with Anthropic's free Models API (``GET /v1/models/{id}``),
instead of a paid completion as Elasticsearch does."""

from __future__ import annotations

import asyncio

from inference_operator.anthropic.client import Upstream
from inference_operator.anthropic.errors import AnthropicError, StatusError
from inference_operator.api.models import Reason
from inference_operator.clock import SYSTEM_CLOCK, Clock
from inference_operator.controller.conditions import Outcome
from inference_operator.controller.secrets import ResolvedKey, SecretKey, SecretRef

VERIFIED_FOR_SECONDS = 600.0


class VerifiedKeys:
    """Which (Secret, model) pairs the Models API accepted, and for which version of the
    Secret: a verification holds only for the key it checked, so any change of the Secret
    (a rotation, or a revoked key restored) is checked again. Periodic resyncs of an
    unchanged pair cost the upstream nothing for ``VERIFIED_FOR_SECONDS``."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._until: dict[tuple[SecretRef, str], tuple[str, float]] = {}

    def holds(self, key: ResolvedKey, model_id: str) -> bool:
        version, until = self._until.get((key.ref, model_id), ("", 0.0))
        return version == key.secret_resource_version and until > self._clock.now()

    def remember(self, key: ResolvedKey, model_id: str) -> None:
        self._until[(key.ref, model_id)] = (
            key.secret_resource_version, self._clock.now() + VERIFIED_FOR_SECONDS)

    def forget(self, secret: SecretKey) -> None:
        for pair in [pair for pair in self._until if pair[0].secret == secret]:
            del self._until[pair]


class UpstreamVerifier:
    """One connection pool for the operator's life, for every check: the project's own
    Anthropic client (the gateway's too), which reads Anthropic's errors as the SDK does."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._upstream = Upstream(base_url, connect_timeout=timeout, read_timeout=timeout)
        self._timeout = timeout

    async def start(self) -> None:
        await self._upstream.start()

    async def close(self) -> None:
        await self._upstream.close()

    async def check(self, api_key: str, model_id: str) -> Outcome | None:
        """None when key and model are good; otherwise why not."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._upstream.retrieve_model(api_key, model_id)
        except StatusError as error:
            if error.status in (401, 403):
                return Outcome.needs_human(
                    Reason.UPSTREAM_AUTH_FAILED,
                    f"Anthropic rejected the API key ({error.status}); "
                    "put a valid key in the referenced Secret",
                )
            if error.status == 404:
                return Outcome.needs_human(
                    Reason.MODEL_NOT_FOUND,
                    f"Anthropic has no model {model_id!r}; check service_settings.model_id",
                )
            return Outcome.retrying(
                Reason.UPSTREAM_UNAVAILABLE,
                f"Anthropic's Models API answered {error.status}; will retry",
            )
        except (AnthropicError, TimeoutError) as error:
            cause = "timeout" if isinstance(error, TimeoutError) else error.label
            return Outcome.retrying(
                Reason.UPSTREAM_UNAVAILABLE,
                f"cannot reach Anthropic's Models API ({cause}); will retry",
            )
        return None
