"""The operator's client for the gateway's admin listener (localhost, bearer token)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import aiohttp


class GatewayUnavailable(Exception):
    """The gateway did not answer, or answered with a server error."""


class GatewayRejected(Exception):
    """The gateway refused a body (4xx); the message is its Elasticsearch reason."""


class GatewayClient:
    def __init__(self, admin_url: str, token: str, timeout: float = 10.0) -> None:
        self._base = admin_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self, method: str, path: str, body: Any = None, *, ok_missing: bool = False
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        try:
            async with self._session.request(
                method, f"{self._base}{path}",
                data=None if body is None else json.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise GatewayUnavailable(f"gateway admin API unreachable: {error!s}") from None
        if status == 404 and ok_missing:
            return {}
        if status >= 500:
            raise GatewayUnavailable(f"gateway answered {status}")
        if status >= 400:
            reason = (payload or {}).get("error", {}).get("reason", f"status {status}")
            raise GatewayRejected(reason)
        return payload

    async def health(self) -> dict[str, Any]:
        return await self._request("GET", "/healthz")

    async def put_endpoint(self, inference_id: str, task_type: str, body: dict[str, Any]) -> None:
        """Create or replace in one step, so a changed key or setting never leaves a gap."""
        await self._request("PUT", f"/_inference/{task_type}/{inference_id}?replace=true", body)

    async def served_ids(self) -> set[str]:
        """The ids the gateway serves now."""
        answer = await self._request("GET", "/_inference/_all")
        return {endpoint["inference_id"] for endpoint in answer.get("endpoints", [])}

    async def delete_endpoint(self, inference_id: str) -> None:
        await self._request("DELETE", f"/_inference/{inference_id}", ok_missing=True)

    async def sync(self, inference_ids: Iterable[str]) -> list[str]:
        """Tell the gateway the full set it should serve; returns the ids it dropped."""
        answer = await self._request(
            "POST", "/_inference/_sync", {"inference_ids": sorted(inference_ids)}
        )
        return answer.get("removed", [])
