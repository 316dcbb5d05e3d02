"""Check key and model with Anthropic's free Models API (``GET /v1/models/{id}``),
instead of a paid completion as Elasticsearch does."""

from __future__ import annotations

import hashlib
import time

import anthropic

from inference_operator.api.models import Reason
from inference_operator.controller.conditions import Outcome

UPSTREAM_UNAVAILABLE = "UpstreamUnavailable"
_VERIFIED_FOR_SECONDS = 600.0


class UpstreamVerifier:
    """One SDK client for the operator's life; a verified (key, model) pair is not asked
    again for ten minutes, so periodic resyncs cost the upstream nothing."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key="unset",  # replaced per call; the client is shared for its pool
            base_url=base_url,
            http_client=anthropic.DefaultAioHttpClient(),
            max_retries=0,
            timeout=timeout,
        )
        self._verified: dict[tuple[str, str], float] = {}

    async def close(self) -> None:
        await self._client.close()

    @staticmethod
    def _fingerprint(api_key: str) -> str:
        # Held in memory only, to tell keys apart in the cache; never written anywhere.
        return hashlib.sha256(api_key.encode()).hexdigest()

    async def verify(self, api_key: str, model_id: str) -> Outcome | None:
        """None when key and model are good; otherwise why not."""
        cache_key = (self._fingerprint(api_key), model_id)
        if self._verified.get(cache_key, 0.0) > time.monotonic():
            return None
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
            return Outcome.waiting(
                UPSTREAM_UNAVAILABLE,
                f"Anthropic's Models API answered {error.status_code}; will retry",
            )
        except anthropic.APIConnectionError as error:
            return Outcome.waiting(
                UPSTREAM_UNAVAILABLE,
                f"cannot reach Anthropic's Models API ({type(error).__name__}); will retry",
            )
        self._verified[cache_key] = time.monotonic() + _VERIFIED_FOR_SECONDS
        return None
