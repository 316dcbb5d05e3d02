"""The endpoint registry: the endpoints this gateway serves, by id, and the admin
operations on them (create, update, delete, read), as Elasticsearch answers them. A
standalone gateway keeps them in its state file; in config mode the shards fill it
(shards.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import SecretStr

from inference_operator.anthropic.client import Upstream
from inference_operator.api.gateway_config import OWNER_KEY, Record
from inference_operator.api.settings import TaskSettings
from inference_operator.gateway import errors, validation
from inference_operator.gateway.endpoints import Endpoint, Owner
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import OrgBudgets
from inference_operator.gateway.ratelimit import Limiter
from inference_operator.gateway.state import StateFile

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, upstream: Upstream, limiter: Limiter, budgets: OrgBudgets,
                 metrics: GatewayMetrics, state: StateFile | None = None) -> None:
        """``upstream``, ``limiter`` and ``budgets`` give each endpoint its client, bucket
        and organisation budget."""
        self._upstream = upstream
        self._limiter = limiter
        self._budgets = budgets
        self._metrics = metrics
        self._state = state
        self._endpoints: dict[str, Endpoint] = {}

    def __len__(self) -> int:
        return len(self._endpoints)

    def load_state(self) -> None:
        """The state file's endpoints, validated as PUTs are (ESError when one fails)."""
        if self._state is None:
            return
        for record in self._state.load():
            endpoint = self.from_record(record)
            self._endpoints[endpoint.inference_id] = endpoint
        self._metrics.endpoints.set(len(self._endpoints))
        log.info("restored %d endpoint(s) from %s", len(self._endpoints), self._state.path)

    # -- admin -------------------------------------------------------------------------

    async def create(self, inference_id: str, path_task_type: str | None,
                     raw: bytes) -> dict[str, Any]:
        _check_path(inference_id, path_task_type)
        body, task_type = validation.parse_put(raw, path_task_type)
        if inference_id in self._endpoints:
            raise errors.already_exists(inference_id)
        settings = body.service_settings
        endpoint = self._endpoint(inference_id, task_type, settings.api_key, settings.model_id,
                                  settings.rate_limit.requests_per_minute, body.task_settings)
        self._endpoints[inference_id] = endpoint
        await self._persist()
        log.info("endpoint [%s] created: model %s, %d rpm", inference_id, endpoint.model_id,
                 endpoint.requests_per_minute)
        return endpoint.public()

    async def update(self, inference_id: str, path_task_type: str | None,
                     raw: bytes) -> dict[str, Any]:
        _check_path(inference_id, path_task_type)
        body, task_type = validation.parse_update(raw, path_task_type)
        current = self._endpoints.get(inference_id)
        if current is None:
            raise errors.not_found(inference_id)
        if task_type not in (None, "any", current.task_type):
            raise errors.bad_request("Task type must match the task type of the existing endpoint")
        api_key = body.service_settings.api_key if body.service_settings else current.api_key
        endpoint = self._endpoint(inference_id, current.task_type, api_key, current.model_id,
                                  current.requests_per_minute,
                                  body.task_settings or current.task_settings, current.owner)
        self._endpoints[inference_id] = endpoint
        await self._persist()
        log.info("endpoint [%s] updated (%s)", inference_id, ", ".join(
            name for name, given in (("api key", body.service_settings),
                                     ("task settings", body.task_settings)) if given))
        return endpoint.public()

    async def delete(self, inference_id: str, path_task_type: str | None,
                     *, dry_run: bool = False) -> dict[str, Any]:
        endpoint = self._lookup(inference_id, path_task_type)
        if dry_run:
            return {"acknowledged": False, "pipelines": [], "indexes": [], "error_message": ""}
        del self._endpoints[endpoint.inference_id]
        self._metrics.forget(endpoint.inference_id)
        await self._persist()
        log.info("endpoint [%s] deleted", inference_id)
        return {"acknowledged": True, "pipelines": [], "indexes": []}

    def select(self, inference_id: str | None, task_type: str | None) -> list[Endpoint]:
        """What a GET names: every endpoint (of a task type), or one (404 if absent)."""
        if inference_id in (None, "_all", "*"):
            if task_type is not None:
                validation.check_task_type(task_type)
            chosen = [e for e in self._endpoints.values()
                      if task_type in (None, "any", e.task_type)]
        else:
            chosen = [self._lookup(inference_id, task_type)]
        return sorted(chosen, key=lambda e: e.inference_id)

    @staticmethod
    def render(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
        """A GET's answer."""
        return {"endpoints": [e.public() for e in endpoints]}

    # -- serving -----------------------------------------------------------------------

    def find(self, inference_id: str) -> Endpoint | None:
        return self._endpoints.get(inference_id)

    def resolve(self, inference_id: str, path_task_type: str | None) -> Endpoint:
        """The endpoint an inference request names, as Elasticsearch words its refusals."""
        endpoint = self._endpoints.get(inference_id)
        if endpoint is None:
            raise errors.not_found(inference_id)
        if path_task_type not in (None, "any", endpoint.task_type):
            validation.check_task_type(path_task_type)
            raise errors.bad_request(
                f"Incompatible task_type, the requested type [{path_task_type}] does not match "
                f"the model type [{endpoint.task_type}]")
        return endpoint

    # -- what the shards change --------------------------------------------------------

    def serve(self, endpoints: Iterable[Endpoint]) -> None:
        for endpoint in endpoints:
            self._endpoints[endpoint.inference_id] = endpoint
        self._metrics.endpoints.set(len(self._endpoints))

    def replace(self, inference_id: str, endpoint: Endpoint | None) -> None:
        """Serve ``endpoint`` under its id instead of what is served; None: serve nothing
        there (its series leave the metrics)."""
        if endpoint is not None:
            self._endpoints[inference_id] = endpoint
            return
        self._endpoints.pop(inference_id, None)
        self._metrics.forget(inference_id)

    def from_record(self, record: Record) -> Endpoint:
        """A stored record (state file, configuration shard) through a PUT's validation;
        ESError when it fails."""
        inference_id = record["inference_id"]
        validation.check_inference_id(inference_id)
        # The owner is the configuration's, not Elasticsearch's: not part of the PUT body.
        owner = Owner.parse(record[OWNER_KEY]) if OWNER_KEY in record else None
        body, task_type = validation.parse_put_data(
            {k: v for k, v in record.items() if k not in ("inference_id", OWNER_KEY)}, None)
        settings = body.service_settings
        return self._endpoint(inference_id, task_type, settings.api_key, settings.model_id,
                              settings.rate_limit.requests_per_minute, body.task_settings, owner)

    def _lookup(self, inference_id: str, task_type: str | None) -> Endpoint:
        if task_type is not None:
            validation.check_task_type(task_type)
        endpoint = self._endpoints.get(inference_id)
        if endpoint is None:
            raise errors.not_found(inference_id)
        if task_type not in (None, "any", endpoint.task_type):
            raise errors.bad_request(
                f"Requested task type [{task_type}] does not match the inference endpoint's "
                f"task type [{endpoint.task_type}]")
        return endpoint

    def _endpoint(self, inference_id: str, task_type: str, api_key: SecretStr, model_id: str,
                  requests_per_minute: int, task_settings: TaskSettings,
                  owner: Owner | None = None) -> Endpoint:
        key = api_key.get_secret_value()
        return Endpoint(
            inference_id=inference_id, task_type=task_type, model_id=model_id,
            requests_per_minute=requests_per_minute, task_settings=task_settings,
            api_key=api_key, client=self._upstream.client(key),
            bucket=self._limiter.bucket(key, model_id, requests_per_minute),
            budget=self._budgets.budget(key, model_id), owner=owner,
        )

    async def _persist(self) -> None:
        self._metrics.endpoints.set(len(self._endpoints))
        if self._state is not None:
            await self._state.save([e.stored() for e in sorted(
                self._endpoints.values(), key=lambda e: e.inference_id)])


def _check_path(inference_id: str, path_task_type: str | None) -> None:
    """What a write's path names, checked before its body is read."""
    validation.check_inference_id(inference_id)
    if path_task_type is not None:
        validation.check_task_type(path_task_type)
